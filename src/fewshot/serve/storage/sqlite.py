"""SQLite storage: one file, WAL mode, full sync on commit, writers serialised by ``BEGIN IMMEDIATE``."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from .base import SQLStorage


class SQLiteStorage(SQLStorage):
    """``path``: the database file (created if absent); originals go to ``data_dir`` (default: beside it)."""

    def __init__(self, path: str | Path, data_dir: str | Path | None = None, busy_timeout_s: float = 30.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.busy_timeout_s = busy_timeout_s
        super().__init__(data_dir if data_dir is not None else self.path.parent / (self.path.stem + "-data"))
        self.migrate()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")  # an acknowledged enrolment survives even a power cut
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def _begin_write(self, cur) -> None:
        cur.execute("BEGIN IMMEDIATE")

    def __repr__(self) -> str:
        return f"SQLiteStorage({str(self.path)!r})"
