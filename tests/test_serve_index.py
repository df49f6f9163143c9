"""The in-memory index of ``fewshot serve``: updated in place by this process's writes, reloaded after
another process's, recalibrated in the background when large."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'fewshot[serve]'")

from fastapi.testclient import TestClient  # noqa: E402

from fewshot.serve import recognizer  # noqa: E402
from fewshot.serve.app import ServeSettings, create_app  # noqa: E402
from fewshot.serve.embedders import EmbedderPool  # noqa: E402
from fewshot.serve.recognizer import CollectionIndex, calibrate  # noqa: E402
from fewshot.serve.storage import NewExample, SQLiteStorage  # noqa: E402


@pytest.fixture
def client(tmp_path):
    storage = SQLiteStorage(tmp_path / "db.sqlite")
    app = create_app(storage, EmbedderPool({"image": "image:pixels", "text": "text:hashing"}), ServeSettings())
    with TestClient(app) as c:
        yield c


def enrol(client, cls, texts):
    r = client.post("/api/collections/notes/examples", json={"class": cls, "texts": texts})
    assert r.status_code == 201, r.text
    return [e["id"] for e in r.json()["added"]]


def same_as_fresh_load(svc, name) -> CollectionIndex:
    col = svc.storage.get_collection(name)
    idx = svc._indexes[col.id]
    fresh = CollectionIndex.from_snapshot(svc.storage.load_matrix(col))
    assert idx.version == fresh.version
    assert idx.class_ids == fresh.class_ids and idx.class_names == fresh.class_names
    assert torch.equal(idx.example_ids, fresh.example_ids) and torch.equal(idx.labels, fresh.labels)
    assert torch.equal(idx.emb, fresh.emb)
    assert idx.calibration == fresh.calibration
    return idx


def test_own_writes_update_the_index_in_place(client, monkeypatch):
    svc = client.app.state.service
    client.post("/api/collections", json={"name": "notes", "kind": "text"})
    enrol(client, "greet", ["hello there", "hi friend"])
    client.post("/api/collections/notes/recognize", json={"texts": ["hello"]}).raise_for_status()  # loaded once
    loads = []
    real = svc.storage.load_matrix
    monkeypatch.setattr(svc.storage, "load_matrix", lambda col: loads.append(col) or real(col))
    bye = enrol(client, "bye", ["goodbye now", "see you later", "bye bye"])
    many = enrol(client, "card", [f"card problem number {i}" for i in range(40)])  # grows the row buffer
    client.delete(f"/api/collections/notes/examples/{bye[1]}").raise_for_status()
    classes = {c["name"]: c["id"] for c in client.get("/api/collections/notes/classes").json()}
    client.patch(f"/api/collections/notes/examples/{many[0]}", json={"class": "lost"}).raise_for_status()
    client.patch(f"/api/collections/notes/classes/{classes['greet']}", json={"name": "hello"}).raise_for_status()
    client.post("/api/collections/notes/classes", json={"name": "empty"}).raise_for_status()
    client.delete(f"/api/collections/notes/classes/{classes['bye']}").raise_for_status()
    enrol(client, "bye", ["farewell"])
    client.patch("/api/collections/notes", json={"threshold": 0.9}).raise_for_status()
    r = client.post("/api/collections/notes/recognize", json={"texts": ["hello there"]}).json()
    assert r["results"][0]["top"][0]["class"] == "hello" and r["threshold_source"] == "collection"
    assert loads == []  # every write above was applied in memory
    idx = same_as_fresh_load(svc, "notes")
    assert len(idx) == 2 + 3 + 40 - 1 - 2 + 1 and "empty" in idx.class_names


def test_a_write_by_another_process_is_seen(client, tmp_path):
    svc = client.app.state.service
    client.post("/api/collections", json={"name": "notes", "kind": "text"})
    enrol(client, "greet", ["hello there", "hi friend"])
    enrol(client, "bye", ["goodbye now", "see you later"])
    client.post("/api/collections/notes/recognize", json={"texts": ["hello"]}).raise_for_status()
    other = SQLiteStorage(tmp_path / "db.sqlite")  # its own connection and no listener: like a second process
    col = other.get_collection("notes")
    emb = svc.embedder(col).embed(["my card was stolen"]).numpy()[0]
    other.add_examples(col.id, "card", [NewExample(emb, text="my card was stolen")])
    r = client.post("/api/collections/notes/recognize", json={"texts": ["my card was stolen"]}).json()
    assert r["results"][0]["top"][0]["class"] == "card"
    enrol(client, "card", ["card lost"])  # then an own write again follows the reloaded index
    other.delete_example(col.id, other.list_examples(col.id)[0].id)  # and another foreign one
    enrol(client, "greet", ["good morning"])  # own write after a foreign one: not applied on top of a stale index
    client.post("/api/collections/notes/recognize", json={"texts": ["hello"]}).raise_for_status()
    same_as_fresh_load(svc, "notes")
    other.close()


def test_large_collections_recalibrate_in_the_background(client, monkeypatch):
    monkeypatch.setattr(recognizer, "SYNC_CALIBRATION_MAX", 3)
    svc = client.app.state.service
    client.post("/api/collections", json={"name": "notes", "kind": "text"})
    enrol(client, "greet", ["hello there", "hi friend", "hey you"])
    enrol(client, "bye", ["goodbye now", "see you later", "bye bye"])
    before = client.get("/api/collections/notes").json()["calibration"]
    assert svc.calibrator.idle(30)
    enrol(client, "card", ["my card was stolen", "lost my card"])
    col = svc.storage.get_collection("notes")
    idx = svc._indexes[col.id]
    assert idx.version == col.version
    if not idx.calibration_current:  # the previous threshold answers until the new one is ready
        assert idx.calibration.threshold == before["threshold"]
    assert svc.calibrator.idle(30) and idx.calibration_current
    assert idx.calibration == calibrate(idx.emb.numpy(), idx.labels.numpy())
    assert client.get("/api/collections/notes").json()["calibration"]["current"] is True

