"""Storage back ends of ``fewshot serve`` behind one interface (:class:`~.base.SQLStorage`)."""

from __future__ import annotations

from pathlib import Path

from .base import (SCHEMA_VERSION, Change, ClassInfo, Collection, Conflict, Example, MatrixSnapshot, NewExample, NotFound,
                   SQLStorage, StorageError)
from .sqlite import SQLiteStorage


def open_storage(db: str | Path, data_dir: str | Path | None = None) -> SQLStorage:
    """``postgresql://...`` (or ``postgres://``) for PostgreSQL, anything else a SQLite file path."""
    text = str(db)
    if text.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStorage

        if data_dir is None:
            raise StorageError("with PostgreSQL give --data-dir: the folder (shared by every instance) for uploaded originals")
        return PostgresStorage(text, data_dir)
    return SQLiteStorage(db, data_dir)


__all__ = ["SCHEMA_VERSION", "Change", "ClassInfo", "MatrixSnapshot", "Collection", "Conflict", "Example", "NewExample", "NotFound", "SQLStorage",
           "SQLiteStorage", "StorageError", "open_storage"]
