"""Verification (``fewshot verify``), its threshold calibration and the Siamese MNIST CNN backbone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from fewshot.cli import main
from fewshot.engine.verify import calibrate_threshold
from fewshot.nn.backbones import backbone_spec_for, build_backbone

from fixtures import glyph, make_omniglot


def test_calibrated_threshold_maximises_balanced_accuracy():
    scores = torch.tensor([0.9, 0.8, 0.7, 0.2, 0.75, 0.1, 0.0, -1.0])
    same = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0])
    thr, acc = calibrate_threshold(scores, same)
    assert 0.1 < thr <= 0.2 and acc == pytest.approx(0.875)  # all same above, 3/4 different below
    thr, acc = calibrate_threshold(torch.tensor([2.0, 1.0, -1.0]), torch.tensor([1, 1, 0]))
    assert -1.0 < thr <= 1.0 and acc == 1.0
    with pytest.raises(ValueError, match="both same-class and different-class"):
        calibrate_threshold(torch.tensor([1.0, 2.0]), torch.tensor([1, 1]))


def test_siamese_mnist_backbone_is_the_texts_network():
    name, kw = backbone_spec_for("siamese_mnist", (1, 28, 28))
    net = build_backbone(name, **kw)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    fcs = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(20, (5, 5)), (50, (5, 5))]
    assert [f.out_features for f in fcs] == [500, 10, 2] and fcs[0].in_features == 50 * 4 * 4
    assert net(torch.zeros(3, 1, 28, 28)).shape == (3, 2)
    name, kw = backbone_spec_for("siamese_mnist", (1, 105, 105))
    assert build_backbone(name, **kw)(torch.zeros(1, 1, 105, 105)).shape == (1, 2)
    with pytest.raises(ValueError, match="too small"):
        build_backbone("siamese_mnist", image_size=8)


def test_verify_calibrates_saves_and_answers(tmp_path):
    root = tmp_path / "data"
    make_omniglot(root / "omniglot", alphabets={"Alpha": 5}, drawers=4, zipped=True)
    run = tmp_path / "run"
    res = CliRunner().invoke(main, ["train", "--threads", "1", "--method", "siamese", "--backbone", "siamese_mnist", "-p", "objective=contrastive",
                                    "--dataset", "omniglot", "--split", "background", "--data-dir", str(root),
                                    "--image-size", "28", "--way", "3", "--shot", "1", "--query", "1", "--episodes", "2",
                                    "--val-fraction", "0", "--device", "cpu", "--quiet", "--no-plots", "--out", str(run)])
    assert res.exit_code == 0, res.output
    rng = np.random.default_rng(0)
    tpl = {n: rng.random((105, 105)) < 0.1 for n in ("ann", "bob", "cy")}
    for name, t in tpl.items():
        (tmp_path / "known" / name).mkdir(parents=True)
        for i in range(3):
            glyph(rng, t).save(tmp_path / "known" / name / f"{i}.png")
    glyph(rng, tpl["ann"]).save(tmp_path / "a.png")
    glyph(rng, tpl["bob"]).save(tmp_path / "b.png")
    bad = CliRunner().invoke(main, ["verify", str(run), str(tmp_path / "a.png"), str(tmp_path / "b.png")])
    assert bad.exit_code != 0 and "--calibrate-on" in bad.output
    res = CliRunner().invoke(main, ["verify", str(run), str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--calibrate-on",
                                    str(tmp_path / "known"), "--pairs", "40", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["answer"] in ("same", "different") and (out["score"] >= out["threshold"]) == (out["answer"] == "same")
    saved = json.loads((run / "verify.json").read_text())
    assert saved["threshold"] == out["threshold"] and 0.5 <= saved["balanced_accuracy"] <= 1
    again = CliRunner().invoke(main, ["verify", str(run), str(tmp_path / "a.png"), str(tmp_path / "a.png"), "--json"])
    assert again.exit_code == 0 and json.loads(again.output)["threshold"] == out["threshold"]
    forced = CliRunner().invoke(main, ["verify", str(run), str(tmp_path / "a.png"), str(tmp_path / "b.png"),
                                       "--threshold", "1e9", "--json"])
    assert json.loads(forced.output)["answer"] == "different"


def test_conv4_dropout_is_optional_and_only_active_in_training():
    from fewshot.nn.backbones import Conv4

    plain = Conv4(1)
    assert not any(isinstance(m, torch.nn.Dropout) for m in plain.modules())
    net = Conv4(1, dropout=0.5).eval()
    x = torch.rand(2, 1, 28, 28)
    assert sum(isinstance(m, torch.nn.Dropout) for m in net.modules()) == 4
    torch.testing.assert_close(net(x), net(x))
    with pytest.raises(ValueError, match="dropout"):
        Conv4(1, dropout=1.0)
