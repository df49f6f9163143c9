"""Specification of training: it learns, it is deterministic, it resumes exactly, it fails loudly."""

from __future__ import annotations

import json

import pytest
import torch

from fewshot.engine.batches import EpisodeBatches, MiniBatches
from fewshot.engine.build import build_run
from fewshot.engine.checkpoint import load_checkpoint
from fewshot.engine.evaluate import evaluate
from fewshot.engine.precision import BackboneAutocast
from fewshot.engine.rundir import StartState
from fewshot.engine.trainer import TrainConfig, build_optimizer, lr_factor
from fewshot.engine.validation import holdout_classes, validation_tasks
from fewshot.methods import ProtoNet
from fewshot.nn.backbones import build_backbone
from fewshot.tasks.episodes import TaskSet

from conftest import make_blobs_dataset

SPEC = ("mlp", {"in_features": 64, "sizes": [32, 16]})


def make_trainer(out, steps=30, data=None, method=None, **overrides):
    """``method=None``: a ProtoNet built from ``torch.manual_seed(123)``; ``"protonet"``: built by name
    (initial weights from ``cfg.seed``)."""
    data = data or make_blobs_dataset(num_classes=12, per_class=10)
    train, val = data.split_classes(0.34, seed=0)
    cfg = TrainConfig(**{"steps": steps, "way": 4, "shot": 1, "query": 3, "val_every": 10, "val_tasks": 10,
                         "checkpoint_every": 5, "log_every": 5, "device": "cpu", "progress": False, **overrides})
    if method is None:
        torch.manual_seed(123)  # the model's initial weights
        method = ProtoNet(build_backbone(SPEC[0], **SPEC[1]))
    return build_run(method, train, cfg, out, backbone=SPEC, val_data=val)


def crash_at_step(trainer, n: int) -> None:
    """Run ``trainer`` until its ``n``-th training step, which dies as a killed process would."""
    real_step, calls = trainer.method.training_step, []

    def dies(batch):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt("killed")
        return real_step(batch)

    trainer.method.training_step = dies
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()


def params(module):
    return torch.cat([p.detach().flatten() for p in module.state_dict().values() if p.is_floating_point()])


def test_training_beats_an_untrained_model_on_held_out_classes(tmp_path):
    # Classes live in the first two rows, the other six are noise: what transfers is ignoring them.
    # Measured over 8 initial-weight seeds: untrained 0.35-0.57, trained 0.80-0.87.
    data = make_blobs_dataset(num_classes=40, per_class=10, noise=0.1, seed=1, informative_rows=2)
    train, test = data.split_classes(0.25, seed=0)
    tasks = TaskSet.generate(test, 4, 1, 5, tasks=40, seed=0)
    torch.manual_seed(0)
    before = evaluate(ProtoNet(build_backbone("mlp", in_features=64, sizes=[32, 16])), tasks.episodes(test)).accuracy
    t = make_trainer(tmp_path, steps=100, data=train, lr=1e-2)  # trains on 20 of the 30 classes
    t.fit()
    after = evaluate(t.method, tasks.episodes(test)).accuracy
    assert after > before + 0.15 and after > 0.7  # chance is 0.25


def test_same_seed_same_weights(tmp_path):
    a, b = make_trainer(tmp_path / "a"), make_trainer(tmp_path / "b")
    a.fit(), b.fit()
    assert torch.equal(params(a.method), params(b.method))


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_resume_after_a_crash_reproduces_the_uninterrupted_run(tmp_path, precision):
    full = make_trainer(tmp_path / "full", steps=20, precision=precision)
    full.fit()
    crashed = make_trainer(tmp_path / "crash", steps=20, precision=precision)
    crash_at_step(crashed, 13)  # the process dies mid-run; last checkpoint: step 10
    assert json.loads((tmp_path / "crash" / "last.json").read_text())["state"]["step"] == 10
    resumed = make_trainer(tmp_path / "crash", steps=20, precision=precision)
    resumed.fit(resume=True)
    assert torch.allclose(params(resumed.method), params(full.method), atol=1e-6)
    steps = [json.loads(line)["step"] for line in (tmp_path / "crash" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 20  # no duplicated log lines after resume


def test_bfloat16_runs_the_backbone_in_bfloat16_and_leaves_it_unchanged():
    torch.manual_seed(0)
    backbone = build_backbone("conv4")
    x = torch.rand(6, 1, 28, 28)
    keys, ref = list(backbone.state_dict()), backbone(x)
    with BackboneAutocast(backbone, "bfloat16"):
        low = backbone(x)
    assert low.dtype == torch.float32 and not torch.equal(low, ref)  # computed in bfloat16, returned as float32
    assert torch.allclose(low, ref, atol=0.1)
    assert torch.equal(backbone(x), ref) and "forward" not in vars(backbone)  # float32 again after the block
    assert list(backbone.state_dict()) == keys


def test_bfloat16_training_changes_only_the_arithmetic(tmp_path):
    runs = {p: make_trainer(tmp_path / p, steps=5, val_tasks=0, precision=p) for p in ("float32", "bfloat16")}
    for t in runs.values():
        t.fit()
    a, b = (runs[p].method.state_dict() for p in ("float32", "bfloat16"))
    assert list(a) == list(b) and all(v.dtype == a[k].dtype for k, v in b.items())
    assert not torch.equal(params(runs["float32"].method), params(runs["bfloat16"].method))
    assert torch.allclose(params(runs["float32"].method), params(runs["bfloat16"].method), atol=0.05)
    with pytest.raises(ValueError, match="precision"):
        make_trainer(tmp_path / "bad", steps=1, precision="float16").fit()


def test_the_start_state_reads_a_checkpoints_training_state(tmp_path):
    state = {"step": 5, "best_val": 0.5, "window": [[1.0, 0.25]], "schedule": {"lr": 0.1}, "cpu_seconds": 3}
    assert StartState.saved(state, [{"step": 5}]) == (5, 0.5, [{"step": 5}], [(1.0, 0.25)], {"lr": 0.1}, 3.0)
    assert StartState.saved({"step": 5}) == (5, -1.0, [], [], None, 0.0)  # saved before those were recorded
    a, b = StartState.fresh(), StartState.fresh()
    assert a == (0, -1.0, [], [], None, 0.0) and a.records is not b.records and a.window is not b.window
    crash_at_step(make_trainer(tmp_path, steps=40, log_every=10), 8)  # last: step 5, 5 steps since the last log
    t = make_trainer(tmp_path, steps=40, log_every=10)
    start = t.run.start(True, t.method, t.cfg, build_optimizer(t.method.parameters(), t.cfg))
    assert isinstance(start, StartState) and start.step == 5 and start.records == [] and len(start.window) == 5
    assert start.cpu_seconds > 0 and start.cpu_seconds == json.loads((tmp_path / "last.json").read_text())["state"]["cpu_seconds"]


def test_refuses_to_overwrite_a_run_without_resume(tmp_path):
    make_trainer(tmp_path, steps=5).fit()
    with pytest.raises(FileExistsError, match="--resume"):
        make_trainer(tmp_path, steps=5).fit()


def test_checkpoints_are_safetensors_and_json_and_rebuild_the_method(tmp_path):
    t = make_trainer(tmp_path, steps=10)
    t.fit()
    files = sorted(p.name for p in tmp_path.iterdir())
    last = json.loads((tmp_path / "last.json").read_text())["files"]
    best = json.loads((tmp_path / "best.json").read_text())["files"]
    assert {"best.json", best["weights"], "last.json", last["weights"], last["optimizer"],
            "metrics.jsonl", "metrics.csv"} == {f for f in files if not f.startswith(".")}
    assert last["weights"].startswith("last.step10-") and last["weights"].endswith(".safetensors")
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
    weights = json.loads((tmp_path / "best.json").read_text())["files"]["weights"]
    (tmp_path / weights).write_bytes(b"garbage")
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


def test_the_seed_decides_the_initial_weights(tmp_path):
    a, b = make_trainer(tmp_path / "a", method="protonet"), make_trainer(tmp_path / "b", method="protonet", seed=1)
    assert torch.equal(params(a.method), params(make_trainer(tmp_path / "c", method="protonet").method))
    assert not torch.equal(params(a.method), params(b.method))


def test_a_method_with_nothing_to_train_is_a_zero_step_run(tmp_path):
    data = make_blobs_dataset(num_classes=8)
    train, val = holdout_classes(data, 0.25)
    cfg = TrainConfig(steps=50, way=3, shot=1, query=2, val_tasks=5, device="cpu", progress=False)
    records = build_run("knn", train, cfg, tmp_path, params={"k": 1}, val_data=val).fit()
    assert [r["step"] for r in records] == [0] and 0.0 <= records[0]["val_accuracy"] <= 1.0
    assert {"best.json", "last.json"} <= {p.name for p in tmp_path.iterdir()}
    again = build_run("knn", train, cfg, tmp_path, params={"k": 1}, val_data=val).fit(resume=True)
    assert again == records  # resuming a finished zero-step run does nothing


@pytest.mark.parametrize("source", [EpisodeBatches, MiniBatches])
def test_augmentation_in_both_regimes_is_a_function_of_seed_and_step(source):
    data = make_blobs_dataset(num_classes=6, per_class=8)
    plain = TrainConfig(way=3, shot=2, query=2, batch_size=8, channels_last=False)
    aug = TrainConfig(way=3, shot=2, query=2, batch_size=8, channels_last=False, augment="characters")

    def images(cfg, step):
        batch = source(data, cfg)(step)
        return torch.cat([torch.cat([e.support_x, e.query_x]) for e in batch]) if isinstance(batch, list) else batch[0]

    assert torch.equal(images(aug, 3), images(aug, 3))  # deterministic given seed and step
    assert not torch.equal(images(aug, 3), images(plain, 3))  # the same items, augmented
    assert not torch.equal(images(aug, 3), images(TrainConfig(**{**aug.__dict__, "seed": 1}), 3))
    assert images(aug, 3).shape == images(plain, 3).shape


def test_augment_per_class_draws_each_episodes_transforms_per_class():
    """augment_per='class': episode i is augment_episode(per='class') with episode i's generator;
    it needs a preset, and mini-batches (no episodes) refuse it."""
    from fewshot.data.augment import Augmenter
    from fewshot.engine.batches import step_generator
    from fewshot.tasks.episodes import EpisodeSampler, augment_episode

    data = make_blobs_dataset(num_classes=6, per_class=8)
    cfg = TrainConfig(way=3, shot=2, query=2, channels_last=False, augment="characters", augment_per="class")
    got = EpisodeBatches(data, cfg)(3)[0]
    raw = EpisodeSampler(data, 3, 2, 2, seed=cfg.seed).episode(3)
    want = augment_episode(raw, Augmenter.characters(), step_generator(cfg.seed, 3), per="class")
    assert torch.equal(got.support_x, want.support_x) and torch.equal(got.query_x, want.query_x)
    per_image = EpisodeBatches(data, TrainConfig(**{**cfg.__dict__, "augment_per": "image"}))(3)[0]
    assert not torch.equal(got.support_x, per_image.support_x)
    with pytest.raises(ValueError, match="needs an augmentation preset"):
        TrainConfig(augment_per="class")
    with pytest.raises(ValueError, match="'image' or 'class'"):
        TrainConfig(augment="characters", augment_per="task")
    with pytest.raises(ValueError, match="mini-batch"):
        MiniBatches(data, cfg)


def test_augmented_training_resumes_exactly(tmp_path):
    full = make_trainer(tmp_path / "full", steps=10, augment="characters", val_tasks=0)
    full.fit()
    part = make_trainer(tmp_path / "part", steps=10, augment="characters", val_tasks=0)
    crash_at_step(part, 8)  # last checkpoint: step 5
    resumed = make_trainer(tmp_path / "part", steps=10, augment="characters", val_tasks=0)
    resumed.fit(resume=True)
    assert torch.allclose(params(resumed.method), params(full.method), atol=1e-6)


def test_validation_refuses_a_single_class_and_holds_out_at_least_two(tmp_path):
    data = make_blobs_dataset(num_classes=10)
    cfg = TrainConfig(way=5, shot=1, query=2, val_tasks=5)
    with pytest.raises(ValueError, match="at least 2 classes"):
        validation_tasks(data.subset_classes([0]), cfg)
    train, val = holdout_classes(data, 0.1)  # 10% of 10 classes is 1: hold out 2
    assert (train.num_classes, val.num_classes) == (8, 2)
    assert validation_tasks(val, cfg).meta["way"] == 2
    with pytest.raises(ValueError, match="too few"):
        holdout_classes(data.subset_classes([0, 1, 2]), 0.5)


def test_within_group_validation_shrinks_the_way_to_the_largest_validation_group():
    # 14 validation classes over 5 groups (Omniglot small1's 10% hold-out): 20-way within-alphabet
    # training must still validate, on tasks drawn from one group like the training episodes.
    data = make_blobs_dataset(num_classes=14, per_class=6)
    data.groups = torch.tensor([0] * 7 + [1] * 3 + [2] * 2 + [3, 4])
    tasks = validation_tasks(data, TrainConfig(way=20, shot=1, query=2, val_tasks=5, within="group"))
    assert tasks.meta["way"] == 7
    for task in tasks:
        assert len({int(data.groups[c]) for c in task.classes}) == 1


@pytest.mark.parametrize("precision", ["float16", "bf16", ""])
def test_an_unknown_precision_is_refused_when_the_config_is_built(precision):
    with pytest.raises(ValueError, match=rf"unknown precision '{precision}' in the training configuration; choose float32 or bfloat16"):
        TrainConfig(precision=precision)
    assert TrainConfig(precision="bfloat16").precision == "bfloat16"


@pytest.fixture
def fake_cpu_clock(monkeypatch):
    """The trainer's CPU clock advances one second per call: a step reads it before and after its
    work, so each training step costs one CPU second (``monkeypatch.undo()`` restores the real one)."""
    import itertools

    import fewshot.engine.trainer as trainer_module

    clock = itertools.count()
    monkeypatch.setattr(trainer_module.time, "process_time", lambda: float(next(clock)))


def test_max_cpu_seconds_stops_cleanly_with_a_checkpoint_and_says_so(tmp_path, monkeypatch, fake_cpu_clock):
    records = make_trainer(tmp_path, steps=40, max_cpu_seconds=6.5, checkpoint_every=100, log_every=5).fit()
    monkeypatch.undo()
    assert records[-1]["step"] == 7 and "val_accuracy" in records[-1]  # the last step is validated and logged
    assert records[-1]["stopped"].startswith("max_cpu_seconds=6.5 spent (7.0 CPU s) after 7 of 40 steps")
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1]["stopped"] == records[-1]["stopped"]
    assert json.loads((tmp_path / "last.json").read_text())["state"]["step"] == 7
    load_checkpoint(tmp_path, "last")
    records = make_trainer(tmp_path, steps=40, checkpoint_every=100).fit(resume=True)  # the cap is free to change
    assert records[-1]["step"] == 40 and "stopped" not in records[-1]
    with pytest.raises(ValueError, match="max_cpu_seconds must be > 0"):
        TrainConfig(max_cpu_seconds=0)


def test_max_cpu_seconds_counts_the_cpu_of_a_run_across_resumes(tmp_path, fake_cpu_clock):
    def counting(trainer):  # the training steps it takes
        real, taken = trainer.method.training_step, []
        trainer.method.training_step = lambda batch: (taken.append(1), real(batch))[1]
        return trainer, taken

    crash_at_step(make_trainer(tmp_path, steps=40, max_cpu_seconds=6.5), 6)  # killed in step 6; last: step 5
    resumed, taken = counting(make_trainer(tmp_path, steps=40, max_cpu_seconds=6.5))
    records = resumed.fit(resume=True)
    assert len(taken) == 2 and records[-1]["step"] == 7  # 5 + 2 CPU s: the cap, not 6.5 more
    assert records[-1]["stopped"].startswith("max_cpu_seconds=6.5 spent (7.0 CPU s) after 7 of 40 steps")
    assert json.loads((tmp_path / "last.json").read_text())["state"]["cpu_seconds"] == 7.0  # saved like the step
    again, taken = counting(make_trainer(tmp_path, steps=40, max_cpu_seconds=6.5))
    records = again.fit(resume=True)  # nothing left: no step, and it says so
    assert taken == [] and records[-1]["step"] == 7 and "already spent (7.0 CPU s)" in records[-1]["stopped"]
    more, taken = counting(make_trainer(tmp_path, steps=40, max_cpu_seconds=9.5))  # a higher cap continues
    assert more.fit(resume=True)[-1]["step"] == 10 and len(taken) == 3


def test_a_checkpoint_without_recorded_cpu_time_resumes_counting_from_zero(tmp_path, fake_cpu_clock):
    crash_at_step(make_trainer(tmp_path, steps=40, max_cpu_seconds=6.5), 6)  # last: step 5, 5 CPU s
    info = json.loads((tmp_path / "last.json").read_text())
    del info["state"]["cpu_seconds"]  # as saved before the CPU time was recorded
    (tmp_path / "last.json").write_text(json.dumps(info))
    records = make_trainer(tmp_path, steps=40, max_cpu_seconds=6.5).fit(resume=True)
    assert records[-1]["step"] == 12 and "(7.0 CPU s) after 12 of 40" in records[-1]["stopped"]
