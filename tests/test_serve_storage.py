"""Storage of ``fewshot serve``: the same contract on SQLite and PostgreSQL, migrations, originals,
durability under kill -9, two service processes on one SQLite file."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'fewshot[serve]'")

from fewshot.serve.storage import SCHEMA_VERSION, Conflict, NewExample, NotFound, SQLiteStorage, StorageError  # noqa: E402
from fewshot.serve.storage.base import MIGRATIONS, SQLStorage  # noqa: E402

from serve_support import PostgresServer, ServerProcess, image_bytes  # noqa: E402


@pytest.fixture(scope="module")
def postgres():
    root = Path(tempfile.mkdtemp(prefix="fewshot-pg-"))  # not under pytest's root-only tmp folders
    try:
        server = PostgresServer(root)
    except Exception as exc:  # noqa: BLE001  (any reason it cannot start is a reason to skip)
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"no PostgreSQL server could be started: {exc}")
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


_db_counter = iter(range(10_000))


@pytest.fixture(params=["sqlite", "postgres"])
def storage(request, tmp_path) -> SQLStorage:
    if request.param == "sqlite":
        store = SQLiteStorage(tmp_path / "db.sqlite")
    else:
        pytest.importorskip("psycopg", reason="psycopg is not installed: pip install 'fewshot[serve]'")
        from fewshot.serve.storage.postgres import PostgresStorage

        url = request.getfixturevalue("postgres").create_database(f"t{next(_db_counter)}")
        store = PostgresStorage(url, tmp_path / "data")
    yield store
    store.close()


def vec(seed: int, dim: int = 4) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


def test_collections_classes_examples_round_trip(storage):
    col = storage.create_collection("staff", "image", "image:pixels", 4)
    assert storage.schema_version() == SCHEMA_VERSION
    with pytest.raises(Conflict):
        storage.create_collection("staff", "text", "text:hashing", 4)
    with pytest.raises(StorageError, match="invalid"):
        storage.create_collection("../etc", "image", "image:pixels", 4)
    added = storage.add_examples(col.id, "alice", [NewExample(vec(0), data=b"one", filename="a.jpg"),
                                                   NewExample(vec(1), data=b"two")])
    storage.add_examples(col.id, "bob", [NewExample(vec(2), data=b"one")])
    assert [e.filename for e in added] == ["a.jpg", None]
    classes = {c.name: c for c in storage.list_classes(col.id)}
    assert {n: c.examples for n, c in classes.items()} == {"alice": 2, "bob": 1}
    m = storage.load_matrix(storage.get_collection("staff"))
    assert m.embeddings.shape == (3, 4) and np.allclose(m.embeddings[0], vec(0)) and m.class_names == ["alice", "bob"]
    assert m.labels.tolist() == [0, 0, 1] and m.version == storage.collection_version(col.id) > 0
    # originals are content-addressed: the same bytes are stored once, under their hash
    assert storage.blobs.get(added[0].blob) == b"one"
    assert storage.blobs.path(added[0].blob).name == hashlib.sha256(b"one").hexdigest()
    with pytest.raises(NotFound):
        storage.blobs.path("../../etc/passwd")
    # rename, move, delete; each write moves the version
    storage.rename_class(col.id, classes["bob"].id, "robert")
    with pytest.raises(Conflict):
        storage.rename_class(col.id, classes["alice"].id, "robert")
    storage.move_example(col.id, added[1].id, "robert")
    storage.delete_example(col.id, added[0].id)
    assert {c.name: c.examples for c in storage.list_classes(col.id)} == {"alice": 0, "robert": 2}
    storage.delete_class(col.id, classes["alice"].id)
    assert storage.collection_version(col.id) > m.version
    renamed = storage.update_collection("staff", new_name="team", threshold=0.7)
    assert renamed.threshold == 0.7 and storage.update_collection("team", clear_threshold=True).threshold is None
    storage.delete_collection("team")
    assert storage.list_collections() == [] and storage.count_examples(col.id) == 0
    assert storage.collect_garbage(min_age_s=3600) == 0  # too young: may belong to an enrolment in flight
    assert storage.collect_garbage(min_age_s=-1) == 2 and not any(storage.blobs.root.glob("*/*"))
    with pytest.raises(NotFound):
        storage.get_collection("team")


def test_enrolment_is_all_or_nothing(storage):
    col = storage.create_collection("c", "text", "text:hashing", 4)
    with pytest.raises(StorageError, match="empty"):
        storage.add_examples(col.id, "  ", [NewExample(vec(0), text="x")])
    with pytest.raises(Exception):  # the second row cannot be bound: the transaction rolls back
        storage.add_examples(col.id, "a", [NewExample(vec(0), text="x"), NewExample(vec(1), text=object())])
    assert storage.count_examples(col.id) == 0 and storage.list_classes(col.id) == []


def test_concurrent_writers_on_one_database(storage, tmp_path):
    """Two storage objects (as two service instances would hold) write at once; nothing is lost."""
    col = storage.create_collection("c", "text", "text:hashing", 4)
    other = SQLiteStorage(storage.path) if isinstance(storage, SQLiteStorage) else type(storage)(storage.url, tmp_path / "data")

    def burst(store, offset):
        for i in range(25):
            store.add_examples(col.id, f"class{i % 3}", [NewExample(vec(offset + i), text=f"t{offset + i}")])

    threads = [threading.Thread(target=burst, args=(s, o)) for s, o in ((storage, 0), (other, 100))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert storage.count_examples(col.id) == 50 == other.count_examples(col.id)
    assert sorted(e.text for e in storage.list_examples(col.id)) == sorted([f"t{i}" for i in range(25)] + [f"t{100 + i}" for i in range(25)])
    other.close()


def test_sqlite_migrates_an_old_schema_on_start(tmp_path):
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(MIGRATIONS[0].format(**SQLiteStorage.types))
    conn.executescript("CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (1);"
                       "INSERT INTO collections (name, kind, embedder, dim, created) VALUES ('old', 'text', 'text:hashing', 4, 0);")
    conn.commit()
    conn.close()
    store = SQLiteStorage(path)
    assert store.schema_version() == SCHEMA_VERSION == 2
    col = store.get_collection("old")
    assert store.add_examples(col.id, "a", [NewExample(vec(0), text="x", filename="f.txt")])[0].filename == "f.txt"
    assert store._read("PRAGMA journal_mode")[0][0] == "wal"
    store.close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE schema_version SET version = 99")
    conn.commit()
    conn.close()
    with pytest.raises(StorageError, match="newer"):
        SQLiteStorage(path)


def _enrol_burst(url: str, start: int, acked: list, stop: threading.Event) -> None:
    import httpx

    with httpx.Client(base_url=url, timeout=10) as client:
        i = start
        while not stop.is_set():
            try:
                r = client.post("/api/collections/burst/examples/upload", data={"class": f"c{i % 4}"},
                                files=[("files", (f"{i}.png", image_bytes(i), "image/png"))])
            except httpx.HTTPError:
                return  # the server was killed mid-request: this one was never acknowledged
            if r.status_code == 201:
                acked.append((i, r.json()["added"][0]["id"]))
            i += 2


def test_kill_9_during_enrolment_burst_keeps_every_acknowledged_enrolment(tmp_path):
    db = tmp_path / "db.sqlite"
    server = ServerProcess(db).wait_ready()
    acked: list = []
    try:
        import httpx

        assert httpx.post(server.url + "/api/collections", json={"name": "burst", "kind": "image"}).status_code == 201
        stop = threading.Event()
        clients = [threading.Thread(target=_enrol_burst, args=(server.url, s, acked, stop)) for s in (0, 1)]
        for t in clients:
            t.start()
        deadline = threading.Event()
        while len(acked) < 30 and not deadline.wait(0.05):
            pass
        server.kill()  # SIGKILL while both clients are mid-burst
        stop.set()
        for t in clients:
            t.join(10)
    finally:
        server.kill()
    assert len(acked) >= 30
    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    store = SQLiteStorage(db)
    col = store.get_collection("burst")
    stored = {e.id: e for e in store.list_examples(col.id)}
    for i, example_id in acked:  # every acknowledged enrolment is there, with its original
        assert example_id in stored, f"acknowledged enrolment {i} (example {example_id}) was lost"
        assert store.blobs.get(stored[example_id].blob) == image_bytes(i)
        assert stored[example_id].filename == f"{i}.png"
    m = store.load_matrix(col)
    emb, labels = m.embeddings, m.labels
    assert emb.shape == (len(stored), 1024) and np.isfinite(emb).all() and len(labels) == len(stored)
    for e in stored.values():  # nothing half-written: no row without its original
        assert hashlib.sha256(store.blobs.get(e.blob)).hexdigest() == e.blob
    store.close()
    restarted = ServerProcess(db).wait_ready()  # migrates, collects garbage, serves the same data
    try:
        import httpx

        assert httpx.get(restarted.url + "/api/collections/burst").json()["examples"] == len(stored)
        r = httpx.post(restarted.url + "/api/collections/burst/recognize/upload", files=[("files", ("q.png", image_bytes(acked[0][0])))])
        assert r.status_code == 200 and r.json()["results"][0]["score"] > 0.999
    finally:
        restarted.stop()


def test_two_service_processes_share_one_sqlite_file(tmp_path):
    import httpx

    db = tmp_path / "db.sqlite"
    a, b = ServerProcess(db), ServerProcess(db)
    try:
        a.wait_ready(), b.wait_ready()
        assert httpx.post(a.url + "/api/collections", json={"name": "t", "kind": "text"}).status_code == 201
        errors: list = []

        def burst(server, tag):
            with httpx.Client(base_url=server.url, timeout=30) as c:
                for i in range(10):
                    r = c.post("/api/collections/t/examples", json={"class": f"{tag}{i % 2}", "texts": [f"{tag} words number {i}"]})
                    if r.status_code != 201:
                        errors.append(r.text)

        threads = [threading.Thread(target=burst, args=(s, tag)) for s, tag in ((a, "alpha"), (b, "beta"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        # each process sees the other's writes (its in-memory matrix reloads when the version moves)
        for server in (a, b):
            info = httpx.get(server.url + "/api/collections/t").json()
            assert info["examples"] == 20 and len(info["classes"]) == 4
            r = httpx.post(server.url + "/api/collections/t/recognize", json={"texts": ["beta words number 3"], "k": 1})
            assert r.json()["results"][0]["top"][0]["class"] == "beta1"
    finally:
        a.stop(), b.stop()
    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_two_service_instances_on_one_postgres_database(postgres, tmp_path):
    pytest.importorskip("psycopg", reason="psycopg is not installed: pip install 'fewshot[serve]'")
    from fastapi.testclient import TestClient

    from fewshot.serve.server import build_app

    url = postgres.create_database("service")
    a = TestClient(build_app(url, tmp_path / "shared-data", backbone="pixels", encoder="hashing"))
    b = TestClient(build_app(url, tmp_path / "shared-data", backbone="pixels", encoder="hashing"))
    assert a.post("/api/collections", json={"name": "staff", "kind": "image"}).status_code == 201
    for i, client in enumerate((a, b, a, b)):
        r = client.post("/api/collections/staff/examples/upload", data={"class": f"p{i % 2}"},
                        files=[("files", (f"{i}.png", image_bytes(i, base=i % 2, noise=0.05), "image/png"))])
        assert r.status_code == 201
    for client in (a, b):  # each instance sees every enrolment, whichever instance took it
        r = client.post("/api/collections/staff/recognize/upload", files=[("files", ("q.png", image_bytes(9, base=1, noise=0.05), "image/png"))])
        assert r.json()["results"][0]["class"] == "p1"
        assert client.get("/api/collections/staff").json()["examples"] == 4
        assert "PostgresStorage" in client.get("/api/health").json()["storage"]
