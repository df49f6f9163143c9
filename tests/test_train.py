"""Specification of training: it learns, it is deterministic, it resumes exactly, it fails loudly."""

from __future__ import annotations

import json

import pytest
import torch

from fewshot.nn.backbones import build_backbone
from fewshot.engine.checkpoint import load_checkpoint
from fewshot.tasks.episodes import TaskSet
from fewshot.engine.evaluate import evaluate
from fewshot.methods import ProtoNet
from fewshot.engine.trainer import Trainer, TrainConfig, lr_factor

from conftest import make_blobs_dataset

SPEC = ("mlp", {"in_features": 64, "sizes": [32, 16]})


def make_trainer(out, steps=30, data=None, **overrides):
    torch.manual_seed(123)  # the model's initial weights
    data = data or make_blobs_dataset(num_classes=12, per_class=10)
    train, val = data.split_classes(0.34, seed=0)
    cfg = TrainConfig(**{"steps": steps, "way": 4, "shot": 1, "query": 3, "val_every": 10, "val_tasks": 10,
                         "checkpoint_every": 5, "log_every": 5, "device": "cpu", "progress": False, **overrides})
    return Trainer(ProtoNet(build_backbone(*SPEC[:1], **SPEC[1])), train, cfg, out, val_data=val, backbone_spec=SPEC)


def params(module):
    return torch.cat([p.detach().flatten() for p in module.state_dict().values() if p.is_floating_point()])


def test_training_beats_an_untrained_model_on_held_out_classes(tmp_path):
    data = make_blobs_dataset(num_classes=16, per_class=10, noise=0.35, seed=1)
    train, test = data.split_classes(0.25, seed=0)
    tasks = TaskSet.generate(test, 4, 1, 5, tasks=40, seed=0)
    torch.manual_seed(0)
    before = evaluate(ProtoNet(build_backbone("mlp", in_features=64, sizes=[32, 16])), test, tasks).accuracy
    t = make_trainer(tmp_path, steps=60, data=data, lr=3e-3)
    t.fit()
    after = evaluate(t.method, test, tasks).accuracy
    assert after > before + 0.05 and after > 0.5  # chance is 0.25


def test_same_seed_same_weights(tmp_path):
    a, b = make_trainer(tmp_path / "a"), make_trainer(tmp_path / "b")
    a.fit(), b.fit()
    assert torch.equal(params(a.method), params(b.method))


def test_resume_after_a_crash_reproduces_the_uninterrupted_run(tmp_path):
    full = make_trainer(tmp_path / "full", steps=20)
    full.fit()
    crashed = make_trainer(tmp_path / "crash", steps=20)
    real_step, calls = crashed.method.training_step, []

    def dies_at_step_13(batch):
        calls.append(1)
        if len(calls) == 13:
            raise KeyboardInterrupt("killed")  # the process dies mid-run; last checkpoint: step 10
        return real_step(batch)

    crashed.method.training_step = dies_at_step_13
    with pytest.raises(KeyboardInterrupt):
        crashed.fit()
    assert json.loads((tmp_path / "crash" / "last.json").read_text())["state"]["step"] == 10
    resumed = make_trainer(tmp_path / "crash", steps=20)
    resumed.fit(resume=True)
    assert torch.allclose(params(resumed.method), params(full.method), atol=1e-6)
    steps = [json.loads(line)["step"] for line in (tmp_path / "crash" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 20  # no duplicated log lines after resume


def test_refuses_to_overwrite_a_run_without_resume(tmp_path):
    make_trainer(tmp_path, steps=5).fit()
    with pytest.raises(FileExistsError, match="--resume"):
        make_trainer(tmp_path, steps=5).fit()


def test_checkpoints_are_safetensors_and_json_and_rebuild_the_method(tmp_path):
    t = make_trainer(tmp_path, steps=10)
    t.fit()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert {"best.json", "best.safetensors", "last.json", "last.safetensors", "last.optim.safetensors",
            "metrics.jsonl", "metrics.csv"} <= set(files)
    assert not [f for f in files if f.endswith((".pt", ".pth", ".pkl", ".tmp"))]
    method, info = load_checkpoint(tmp_path, "last")
    assert info["method"] == "protonet" and info["state"]["step"] == 10
    x = torch.rand(6, 1, 8, 8)
    t.method.eval(), method.eval()
    with torch.no_grad():
        a = t.method.fit(x[:3], torch.tensor([0, 1, 2])).scores(x[3:])
        b = method.fit(x[:3], torch.tensor([0, 1, 2])).scores(x[3:])
    assert torch.allclose(a, b)


def test_corrupt_checkpoint_is_reported(tmp_path):
    make_trainer(tmp_path, steps=5).fit()
    (tmp_path / "best.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupt"):
        load_checkpoint(tmp_path, "best")


def test_nan_loss_stops_training_with_advice(tmp_path):
    data = make_blobs_dataset()
    data.x = data.x.float().div(255)
    data.x[data.y == data.y[0]] = float("nan")
    with pytest.raises(FloatingPointError, match="learning rate"):
        make_trainer(tmp_path, steps=40, data=data, val_tasks=0).fit()


@pytest.mark.parametrize("schedule, at_half", [("cosine", 0.5), ("step", 0.5), ("constant", 1.0)])
def test_learning_rate_schedules(schedule, at_half):
    cfg = TrainConfig(steps=100, schedule=schedule)
    assert lr_factor(0, cfg) == 1.0 and lr_factor(50, cfg) == pytest.approx(at_half)
