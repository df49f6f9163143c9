"""The storage interface of ``fewshot serve``: collections, classes, examples and their embeddings.

One SQL implementation (:class:`SQLStorage`) serves both back ends: SQLite (embedded default,
:mod:`.sqlite`) and PostgreSQL (several service instances, :mod:`.postgres`). They differ only in
how a connection is opened and in a few column types. Every write is one transaction, so an
acknowledged enrolment is on disk and an interrupted one leaves nothing behind. Each collection has
a ``version`` bumped by every write to it, which lets a process notice writes made by another one
and reload its in-memory matrix. Writes made through this storage object are also announced, once
committed, to its ``listeners`` as a :class:`Change` carrying the version they produced, so that
the process that made them can update its matrix in place instead of reloading it.

Uploaded originals live outside the database, content-addressed (``blobs/ab/<sha256>``) under the
data directory: their path is built from the hash of their bytes, never from user input.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

KINDS = ("image", "text")
COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_CLASS_NAME = 200


class StorageError(Exception):
    """A request the storage refuses; ``status`` is the HTTP status that fits."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class NotFound(StorageError):
    def __init__(self, message: str):
        super().__init__(message, 404)


class Conflict(StorageError):
    def __init__(self, message: str):
        super().__init__(message, 409)


@dataclass
class Collection:
    id: int
    name: str
    kind: str
    embedder: str
    dim: int
    threshold: float | None  # an override; None means calibrated from the examples
    version: int
    created: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ClassInfo:
    id: int
    collection_id: int
    name: str
    examples: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Example:
    id: int
    class_id: int
    text: str | None
    blob: str | None  # sha256 of the original upload (images)
    filename: str | None  # as uploaded; metadata only, never used as a path
    created: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class NewExample:
    """One example to enrol: its embedding ``[D]`` and either its text or its original bytes."""

    embedding: np.ndarray
    text: str | None = None
    data: bytes | None = None
    filename: str | None = None


@dataclass
class Change:
    """One committed write to collection ``collection_id``, which moved its version to ``version``.

    ``kind`` and its fields: ``add`` (``class_id``, ``class_name``, ``example_ids``, ``embeddings
    [k, D]``), ``delete`` (``example_ids``), ``move`` (``example_ids`` [1], ``class_id``,
    ``class_name``), ``class`` (a new empty class ``class_id``, ``class_name``), ``rename``
    (``class_id``, ``class_name``), ``delete_class`` (``class_id``), ``settings`` (no change to
    the examples), ``drop`` (the collection was deleted; ``version`` is -1).
    """

    kind: str
    collection_id: int
    version: int
    class_id: int | None = None
    class_name: str | None = None
    example_ids: list[int] = field(default_factory=list)
    embeddings: np.ndarray | None = None


@dataclass
class MatrixSnapshot:
    """A collection's examples read in one snapshot: ``embeddings [N, D]`` in example-id order,
    ``labels [N]`` indexing ``class_ids``/``class_names`` (classes in id order, empty ones too)."""

    version: int
    embeddings: np.ndarray
    labels: np.ndarray
    example_ids: np.ndarray
    class_ids: list[int]
    class_names: list[str]


def validate_collection_name(name: str) -> str:
    if not isinstance(name, str) or not COLLECTION_NAME.match(name):
        raise StorageError(f"collection name {name!r} is invalid: use 1-64 letters, digits, '_', '.', '-' (starting with a letter or digit)")
    return name


def validate_class_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise StorageError("class name is empty: give a non-empty name")
    name = name.strip()
    if len(name) > MAX_CLASS_NAME:
        raise StorageError(f"class name is {len(name)} characters long; the limit is {MAX_CLASS_NAME}")
    return name


class BlobStore:
    """Originals under ``root/ab/<sha256>``, written atomically (temp file, fsync, rename)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise NotFound(f"no original {digest!r}")
        return self.root / digest[:2] / digest

    def put(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        path = self.path(digest)
        if not path.exists():
            path.parent.mkdir(exist_ok=True)
            tmp = path.with_name(f".{digest}.{os.getpid()}.{threading.get_ident()}.tmp")
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        return digest

    def collect_garbage(self, referenced: set[str], min_age_s: float) -> int:
        """Delete originals no example references and temp files of killed writers, if older than
        ``min_age_s`` (younger ones may belong to an enrolment still in flight). Returns the count."""
        removed, now = 0, time.time()
        for path in self.root.glob("*/*"):
            if path.name in referenced or not path.is_file():
                continue
            try:
                if now - path.stat().st_mtime > min_age_s:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                pass
        return removed

    def get(self, digest: str) -> bytes:
        path = self.path(digest)
        if not path.is_file():
            raise NotFound(f"no original {digest!r}")
        return path.read_bytes()


def to_blob(vec: np.ndarray) -> bytes:
    return np.ascontiguousarray(vec, dtype="<f4").tobytes()


def from_blobs(rows: list[bytes], dim: int) -> np.ndarray:
    if not rows:
        return np.empty((0, dim), dtype=np.float32)
    return np.frombuffer(b"".join(bytes(r) for r in rows), dtype="<f4").reshape(len(rows), dim).astype(np.float32)


# Schema migrations, applied in order on start; ``{blob}``/``{id}``/``{real}`` are filled per dialect.
MIGRATIONS: list[str] = [
    # 1: collections, classes, examples with float32 embeddings
    """
    CREATE TABLE collections (
        id {id}, name TEXT NOT NULL UNIQUE, kind TEXT NOT NULL, embedder TEXT NOT NULL,
        dim INTEGER NOT NULL, threshold {real}, version INTEGER NOT NULL DEFAULT 0, created {real} NOT NULL);
    CREATE TABLE classes (
        id {id}, collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
        name TEXT NOT NULL, UNIQUE (collection_id, name));
    CREATE TABLE examples (
        id {id}, collection_id INTEGER NOT NULL REFERENCES collections(id) ON DELETE CASCADE,
        class_id INTEGER NOT NULL REFERENCES classes(id) ON DELETE CASCADE,
        text TEXT, blob TEXT, embedding {blob} NOT NULL, created {real} NOT NULL);
    CREATE INDEX examples_collection ON examples(collection_id, id);
    """,
    # 2: the uploaded file name of an example (metadata shown in the gallery)
    """
    ALTER TABLE examples ADD COLUMN filename TEXT;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


class SQLStorage:
    """Collections, classes and examples in a SQL database (see :mod:`.sqlite`, :mod:`.postgres`).

    Subclasses implement ``_connect`` (one autocommit connection per thread) and ``_begin_write``
    (start a transaction that excludes other writers) and set the dialect attributes. SQL is
    written with ``?`` placeholders.
    """

    paramstyle = "?"
    snapshot_begin = "BEGIN"  # a transaction whose reads see one snapshot
    types = {"id": "INTEGER PRIMARY KEY AUTOINCREMENT", "blob": "BLOB", "real": "REAL"}

    def __init__(self, data_dir: str | Path):
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.blobs = BlobStore(self.data_dir / "blobs")
        self._local = threading.local()
        #: Called with each committed :class:`Change`, in the writing thread, after the commit.
        self.listeners: list[Callable[[Change], None]] = []

    # --- plumbing -------------------------------------------------------------------------
    def _connect(self):
        raise NotImplementedError

    def _begin_write(self, cur) -> None:
        raise NotImplementedError

    def _conn(self):
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def _sql(self, sql: str) -> str:
        return sql if self.paramstyle == "?" else sql.replace("?", "%s")

    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        conn = self._conn()
        cur = conn.cursor()
        try:
            cur.execute(self._sql(sql), params)  # autocommit: each read sees every commit before it
            return cur.fetchall()
        finally:
            cur.close()

    class _Write:
        def __init__(self, store: "SQLStorage"):
            self.store = store
            self.changes: list[Change] = []  # announced to the listeners once committed

        def __enter__(self):
            self.conn = self.store._conn()
            self.cur = self.conn.cursor()
            self.store._begin_write(self.cur)
            return self

        def run(self, sql: str, params: tuple = ()) -> list[tuple]:
            self.cur.execute(self.store._sql(sql), params)
            return self.cur.fetchall() if self.cur.description else []

        def bump(self, collection_id: int, kind: str, **fields) -> int:
            """Move the collection's version on; ``kind``/``fields`` describe the write (a :class:`Change`)."""
            version = self.run("UPDATE collections SET version = version + 1 WHERE id = ? RETURNING version", (collection_id,))[0][0]
            self.changes.append(Change(kind, collection_id, version, **fields))
            return version

        def __exit__(self, exc_type, exc, tb):
            try:
                self.cur.execute("COMMIT" if exc_type is None else "ROLLBACK")
            finally:
                self.cur.close()
            if exc_type is None:
                for change in self.changes:
                    for listener in list(self.store.listeners):
                        listener(change)
            return False

    def _write(self) -> "SQLStorage._Write":
        return SQLStorage._Write(self)

    def migrate(self) -> int:
        """Bring the schema to :data:`SCHEMA_VERSION`; returns the version found before."""
        with self._write() as w:
            w.run("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            rows = w.run("SELECT version FROM schema_version")
            found = rows[0][0] if rows else 0
            if found > SCHEMA_VERSION:
                raise StorageError(f"the database has schema version {found}, newer than this fewshot ({SCHEMA_VERSION}); upgrade fewshot", 500)
            for script in MIGRATIONS[found:]:
                for stmt in script.format(**self.types).split(";"):
                    if stmt.strip():
                        w.run(stmt)
            if not rows:
                w.run("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            else:
                w.run("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
        return found

    def collect_garbage(self, min_age_s: float = 3600.0) -> int:
        """Remove originals of deleted examples and leftovers of interrupted enrolments (see :class:`BlobStore`)."""
        referenced = {r[0] for r in self._read("SELECT DISTINCT blob FROM examples WHERE blob IS NOT NULL")}
        return self.blobs.collect_garbage(referenced, min_age_s)

    def schema_version(self) -> int:
        return self._read("SELECT version FROM schema_version")[0][0]

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # --- collections ----------------------------------------------------------------------
    _COLS = "id, name, kind, embedder, dim, threshold, version, created"

    def create_collection(self, name: str, kind: str, embedder: str, dim: int) -> Collection:
        validate_collection_name(name)
        if kind not in KINDS:
            raise StorageError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
        with self._write() as w:
            if w.run("SELECT 1 FROM collections WHERE name = ?", (name,)):
                raise Conflict(f"collection {name!r} exists already: pick another name or delete it first")
            row = w.run(f"INSERT INTO collections (name, kind, embedder, dim, created) VALUES (?, ?, ?, ?, ?) RETURNING {self._COLS}",
                        (name, kind, embedder, int(dim), time.time()))[0]
        return Collection(*row)

    def list_collections(self) -> list[Collection]:
        return [Collection(*r) for r in self._read(f"SELECT {self._COLS} FROM collections ORDER BY name")]

    def get_collection(self, name: str) -> Collection:
        rows = self._read(f"SELECT {self._COLS} FROM collections WHERE name = ?", (name,))
        if not rows:
            raise NotFound(f"no collection {name!r}: create it first (POST /api/collections)")
        return Collection(*rows[0])

    def collection_version(self, collection_id: int) -> int | None:
        rows = self._read("SELECT version FROM collections WHERE id = ?", (collection_id,))
        return rows[0][0] if rows else None

    def update_collection(self, name: str, new_name: str | None = None, threshold: float | None = None,
                          clear_threshold: bool = False) -> Collection:
        with self._write() as w:
            rows = w.run("SELECT id FROM collections WHERE name = ?", (name,))
            if not rows:
                raise NotFound(f"no collection {name!r}")
            cid = rows[0][0]
            if new_name is not None and new_name != name:
                validate_collection_name(new_name)
                if w.run("SELECT 1 FROM collections WHERE name = ?", (new_name,)):
                    raise Conflict(f"collection {new_name!r} exists already")
                w.run("UPDATE collections SET name = ? WHERE id = ?", (new_name, cid))
            if threshold is not None or clear_threshold:
                w.run("UPDATE collections SET threshold = ? WHERE id = ?", (None if clear_threshold else float(threshold), cid))
                w.bump(cid, "settings")
            row = w.run(f"SELECT {self._COLS} FROM collections WHERE id = ?", (cid,))[0]
        return Collection(*row)

    def delete_collection(self, name: str) -> None:
        with self._write() as w:
            rows = w.run("SELECT id FROM collections WHERE name = ?", (name,))
            if not rows:
                raise NotFound(f"no collection {name!r}")
            cid = rows[0][0]
            w.run("DELETE FROM examples WHERE collection_id = ?", (cid,))
            w.run("DELETE FROM classes WHERE collection_id = ?", (cid,))
            w.run("DELETE FROM collections WHERE id = ?", (cid,))
            w.changes.append(Change("drop", cid, -1))

    # --- classes --------------------------------------------------------------------------
    def list_classes(self, collection_id: int) -> list[ClassInfo]:
        rows = self._read("SELECT c.id, c.collection_id, c.name, COUNT(e.id) FROM classes c "
                          "LEFT JOIN examples e ON e.class_id = c.id WHERE c.collection_id = ? "
                          "GROUP BY c.id, c.collection_id, c.name ORDER BY c.name", (collection_id,))
        return [ClassInfo(*r) for r in rows]

    def _class_id(self, w, collection_id: int, name: str, create: bool) -> int:
        rows = w.run("SELECT id FROM classes WHERE collection_id = ? AND name = ?", (collection_id, name))
        if rows:
            return rows[0][0]
        if not create:
            raise NotFound(f"no class {name!r} in this collection")
        return w.run("INSERT INTO classes (collection_id, name) VALUES (?, ?) RETURNING id", (collection_id, name))[0][0]

    def create_class(self, collection_id: int, name: str) -> ClassInfo:
        name = validate_class_name(name)
        with self._write() as w:
            if w.run("SELECT 1 FROM classes WHERE collection_id = ? AND name = ?", (collection_id, name)):
                raise Conflict(f"class {name!r} exists already")
            cls_id = self._class_id(w, collection_id, name, create=True)
            w.bump(collection_id, "class", class_id=cls_id, class_name=name)
        return ClassInfo(cls_id, collection_id, name, 0)

    def rename_class(self, collection_id: int, class_id: int, new_name: str) -> ClassInfo:
        new_name = validate_class_name(new_name)
        with self._write() as w:
            if not w.run("SELECT 1 FROM classes WHERE id = ? AND collection_id = ?", (class_id, collection_id)):
                raise NotFound(f"no class {class_id} in this collection")
            clash = w.run("SELECT id FROM classes WHERE collection_id = ? AND name = ?", (collection_id, new_name))
            if clash and clash[0][0] != class_id:
                raise Conflict(f"class {new_name!r} exists already")
            w.run("UPDATE classes SET name = ? WHERE id = ?", (new_name, class_id))
            w.bump(collection_id, "rename", class_id=class_id, class_name=new_name)
            n = w.run("SELECT COUNT(*) FROM examples WHERE class_id = ?", (class_id,))[0][0]
        return ClassInfo(class_id, collection_id, new_name, n)

    def delete_class(self, collection_id: int, class_id: int) -> None:
        with self._write() as w:
            if not w.run("SELECT 1 FROM classes WHERE id = ? AND collection_id = ?", (class_id, collection_id)):
                raise NotFound(f"no class {class_id} in this collection")
            w.run("DELETE FROM examples WHERE class_id = ?", (class_id,))
            w.run("DELETE FROM classes WHERE id = ?", (class_id,))
            w.bump(collection_id, "delete_class", class_id=class_id)

    # --- examples -------------------------------------------------------------------------
    _EX = "id, class_id, text, blob, filename, created"

    def _insert_examples(self, w, collection_id: int, class_name: str, examples: list[NewExample],
                         blobs: list[str | None], now: float) -> list[Example]:
        cls_id = self._class_id(w, collection_id, class_name, create=True)
        return [Example(*w.run(f"INSERT INTO examples (collection_id, class_id, text, blob, filename, embedding, created) "
                               f"VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING {self._EX}",
                               (collection_id, cls_id, e.text, blob, e.filename, to_blob(e.embedding), now))[0])
                for e, blob in zip(examples, blobs)]

    def add_examples(self, collection_id: int, class_name: str, examples: list[NewExample]) -> list[Example]:
        """Enrol ``examples`` into ``class_name`` (created if absent), all or nothing."""
        class_name = validate_class_name(class_name)
        if not examples:
            raise StorageError("nothing to enrol: give at least one example")
        # Originals first: a crash before the commit leaves an unreferenced blob, never a row without its file.
        blobs = [self.blobs.put(e.data) if e.data is not None else None for e in examples]
        with self._write() as w:
            if not w.run("SELECT 1 FROM collections WHERE id = ?", (collection_id,)):
                raise NotFound(f"collection {collection_id} was deleted")
            out = self._insert_examples(w, collection_id, class_name, examples, blobs, time.time())
            w.bump(collection_id, "add", class_id=out[0].class_id, class_name=class_name, example_ids=[e.id for e in out],
                   embeddings=np.stack([np.asarray(e.embedding, dtype=np.float32) for e in examples]))
        return out

    def import_collection(self, name: str, kind: str, embedder: str, dim: int, threshold: float | None,
                          classes: list[str], examples: list[tuple[str, NewExample]]) -> Collection:
        """Create collection ``name`` with ``classes`` and ``(class name, example)`` pairs in one transaction."""
        validate_collection_name(name)
        if kind not in KINDS:
            raise StorageError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
        classes = [validate_class_name(c) for c in classes]
        now = time.time()
        with self._write() as w:
            if w.run("SELECT 1 FROM collections WHERE name = ?", (name,)):
                raise Conflict(f"collection {name!r} exists already: import under another name (?name=...) or delete it first")
            cid = w.run("INSERT INTO collections (name, kind, embedder, dim, threshold, created) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                        (name, kind, embedder, int(dim), threshold, now))[0][0]
            for c in classes:
                self._class_id(w, cid, c, create=True)
            for class_name, e in examples:
                self._insert_examples(w, cid, validate_class_name(class_name), [e], [None], now)
            row = w.run(f"SELECT {self._COLS} FROM collections WHERE id = ?", (cid,))[0]
        return Collection(*row)

    def list_examples(self, collection_id: int, class_id: int | None = None) -> list[Example]:
        if class_id is None:
            rows = self._read(f"SELECT {self._EX} FROM examples WHERE collection_id = ? ORDER BY id", (collection_id,))
        else:
            rows = self._read(f"SELECT {self._EX} FROM examples WHERE collection_id = ? AND class_id = ? ORDER BY id",
                              (collection_id, class_id))
        return [Example(*r) for r in rows]

    def get_example(self, collection_id: int, example_id: int) -> Example:
        rows = self._read(f"SELECT {self._EX} FROM examples WHERE collection_id = ? AND id = ?", (collection_id, example_id))
        if not rows:
            raise NotFound(f"no example {example_id} in this collection")
        return Example(*rows[0])

    def move_example(self, collection_id: int, example_id: int, class_name: str) -> Example:
        class_name = validate_class_name(class_name)
        with self._write() as w:
            if not w.run("SELECT 1 FROM examples WHERE id = ? AND collection_id = ?", (example_id, collection_id)):
                raise NotFound(f"no example {example_id} in this collection")
            cls_id = self._class_id(w, collection_id, class_name, create=True)
            w.run("UPDATE examples SET class_id = ? WHERE id = ?", (cls_id, example_id))
            w.bump(collection_id, "move", class_id=cls_id, class_name=class_name, example_ids=[example_id])
            row = w.run(f"SELECT {self._EX} FROM examples WHERE id = ?", (example_id,))[0]
        return Example(*row)

    def delete_example(self, collection_id: int, example_id: int) -> None:
        with self._write() as w:
            if not w.run("SELECT 1 FROM examples WHERE id = ? AND collection_id = ?", (example_id, collection_id)):
                raise NotFound(f"no example {example_id} in this collection")
            w.run("DELETE FROM examples WHERE id = ?", (example_id,))
            w.bump(collection_id, "delete", example_ids=[example_id])

    def load_matrix(self, collection: Collection) -> MatrixSnapshot:
        """The collection's embeddings and labels, read in one snapshot."""
        conn = self._conn()
        cur = conn.cursor()
        try:
            cur.execute(self.snapshot_begin)
            cur.execute(self._sql("SELECT version FROM collections WHERE id = ?"), (collection.id,))
            row = cur.fetchone()
            if row is None:
                raise NotFound(f"collection {collection.name!r} was deleted")
            cur.execute(self._sql("SELECT id, name FROM classes WHERE collection_id = ? ORDER BY id"), (collection.id,))
            classes = cur.fetchall()
            cur.execute(self._sql("SELECT class_id, embedding, id FROM examples WHERE collection_id = ? ORDER BY id"), (collection.id,))
            rows = cur.fetchall()
        finally:
            cur.execute("ROLLBACK")
            cur.close()
        index = {cid: i for i, (cid, _) in enumerate(classes)}
        labels = np.array([index[r[0]] for r in rows], dtype=np.int64)
        return MatrixSnapshot(row[0], from_blobs([r[1] for r in rows], collection.dim), labels,
                              np.array([r[2] for r in rows], dtype=np.int64), [c[0] for c in classes], [c[1] for c in classes])

    def count_examples(self, collection_id: int) -> int:
        return self._read("SELECT COUNT(*) FROM examples WHERE collection_id = ?", (collection_id,))[0][0]
