"""PostgreSQL storage (several service instances on one database), through psycopg 3.

Writers are serialised by a transaction-scoped advisory lock, as SQLite's ``BEGIN IMMEDIATE``
does; readers never wait. Originals still go to ``data_dir``: give every instance the same one
(a shared volume) so the gallery can show them.
"""

from __future__ import annotations

from pathlib import Path

from .base import SQLStorage

_WRITE_LOCK = 0x66657773  # "fews"


class PostgresStorage(SQLStorage):
    paramstyle = "%s"
    snapshot_begin = "BEGIN ISOLATION LEVEL REPEATABLE READ"
    types = {"id": "BIGSERIAL PRIMARY KEY", "blob": "BYTEA", "real": "DOUBLE PRECISION"}

    def __init__(self, url: str, data_dir: str | Path):
        try:
            import psycopg  # noqa: F401
        except ImportError as exc:
            raise ImportError("PostgreSQL storage needs psycopg: pip install 'fewshot[serve]'") from exc
        self.url = url
        super().__init__(data_dir)
        self.migrate()

    def _connect(self):
        import psycopg

        return psycopg.connect(self.url, autocommit=True)

    def _begin_write(self, cur) -> None:
        cur.execute("BEGIN")
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITE_LOCK,))

    def __repr__(self) -> str:
        return "PostgresStorage(<url>)"
