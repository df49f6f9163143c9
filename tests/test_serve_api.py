"""The HTTP API of ``fewshot serve`` in-process: flows, calibration, bad input, API key, CORS, export."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'fewshot[serve]'")

from fastapi.testclient import TestClient  # noqa: E402

from fewshot.serve.app import ServeSettings, create_app  # noqa: E402
from fewshot.serve.embedders import EmbedderPool, PixelEmbedder  # noqa: E402
from fewshot.serve.recognizer import DEFAULT_THRESHOLD, calibrate, class_scores  # noqa: E402
from fewshot.serve.storage import SQLiteStorage  # noqa: E402

from serve_support import image_bytes, png_header_only  # noqa: E402


def make_client(tmp_path, **settings) -> TestClient:
    storage = SQLiteStorage(tmp_path / "db.sqlite")
    pool = EmbedderPool({"image": "image:pixels", "text": "text:hashing"})
    return TestClient(create_app(storage, pool, ServeSettings(**settings)))


@pytest.fixture
def client(tmp_path) -> TestClient:
    return make_client(tmp_path)


def files(*items):
    return [("files", (name, data, ctype)) for name, data, ctype in items]


def png(seed, **kw):
    return (f"p{seed}.png", image_bytes(seed, **kw), "image/png")


def stored_nothing(client, name) -> bool:
    storage = client.app.state.service.storage
    col = storage.get_collection(name)
    blobs = [p for p in storage.blobs.root.rglob("*") if p.is_file()]
    return storage.count_examples(col.id) == 0 and not blobs


def test_text_collection_flow(client):
    assert client.post("/api/collections", json={"name": "intents", "kind": "text"}).status_code == 201
    r = client.post("/api/collections/intents/examples", json={"class": "greet", "texts": ["hello there friend", "hi there"]})
    assert r.status_code == 201 and len(r.json()["added"]) == 2
    client.post("/api/collections/intents/examples", json={"class": "bye", "texts": ["goodbye see you", "bye for now"]})
    client.post("/api/collections/intents/examples", json={"class": "card", "texts": ["my card was stolen", "lost my card"]})
    info = client.get("/api/collections/intents").json()
    assert info["examples"] == 6 and [c["name"] for c in info["classes"]] == ["bye", "card", "greet"]
    assert info["calibration"]["source"] == "calibrated"
    r = client.post("/api/collections/intents/recognize", json={"texts": ["hello there", "card stolen", "zebra quantum"], "k": 2}).json()
    assert [res["top"][0]["class"] for res in r["results"][:2]] == ["greet", "card"]
    assert all(len(res["top"]) == 2 for res in r["results"])
    assert r["results"][0]["decision"] == "class" and r["results"][0]["class"] == "greet"
    assert r["results"][2]["decision"] == "unknown" and r["results"][2]["class"] is None  # shares no word
    # a threshold per request, then per collection, overrides the calibrated one
    r = client.post("/api/collections/intents/recognize", json={"texts": ["hello there"], "threshold": 1.01}).json()
    assert r["threshold_source"] == "request" and r["results"][0]["decision"] == "unknown"
    assert client.patch("/api/collections/intents", json={"threshold": -1}).json()["effective_threshold"] == -1
    r = client.post("/api/collections/intents/recognize", json={"texts": ["zebra quantum"]}).json()
    assert r["threshold_source"] == "collection" and r["results"][0]["decision"] == "class"
    assert client.patch("/api/collections/intents", json={"threshold": None}).json()["threshold"] is None
    # rename a class, move and delete an example, delete a class
    card = next(c for c in info["classes"] if c["name"] == "card")
    assert client.patch(f"/api/collections/intents/classes/{card['id']}", json={"name": "cards"}).json()["name"] == "cards"
    ex = client.get(f"/api/collections/intents/examples?class_id={card['id']}").json()
    assert client.patch(f"/api/collections/intents/examples/{ex[0]['id']}", json={"class": "greet"}).status_code == 200
    assert client.delete(f"/api/collections/intents/examples/{ex[1]['id']}").status_code == 204
    assert client.delete(f"/api/collections/intents/classes/{card['id']}").status_code == 204
    assert client.get("/api/collections/intents").json()["examples"] == 5
    assert client.delete("/api/collections/intents").status_code == 204
    assert client.get("/api/collections/intents").status_code == 404


def test_image_collection_flow_export_import(client):
    client.post("/api/collections", json={"name": "shapes", "kind": "image"})
    for c in range(3):
        r = client.post("/api/collections/shapes/examples/upload", data={"class": f"s{c}"},
                        files=files(png(10 * c, base=c, noise=0.05), png(10 * c + 1, base=c, noise=0.05)))
        assert r.status_code == 201
    ex = client.get("/api/collections/shapes/examples").json()
    original = client.get(f"/api/collections/shapes/examples/{ex[0]['id']}/original")
    assert original.content == image_bytes(0, base=0, noise=0.05) and original.headers["content-type"] == "image/png"
    r = client.post("/api/collections/shapes/recognize/upload?k=3",
                    files=files(png(5, base=1, noise=0.05), png(7, base=99))).json()
    assert r["results"][0]["decision"] == "class" and r["results"][0]["class"] == "s1"
    assert [t["score"] for t in r["results"][0]["top"]] == sorted((t["score"] for t in r["results"][0]["top"]), reverse=True)
    assert r["results"][1]["decision"] == "unknown"  # a pattern of no class
    assert r["results"][0]["file"] == "p5.png"
    exported = client.get("/api/collections/shapes/export")
    assert exported.status_code == 200
    r = client.post("/api/collections/import?name=shapes2", files=[("file", ("shapes.safetensors", exported.content))])
    assert r.status_code == 201 and r.json()["examples"] == 6
    again = client.post("/api/collections/shapes2/recognize/upload", files=files(png(5, base=1, noise=0.05))).json()
    assert strip_ids(again["results"][0]["top"]) == strip_ids(r_top(client, "shapes", png(5, base=1, noise=0.05)))
    assert client.post("/api/collections/import", files=[("file", ("x", exported.content))]).status_code == 409  # name taken
    assert client.post("/api/collections/import?name=x", files=[("file", ("x", b"not safetensors"))]).status_code == 400


def strip_ids(top):
    return [(t["class"], t["score"]) for t in top]


def r_top(client, name, item):
    return client.post(f"/api/collections/{name}/recognize/upload", files=files(item)).json()["results"][0]["top"]


@pytest.mark.parametrize("name,data,ctype,status", [
    ("notes.jpg", b"just some text, not a photo at all", "image/jpeg", 415),
    ("doc.png", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj", "image/png", 415),
    ("pic.svg", b'<svg xmlns="http://www.w3.org/2000/svg"/>', "image/svg+xml", 415),
    ("empty.png", b"", "image/png", 400),
    ("truncated.png", image_bytes(3, size=64)[:200], "image/png", 400),
    ("truncated.jpg", image_bytes(3, size=64, fmt="JPEG")[:300], "image/jpeg", 400),
    ("bomb.png", png_header_only(100_000, 100_000), "image/png", 400),  # 10 gigapixels
    ("big.png", png_header_only(8_000, 6_000), "image/png", 400),  # 48 MP: over the service's 40 MP limit
])
def test_bad_images_are_refused_and_nothing_is_stored(client, name, data, ctype, status):
    client.post("/api/collections", json={"name": "c", "kind": "image"})
    r = client.post("/api/collections/c/examples/upload", data={"class": "a"}, files=files(png(1), (name, data, ctype)))
    assert r.status_code == status, r.text
    assert name in r.json()["detail"]
    assert stored_nothing(client, "c")
    client.post("/api/collections/c/examples/upload", data={"class": "a"}, files=files(png(1)))
    assert client.post("/api/collections/c/recognize/upload", files=files((name, data, ctype))).status_code == status


def test_corrupt_image_body_is_400(client):
    data = bytearray(image_bytes(4, size=64))
    data[60:120] = bytes(60)  # a damaged IDAT chunk (its CRC no longer matches)
    client.post("/api/collections", json={"name": "c", "kind": "image"})
    r = client.post("/api/collections/c/examples/upload", data={"class": "a"}, files=files(("bad.png", bytes(data), "image/png")))
    assert r.status_code == 400 and "bad.png" in r.json()["detail"]
    assert stored_nothing(client, "c")


def test_uploads_over_the_size_limit_are_413(tmp_path):
    client = make_client(tmp_path, max_upload_bytes=2_000, max_request_bytes=500_000)
    client.post("/api/collections", json={"name": "c", "kind": "image"})
    big = image_bytes(1, size=200, fmt="BMP")  # uncompressed: 120 kB
    assert len(big) > 2_000
    r = client.post("/api/collections/c/examples/upload", data={"class": "a"}, files=files(("big.png", big, "image/png")))
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    r = client.post("/api/collections/c/examples/upload", data={"class": "a"}, files=files(("huge.bin", bytes(600_000), "image/png")))
    assert r.status_code == 413  # the whole request body, before any parsing

    def streamed():  # no Content-Length: counted as it arrives
        yield b'--abc\r\nContent-Disposition: form-data; name="files"; filename="x.png"\r\nContent-Type: image/png\r\n\r\n'
        for _ in range(10):
            yield bytes(100_000)

    r = client.post("/api/collections/c/recognize/upload", content=streamed(), headers={"content-type": "multipart/form-data; boundary=abc"})
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    assert stored_nothing(client, "c")


def test_text_bad_input(client):
    client.post("/api/collections", json={"name": "t", "kind": "text"})
    client.post("/api/collections", json={"name": "i", "kind": "image"})
    for texts in ([""], ["   "], ["ok", "\n"], []):
        r = client.post("/api/collections/t/examples", json={"class": "a", "texts": texts})
        assert r.status_code == 400, texts
    assert client.post("/api/collections/t/examples", json={"class": "", "texts": ["hi"]}).status_code == 400
    assert client.post("/api/collections/t/recognize", json={"texts": [""]}).status_code == 400
    assert stored_nothing(client, "t")
    # the wrong kind of input for a collection
    assert client.post("/api/collections/i/examples", json={"class": "a", "texts": ["hi"]}).status_code == 400
    assert client.post("/api/collections/t/examples/upload", data={"class": "a"}, files=files(png(1))).status_code == 400
    assert client.post("/api/collections", json={"name": "bad name!", "kind": "text"}).status_code == 400
    assert client.post("/api/collections", json={"name": "x", "kind": "audio"}).status_code == 400
    assert client.post("/api/collections", json={"name": "x", "kind": "text", "embedder": "text:/etc"}).status_code == 400


def test_query_to_an_empty_collection_is_409(client):
    client.post("/api/collections", json={"name": "t", "kind": "text"})
    r = client.post("/api/collections/t/recognize", json={"texts": ["hello"]})
    assert r.status_code == 409 and "no examples" in r.json()["detail"]
    client.post("/api/collections", json={"name": "i", "kind": "image"})
    client.post("/api/collections/i/classes", json={"name": "empty class"})
    assert client.post("/api/collections/i/recognize/upload", files=files(png(1))).status_code == 409
    assert client.post("/api/collections/nope/recognize", json={"texts": ["x"]}).status_code == 404


def test_api_key_guards_every_write(tmp_path):
    client = make_client(tmp_path, api_key="s3cret")
    assert client.post("/api/collections", json={"name": "t", "kind": "text"}).status_code == 401
    assert client.post("/api/collections", json={"name": "t", "kind": "text"}, headers={"X-API-Key": "wrong"}).status_code == 401
    ok = {"X-API-Key": "s3cret"}
    assert client.post("/api/collections", json={"name": "t", "kind": "text"}, headers=ok).status_code == 201
    assert client.post("/api/collections/t/examples", json={"class": "a", "texts": ["hi"]}).status_code == 401
    assert client.post("/api/collections/t/examples", json={"class": "a", "texts": ["hi", "hey"]},
                       headers={"Authorization": "Bearer s3cret"}).status_code == 201
    for method, path in [("patch", "/api/collections/t"), ("delete", "/api/collections/t"), ("post", "/api/collections/t/classes"),
                         ("delete", "/api/collections/t/examples/1"), ("post", "/api/collections/import")]:
        assert getattr(client, method)(path).status_code == 401, (method, path)
    # reads and recognition need no key
    assert client.get("/api/collections/t").status_code == 200
    assert client.post("/api/collections/t/recognize", json={"texts": ["hi"]}).status_code == 200


def test_cors_is_off_by_default_and_openapi_is_served(client):
    r = client.options("/api/collections", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in r.headers
    assert "access-control-allow-origin" not in client.get("/api/collections", headers={"Origin": "https://evil.example"}).headers
    spec = client.get("/openapi.json").json()
    assert {"/api/collections", "/api/collections/{name}/recognize", "/api/collections/{name}/examples/upload",
            "/api/collections/{name}/export", "/api/collections/import"} <= set(spec["paths"])
    assert "<title>fewshot serve</title>" in client.get("/").text


def test_serve_command_defaults_to_loopback_and_explains_bad_options(tmp_path):
    from click.testing import CliRunner

    from fewshot.cli import main
    from fewshot.cli.serve import serve

    assert {p.name: p.default for p in serve.params}["host"] == "127.0.0.1"
    r = CliRunner().invoke(main, ["serve", "--db", "postgresql://nobody@127.0.0.1:9/x"])
    assert r.exit_code == 1 and "--data-dir" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["serve", "--db", str(tmp_path / "db.sqlite"), "--backbone", "resnet9000"])
    assert r.exit_code == 1 and "resnet9000" in r.output and "Traceback" not in r.output


def test_class_scores_take_the_nearest_example_of_each_class():
    emb = torch.eye(4)
    labels = torch.tensor([0, 0, 1, 2])
    q = torch.tensor([[0.0, 0.6, 0.8, 0.0]])
    s = class_scores(emb, labels, 4, q)
    assert torch.allclose(s[0, :3], torch.tensor([0.6, 0.8, 0.0])) and s[0, 3] == float("-inf")


def test_calibration_separates_genuine_from_impostor_scores():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((6, 32))
    emb = np.repeat(centres, 3, 0) + 0.1 * rng.standard_normal((18, 32))
    emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
    labels = np.repeat(np.arange(6), 3)
    cal = calibrate(emb, labels)
    sims = emb @ emb.T
    same = labels[:, None] == labels[None, :]
    np.fill_diagonal(sims, np.nan)
    assert cal.source == "calibrated" and cal.false_rejects == cal.false_accepts == 0
    assert np.nanmax(np.where(same, np.nan, sims)) < cal.threshold < np.nanmin(np.where(same, sims, np.nan))
    assert calibrate(emb[:3], labels[:3]).source == "default"  # one class: nothing to reject against
    assert calibrate(emb[::3], labels[::3]).threshold == DEFAULT_THRESHOLD  # one example per class


def test_pixel_embedder_is_deterministic_and_unit_norm():
    from PIL import Image

    e = PixelEmbedder()
    im = Image.open(io.BytesIO(image_bytes(1)))
    a, b = e.embed([im]), e.embed([im.copy()])
    assert torch.equal(a, b) and a.shape == (1, 1024) and torch.allclose(a.norm(dim=1), torch.ones(1))


def test_micro_batcher_merges_concurrent_requests_and_keeps_order():
    import threading

    from fewshot.serve.embedders import MicroBatcher

    calls = []

    class Slow:
        name, kind, dim = "text:fake", "text", 1

        def embed(self, items):
            calls.append(len(items))
            threading.Event().wait(0.05)
            return torch.tensor([[float(x)] for x in items])

    mb = MicroBatcher(Slow(), max_batch=64)
    out = {}

    def ask(i):
        out[i] = mb.embed([i, i + 100])

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(out[i].flatten().tolist() == [i, i + 100] for i in range(8))
    assert sum(calls) == 16 and len(calls) < 8  # some requests shared a pass
