"""Evaluating a trained run with other evaluation settings: ``load_checkpoint(overrides=...)`` and ``fewshot eval RUN -p``."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from fewshot.cli import main
from fewshot.engine.build import build_run
from fewshot.engine.checkpoint import checkpoint_weights, load_checkpoint
from fewshot.engine.trainer import TrainConfig

from conftest import make_blobs_dataset

SPEC = ("mlp", {"in_features": 64, "sizes": [32, 16]})


def _train(out, method: str, **params):
    train, val = make_blobs_dataset(num_classes=12, per_class=10).split_classes(0.34, seed=0)
    cfg = TrainConfig(steps=2, way=4, shot=1, query=2, val_every=2, val_tasks=2, checkpoint_every=2, log_every=1,
                      device="cpu", progress=False)
    build_run(method, train, cfg, out, backbone=SPEC, params=params, val_data=val).fit()
    return out


@pytest.fixture(scope="module")
def maml_run(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("maml"), "maml", test_inner_steps="3", test_inner_lr="0.4")


@pytest.fixture(scope="module")
def proto_run(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("proto"), "protonet")


def test_overrides_replace_evaluation_options_and_keep_the_trained_weights(maml_run):
    method, info = load_checkpoint(maml_run, "last", overrides={"test_inner_steps": "10", "test-inner-lr": 0.1})
    assert (method.test_inner_steps, method.test_inner_lr) == (10, 0.1)
    assert info["overrides"] == {"test_inner_steps": 10, "test_inner_lr": 0.1}
    assert info["config"]["test_inner_steps"] == 10 and info["config"]["inner_steps"] == 1
    saved = checkpoint_weights(maml_run, "last")
    assert all(torch.equal(v, saved[k]) for k, v in method.state_dict().items())
    plain, plain_info = load_checkpoint(maml_run, "last")
    assert plain.test_inner_steps == 3 and "overrides" not in plain_info


def test_overrides_change_the_predictions(maml_run):
    x, y = torch.rand(12, 1, 8, 8), torch.arange(4).repeat(2)
    scores = []
    for steps in ("0", "10"):
        method, _ = load_checkpoint(maml_run, "last", overrides={"test_inner_steps": steps})
        scores.append(method.fit(x[:8], y).scores(x[8:]).detach())
    assert not torch.allclose(*scores)


def test_overrides_that_change_the_parameters_are_refused(tmp_path, proto_run):
    matching = _train(tmp_path / "matching", "matching")
    with pytest.raises(ValueError, match=r"option fce=True changes the trained parameters of matching"):
        load_checkpoint(matching, "last", overrides={"fce": "true"})
    with pytest.raises(ValueError, match="option scale of protonet is a trained weight"):
        load_checkpoint(proto_run, "last", overrides={"scale": "3"})
    with pytest.raises(ValueError, match="unknown option 'nope' for method 'protonet'"):
        load_checkpoint(proto_run, "last", overrides={"nope": "1"})
    with pytest.raises(ValueError, match="cannot evaluate maml with test_inner_steps=-1: inner steps must be >= 0"):
        load_checkpoint(_train(tmp_path / "maml", "maml"), "last", overrides={"test_inner_steps": "-1"})


def test_a_distance_override_keeps_the_weights(proto_run):
    method, info = load_checkpoint(proto_run, "best", overrides={"distance": "cosine"})
    assert method.distance == "cosine" and info["overrides"] == {"distance": "cosine"}


def invoke(args, code=0):
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == code, res.output
    return res


def test_cli_eval_with_overrides_records_them(tmp_path):
    run = tmp_path / "maml"
    invoke(["train", "--threads", "1", "--method", "maml", "-p", "test_inner_steps=3", "--dataset", "digits", "--way", "3", "--shot", "1",
            "--query", "2", "--episodes", "2", "--val-fraction", "0.3", "--val-every", "2", "--val-tasks", "2",
            "--device", "cpu", "--quiet", "--no-plots", "--out", str(run)])
    common = ["eval", "--threads", "1", str(run), "--dataset", "digits", "--way", "3", "--tasks", "3", "--device", "cpu"]
    out = json.loads(invoke(common + ["-p", "test_inner_steps=10", "-p", "test_inner_lr=0.1", "--json"]).output)
    assert out["overrides"] == {"test_inner_steps": 10, "test_inner_lr": 0.1} and out["tasks"] == 3
    assert json.loads(invoke(common + ["--json"]).output)["overrides"] == {}
    assert "(with test_inner_steps=10)" in invoke(common + ["-p", "test_inner_steps=10"]).output
    bad = invoke(common + ["-p", "inner_steps=x"], code=1).output
    assert "inner_steps='x' is not an int" in bad and "Traceback" not in bad
    bad = invoke(common + ["-p", "typo=1"], code=1).output
    assert "unknown option 'typo' for method 'maml'" in bad


def test_cli_eval_refuses_an_override_that_changes_the_weights(tmp_path):
    run = tmp_path / "matching"
    invoke(["train", "--threads", "1", "--method", "matching", "--dataset", "digits", "--way", "3", "--shot", "1", "--query", "2",
            "--episodes", "2", "--val-fraction", "0.3", "--val-every", "2", "--val-tasks", "2", "--device", "cpu",
            "--quiet", "--no-plots", "--out", str(run)])
    res = invoke(["eval", "--threads", "1", str(run), "--dataset", "digits", "--tasks", "2", "-p", "fce=true"], code=1)
    assert "Error: option fce=True changes the trained parameters of matching" in res.output
    assert "Traceback" not in res.output


def test_eval_params_are_options_of_their_method():
    from fewshot.methods import METHODS
    from fewshot.methods.params import signature_params

    for name, cls in METHODS.items():
        assert cls.eval_params <= set(signature_params(cls)), name


def test_eval_overrides_are_the_current_defaults_that_differ_from_the_checkpoint(maml_run):
    from fewshot.engine.checkpoint import eval_overrides, read_checkpoint_info

    info = read_checkpoint_info(maml_run, "last")  # saved with test_inner_steps=3, test_inner_lr=0.4
    assert eval_overrides(info) == {"test_inner_steps": 10, "test_inner_lr": 0.1}  # MAML's defaults
    assert eval_overrides(info, {"test_inner_steps": "3"}) == {"test_inner_lr": 0.1}
    older = dict(info, config={k: v for k, v in info["config"].items() if k != "test_inner_lr"})
    assert eval_overrides(older) == {"test_inner_steps": 10}  # a missing option rebuilds with its default
    assert eval_overrides(info, {"inner_lr": "0.4"}) == eval_overrides(info)  # as trained: no override
