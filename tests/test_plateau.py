"""The ``plateau`` learning-rate schedule: PyTorch's ReduceLROnPlateau on the validation accuracy,
stepped by the trainer after every validation, carried through checkpoints; conv4 dropout from the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from fewshot.cli import main
from fewshot.engine import trainer as trainer_module
from fewshot.engine.checkpoint import load_checkpoint
from fewshot.engine.config import Plateau, TrainConfig
from fewshot.engine.evaluate import EvalResult

from fixtures import make_omniglot
from test_train import crash_at_step, make_trainer, params

#: improves, stalls for 3 validations, improves by less than the 1e-4 relative threshold, stalls...
ACCURACIES = [0.50, 0.60, 0.60, 0.59, 0.60, 0.60003, 0.70, 0.65, 0.65, 0.65, 0.65, 0.65, 0.66, 0.66, 0.66]


def torch_lrs(accuracies, lr, factor, patience):
    """The learning rate after each validation under torch.optim.lr_scheduler.ReduceLROnPlateau."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=factor, patience=patience)
    out = []
    for acc in accuracies:
        sched.step(acc)
        out.append(opt.param_groups[0]["lr"])
    return out


@pytest.mark.parametrize("factor, patience", [(0.5, 2), (0.1, 0), (0.3, 1)])
def test_plateau_follows_reduce_lr_on_plateau(factor, patience):
    plateau = Plateau(1e-3, factor, patience)
    assert [plateau.step(a) for a in ACCURACIES] == torch_lrs(ACCURACIES, 1e-3, factor, patience)


def test_plateau_lowers_the_rate_only_after_patience_validations_without_improvement():
    plateau = Plateau(1.0, factor=0.5, patience=2)
    assert [plateau.step(a) for a in [0.5, 0.4, 0.5]] == [1.0, 1.0, 1.0]  # 2 without improvement: still patient
    assert plateau.step(0.5) == 0.5  # the third
    assert [plateau.step(a) for a in [0.6, 0.6, 0.6]] == [0.5, 0.5, 0.5]  # an improvement resets the count
    assert plateau.step(0.6) == 0.25


@pytest.mark.parametrize("factor", [0.0, 1.0, 1.5, -0.5, float("nan")])
def test_plateau_refuses_a_factor_outside_0_1(factor):
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        Plateau(1e-3, factor=factor)


def test_the_trainer_steps_the_plateau_on_every_validation(tmp_path, monkeypatch):
    """A fake validation sequence: the logged rate of each step is PyTorch's after the validations before it."""
    accuracies = iter(ACCURACIES)
    monkeypatch.setattr(trainer_module, "evaluate", lambda *a, **k: EvalResult(next(accuracies), 0.0, 1, 1, 0.0))
    t = make_trainer(tmp_path, steps=len(ACCURACIES), val_every=1, log_every=1, schedule="plateau",
                     plateau_factor=0.5, plateau_patience=1)
    records = t.fit()
    expected = torch_lrs(ACCURACIES, 1e-3, 0.5, 1)
    assert [r["lr"] for r in records] == [1e-3] + expected[:-1]
    assert min(expected) < 1e-3 / 4  # the sequence does lower the rate, more than once
    assert json.loads((tmp_path / "last.json").read_text())["state"]["schedule"]["lr"] == expected[-1]


def test_plateau_needs_validation(tmp_path):
    with pytest.raises(ValueError, match="plateau schedule.*no validation"):
        make_trainer(tmp_path, val_tasks=0, schedule="plateau")


def test_a_plateau_run_resumes_bit_for_bit(tmp_path):
    """Killed after the rate was lowered (and with validations counted towards the next lowering):
    the resumed run takes the same steps at the same rates as the uninterrupted one."""
    kw = dict(steps=24, val_every=2, log_every=2, checkpoint_every=2, schedule="plateau", plateau_factor=0.5,
              plateau_patience=0, lr=3e-3)
    full = make_trainer(tmp_path / "full", **kw)
    full_log = full.fit()
    lrs = [r["lr"] for r in full_log]
    assert len(set(lrs)) >= 3, lrs  # the rate changed at least twice: the schedule's state matters
    crashed = make_trainer(tmp_path / "crash", **kw)
    crash_at_step(crashed, 17)  # last checkpoint: step 16
    state = json.loads((tmp_path / "crash" / "last.json").read_text())["state"]
    assert state["step"] == 16 and state["schedule"]["lr"] < 3e-3
    resumed = make_trainer(tmp_path / "crash", **kw)
    log = resumed.fit(resume=True)
    assert torch.equal(params(resumed.method), params(full.method))
    keys = ("step", "loss", "accuracy", "lr", "val_accuracy")
    assert [[r.get(k) for k in keys] for r in log] == [[r.get(k) for k in keys] for r in full_log]


def test_a_damaged_plateau_state_is_refused_on_resume(tmp_path):
    kw = dict(steps=4, val_every=2, schedule="plateau")
    make_trainer(tmp_path, **kw).fit()
    info = json.loads((tmp_path / "last.json").read_text())
    info["state"]["schedule"] = {"lr": "fast"}
    (tmp_path / "last.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="plateau state.*damaged"):
        make_trainer(tmp_path, **kw).fit(resume=True)


def test_runs_saved_before_the_plateau_settings_existed_still_resume(tmp_path):
    make_trainer(tmp_path, steps=4).fit()
    info = json.loads((tmp_path / "last.json").read_text())
    for key in ("plateau_factor", "plateau_patience"):
        del info["train_config"][key]
    (tmp_path / "last.json").write_text(json.dumps(info))
    assert make_trainer(tmp_path, steps=4).fit(resume=True)[-1]["step"] == 4


def test_the_cli_trains_a_book_matching_network_with_dropout_and_plateau(tmp_path):
    make_omniglot(tmp_path / "omniglot", alphabets={"Alpha": 5, "Beta": 5}, drawers=4)
    out = tmp_path / "run"
    res = CliRunner().invoke(main, [
        "train", "--method", "matching", "--data-dir", str(tmp_path), "--no-rotations", "--val-fraction", "0.3",
        "--image-size", "16", "--way", "3", "--query", "2",
        "--episodes", "6", "--val-every", "2", "--val-tasks", "4", "--dropout", "0.25", "--schedule", "plateau",
        "--plateau-factor", "0.1", "--plateau-patience", "0", "--device", "cpu", "--threads", "1", "--quiet",
        "--no-plots", "--out", str(out)], env={"XDG_CACHE_HOME": "/tmp/fewshot-test-cache"})
    assert res.exit_code == 0, res.output
    info = json.loads((out / "last.json").read_text())
    assert info["backbone"] == {"name": "conv4", "kwargs": {"in_channels": 1, "dropout": 0.25}}
    assert info["train_config"]["plateau_factor"] == 0.1 and info["train_config"]["plateau_patience"] == 0
    method, _ = load_checkpoint(out, "last")
    assert sum(isinstance(m, torch.nn.Dropout) and m.p == 0.25 for m in method.modules()) == 4
