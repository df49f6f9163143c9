"""``fewshot train --width N``: the conv4-family backbone's channels per block, recorded in the run's
checkpoint so that ``eval`` / ``predict`` / ``--lake-runs`` rebuild the wide network with no flag.

Conv4 needs images of at least 16 px (four 2x poolings), so the runs train on the generated
Omniglot fixture at 16 px; scikit-learn's 8x8 digits get an MLP by default, and ``--width`` there
is a usage error naming the fix.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from fewshot.cli import main
from fewshot.engine.checkpoint import load_checkpoint
from fewshot.nn.backbones import backbone_spec_for, build_backbone

from fixtures import glyph, make_lake_runs, make_omniglot

ENV = {"FEWSHOT_DATA": "", "XDG_CACHE_HOME": "/tmp/fewshot-test-cache"}
FAST = ["--device", "cpu", "--threads", "1", "--quiet", "--no-plots"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("width")
    make_omniglot(root / "omniglot", alphabets={"Alpha": 6, "Beta": 6, "Gamma": 5}, drawers=3)
    make_lake_runs(root, runs=2)
    return root


def invoke(args: list[str], code: int = 0):
    res = CliRunner().invoke(main, args, env=ENV)
    assert res.exit_code == code, res.output
    assert code == 0 or isinstance(res.exception, SystemExit), res.exception  # a message, no traceback
    return res


def train(data, out, method: str, *extra: str):
    """One step at 16 px with a 20-way head (what Lake's runs need)."""
    invoke(["train", "--method", method, "--data-dir", str(data), "--image-size", "16", "--shot", "1", "--query", "1",
            "--episodes", "1", "--batch-size", "8", "--val-fraction", "0", "--seed", "0", "--out", str(out), *FAST, *extra])
    return out


def conv_widths(module: torch.nn.Module) -> list[int]:
    return [m.out_channels for m in module.modules() if isinstance(m, torch.nn.Conv2d)]


#: method -> options; the head-based ones size their head (or relation module) from the backbone's features
METHODS = {"protonet": [], "matching": ["-p", "fce=true"], "relation": [], "maml": [], "baseline": []}


@pytest.mark.parametrize("name", list(METHODS))
def test_a_wide_run_trains_and_is_rebuilt_from_its_checkpoint(data, tmp_path, name):
    run = train(data, tmp_path / "run", name, "--width", "128", *METHODS[name])
    info = json.loads((run / "last.json").read_text())
    assert info["backbone"]["kwargs"]["hidden"] == 128
    method, _ = load_checkpoint(run, "last")  # the spec alone: no --width at load time
    assert conv_widths(method.backbone) == [128] * 4
    if name in ("maml", "baseline"):  # a linear head on the 128 features of a 16-px image (1x1 maps)
        assert method.feature_dim == 128 and method.head.weight.shape[1] == 128
    if name == "matching":  # FCE's LSTMs on 128-d embeddings
        assert method.feature_dim == 128
    if name == "relation":  # the relation module reads the 128-channel feature maps
        assert method.feature_dim == 128 and method.relation is not None
    res = invoke(["eval", str(run), "--lake-runs", str(data / "all_runs"), "--json", "--device", "cpu", "--threads", "1"])
    assert json.loads(res.output)["trials"] == 40


def test_wide_protonet_evaluates_and_predicts_with_no_extra_flag(data, tmp_path):
    run = train(data, tmp_path / "run", "protonet", "--width", "128", "--way", "3")
    res = invoke(["eval", str(run), "--data-dir", str(data), "--alphabets", "Gamma", "--way", "3", "--shot", "1",
                  "--query", "1", "--tasks", "2", "--json", "--device", "cpu", "--threads", "1"])
    assert json.loads(res.output)["tasks"] == 2
    rng = np.random.default_rng(0)
    templates = {"ann": rng.random((105, 105)) < 0.1, "bob": rng.random((105, 105)) < 0.1}
    for name, tpl in templates.items():
        (tmp_path / "support" / name).mkdir(parents=True)
        glyph(rng, tpl, jitter=0).save(tmp_path / "support" / name / "1.png")
    glyph(rng, templates["bob"], jitter=0).save(tmp_path / "q.png")  # bob's support image itself
    res = invoke(["predict", str(run), "--support", str(tmp_path / "support"), "--query", str(tmp_path / "q.png"),
                  "--json", "--device", "cpu", "--threads", "1"])
    assert json.loads(res.output)["predictions"][0]["prediction"] == "bob"


def test_width_and_dropout_combine_and_default_to_todays_network(data, tmp_path):
    run = train(data, tmp_path / "both", "protonet", "--width", "128", "--dropout", "0.1", "--episodes", "0")
    assert json.loads((run / "last.json").read_text())["backbone"] == {
        "name": "conv4", "kwargs": {"in_channels": 1, "dropout": 0.1, "hidden": 128}}
    method, _ = load_checkpoint(run, "last")
    assert conv_widths(method.backbone) == [128] * 4
    assert sum(isinstance(m, torch.nn.Dropout) and m.p == 0.1 for m in method.modules()) == 4
    plain = train(data, tmp_path / "plain", "protonet", "--episodes", "0")
    assert json.loads((plain / "last.json").read_text())["backbone"] == {"name": "conv4", "kwargs": {"in_channels": 1}}
    assert conv_widths(load_checkpoint(plain, "last")[0].backbone) == [64] * 4


def test_width_overrides_a_methods_own_default_width(data, tmp_path):
    """lstm_meta's default Conv4 has 32 channels; its ``-p hidden`` is the meta-learner LSTM's size."""
    assert conv_widths(load_checkpoint(train(data, tmp_path / "a", "lstm_meta", "--episodes", "0"), "last")[0].backbone) == [32] * 4
    method, _ = load_checkpoint(train(data, tmp_path / "b", "lstm_meta", "--width", "48", "--episodes", "0"), "last")
    assert conv_widths(method.backbone) == [48] * 4 and method.head.weight.shape[1] == 48 and method.hidden == 20


def test_width_on_data_without_a_conv4_default_names_the_fix(data, tmp_path):
    """8x8 digits: the default backbone is an MLP (Conv4 needs >= 16 px)."""
    res = invoke(["train", "--dataset", "digits", "--width", "128", "--episodes", "0", "--out", str(tmp_path / "d"),
                  *FAST], code=2)
    assert "--width applies to the conv4 and relation_conv4 backbones, but this run's backbone is mlp" in res.output
    assert "drop --width or pass --backbone conv4" in res.output
    res = invoke(["train", "--method", "mann", "--data-dir", str(data), "--image-size", "16", "--width", "128",
                  "--episodes", "0", "--out", str(tmp_path / "m"), *FAST], code=2)
    assert "this run's backbone is none; drop --width or pass --backbone conv4" in res.output
    run = train(data, tmp_path / "mann", "mann", "--backbone", "conv4", "--width", "16", "--episodes", "0")
    assert conv_widths(load_checkpoint(run, "last")[0].backbone) == [16] * 4


def test_relation_conv4_by_name_takes_the_datas_channels():
    name, kw = backbone_spec_for("relation_conv4", (3, 16, 16), hidden=8)
    assert kw == {"in_channels": 3, "hidden": 8}
    assert build_backbone(name, **kw)(torch.zeros(2, 3, 16, 16)).shape == (2, 8, 2, 2)


def test_a_wide_run_resumes_with_its_width_and_refuses_another(data, tmp_path):
    run = train(data, tmp_path / "run", "protonet", "--width", "128")
    args = ["train", "--method", "protonet", "--data-dir", str(data), "--image-size", "16", "--shot", "1", "--query", "1",
            "--episodes", "2", "--batch-size", "8", "--val-fraction", "0", "--seed", "0", "--out", str(run), "--resume",
            "--override", *FAST]  # --override: 2 episodes instead of 1
    res = invoke(args, code=1)
    assert "the method and backbone of a run cannot change" in res.output and "128" in res.output
    invoke(args + ["--width", "128"])
    assert json.loads((run / "last.json").read_text())["state"]["step"] == 2
