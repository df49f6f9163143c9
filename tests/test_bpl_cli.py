"""`fewshot bpl ...` commands on a tiny synthetic model."""

from __future__ import annotations

import numpy as np
from click.testing import CliRunner
from PIL import Image

from fewshot.bpl.model import BPLModel
from fewshot.cli.bpl import bpl
from test_bpl import _drawings, _image
from test_strokes import _archives


def test_sample_types_and_tokens(tmp_path):
    BPLModel.fit(_drawings(), primitives=4).save(tmp_path / "m.json")
    r = CliRunner().invoke(bpl, ["sample-types", "--model", str(tmp_path / "m.json"), "--n", "4", "--out", str(tmp_path / "t.png")])
    assert r.exit_code == 0, r.output
    assert Image.open(tmp_path / "t.png").size[0] > 100
    Image.fromarray(((1 - _image([[[40, 20], [40, 60], [70, 60]]])) * 255).astype(np.uint8)).save(tmp_path / "c.png")
    r = CliRunner().invoke(bpl, ["sample-tokens", str(tmp_path / "c.png"), "--model", str(tmp_path / "m.json"), "--n", "3",
                                 "--walks", "5", "--out", str(tmp_path / "k.png")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "k.png").exists()
    Image.fromarray(np.full((105, 105), 255, np.uint8)).save(tmp_path / "blank.png")
    r = CliRunner().invoke(bpl, ["sample-tokens", str(tmp_path / "blank.png"), "--model", str(tmp_path / "m.json"),
                                 "--out", str(tmp_path / "x.png")])
    assert r.exit_code != 0 and "no ink" in r.output and "Traceback" not in r.output


def test_fit_and_plot_strokes_from_archives(tmp_path, isolated_data_sources):
    _archives(tmp_path, extracted=False)
    r = CliRunner().invoke(bpl, ["fit", "--data-dir", str(tmp_path), "--primitives", "2", "--no-ink", "--out", str(tmp_path / "m.json")])
    assert r.exit_code == 0, r.output
    assert BPLModel.load(tmp_path / "m.json").prim_mean.shape == (2, 5, 2)
    r = CliRunner().invoke(bpl, ["plot-strokes", "Alpha/character01", "--data-dir", str(tmp_path), "--out", str(tmp_path / "s.png")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(bpl, ["plot-strokes", "Nope/character01", "--data-dir", str(tmp_path), "--out", str(tmp_path / "s.png")])
    assert r.exit_code != 0 and "no character" in r.output
    r = CliRunner().invoke(bpl, ["fit", "--data-dir", str(tmp_path / "empty"), "--out", str(tmp_path / "m.json")])
    assert r.exit_code != 0 and "strokes_background_small1.zip" in r.output


def _fake_runs(root, shapes):
    """Lake's all_runs layout with one run: class j and item j both draw shapes[j] (the item shifted)."""
    run = root / "run01"
    (run / "training").mkdir(parents=True)
    (run / "test").mkdir()
    lines = []
    for j, s in enumerate(shapes, 1):
        Image.fromarray(((1 - _image(s)) * 255).astype(np.uint8)).save(run / "training" / f"class{j:02d}.png")
        Image.fromarray(((1 - np.roll(_image(s), (2, -3), (0, 1))) * 255).astype(np.uint8)).save(run / "test" / f"item{j:02d}.png")
        lines.append(f"run01/test/item{j:02d}.png run01/training/class{j:02d}.png")
    (run / "class_labels.txt").write_text("\n".join(lines) + "\n")


def test_eval_method_bpl_on_lake_runs(tmp_path):
    from fewshot.cli import main

    _fake_runs(tmp_path / "runs", [[[[30, 50], [75, 50]]], [[[52, 25], [52, 80]]], [[[40, 20], [40, 60], [70, 60]]]])
    args = ["eval", "--threads", "1", "--method", "bpl", "-p", "strokes=generic", "-p", "walks=5", "-p", "steps=3", "-p", "workers=1",
            "--image-size", "105", "--lake-runs", str(tmp_path / "runs"), "--json"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert '"method": "bpl"' in r.output and '"error": 0.0' in r.output
    r = CliRunner().invoke(main, ["eval", "--threads", "1", "--method", "protonet", "--lake-runs", str(tmp_path / "runs")])
    assert r.exit_code != 0 and "fewshot train" in r.output
    r = CliRunner().invoke(main, ["eval", "--threads", "1", "--lake-runs", str(tmp_path / "runs")])
    assert r.exit_code != 0 and "RUN_DIR" in r.output
