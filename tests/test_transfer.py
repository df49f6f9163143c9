"""Transfer family: mini-batch pre-training, Baseline/Baseline++/finetune/SimpleShot adaptation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fewshot.nn.backbones import MLP
from fewshot.engine.checkpoint import _load_state, build_from_spec, load_checkpoint, method_spec
from fewshot.nn.distances import class_means
from fewshot.tasks.episodes import TaskSet
from fewshot.engine.evaluate import evaluate
from fewshot.methods import build_method
from fewshot.methods.transfer import FineTune, TransferMethod
from fewshot.engine.build import build_run
from fewshot.engine.config import TrainConfig

from conftest import make_blobs_dataset

TRANSFER = ["baseline", "baseline_pp", "finetune", "simpleshot", "discriminative_kshot"]


def _episode(seed: int = 0, way: int = 4, shot: int = 2, query: int = 5, d: int = 16):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(way, d, generator=g) * 2
    sx = centres.repeat_interleave(shot, 0) + torch.randn(way * shot, d, generator=g)
    qx = centres.repeat_interleave(query, 0) + torch.randn(way * query, d, generator=g)
    return sx, torch.arange(way).repeat_interleave(shot), qx, torch.arange(way).repeat_interleave(query)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """One MLP pre-trained (linear head) on 8 blob classes; 4 held-out classes to evaluate on."""
    torch.manual_seed(0)
    ds = make_blobs_dataset(num_classes=12, per_class=12, size=8, noise=0.25)
    base, novel = ds.subset_classes(range(8)), ds.subset_classes(range(8, 12))
    out = tmp_path_factory.mktemp("baseline")
    method = build_method("baseline", MLP(64, (64, 32)))
    cfg = TrainConfig(steps=60, batch_size=32, lr=3e-3, val_tasks=0, progress=False, log_every=20, device="cpu",
                      channels_last=False)
    records = build_run(method, base, cfg, out, backbone=("mlp", {"in_features": 64, "sizes": [64, 32]})).fit()
    return method, records, out, base, novel


def test_setup_sizes_head_and_config_rebuilds(pretrained):
    method, records, out, base, _ = pretrained
    assert method.way == base.num_classes and method.feature_dim == 32
    assert records[-1]["loss"] < records[0]["loss"]
    assert float(method.feature_mean.abs().sum()) > 0  # tracked during pre-training
    loaded, info = load_checkpoint(out)
    assert info["config"]["way"] == 8
    for k, v in method.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k


@pytest.mark.parametrize("name", TRANSFER)
def test_methods_share_pretraining_and_learn_novel_classes(pretrained, name):
    method, _, _, _, novel = pretrained
    m = build_method(name, MLP(64, (64, 32)), **{k: v for k, v in method.config().items()
                                                  if k in ("way", "feature_dim", "head_type")})
    m.load_state_dict(method.state_dict())
    tasks = TaskSet.generate(novel, way=4, shot=1, query=5, tasks=10, seed=3)
    res = evaluate(m, tasks.episodes(novel))
    assert res.accuracy > 0.5, f"{name}: {res.accuracy:.2f} on 4-way 1-shot (chance 0.25)"
    # the per-task state stays out of the checkpointable state
    assert set(m.state_dict()) == set(method.state_dict())


def test_training_step_rejects_episodes(pretrained):
    method = pretrained[0]
    with pytest.raises(TypeError, match="mini-batches"):
        method.training_step([])


def test_augmentation_is_a_training_setting_not_a_method_option(tmp_path):
    with pytest.raises(ValueError, match="fewshot train --augment"):
        build_method("baseline", None, augment="characters")
    # A checkpoint of the earlier version (augment option, steps_done buffer) still loads.
    ds = make_blobs_dataset(num_classes=4, per_class=6, size=16)
    m = build_method("baseline", MLP(256, (16,)), seed=5)
    m.setup(ds)
    spec = method_spec(m, ("mlp", {"in_features": 256, "sizes": [16]}))
    spec["config"]["augment"] = "characters"
    state = {k: v.clone() for k, v in m.state_dict().items()}
    state["steps_done"] = torch.tensor(7)
    rebuilt = build_from_spec(spec)
    rebuilt.setup(ds)
    _load_state(rebuilt, state, tmp_path / "old.safetensors")
    for k, v in m.state_dict().items():
        torch.testing.assert_close(rebuilt.state_dict()[k], v)


def test_finetune_prototype_init_is_nearest_prototype():
    sx, sy, qx, _ = _episode(seed=1)
    backbone = MLP(16, (32, 8))
    m = FineTune(backbone, adapt_steps=0, transductive=True).eval()
    with torch.no_grad():
        pred = m.fit(sx, sy).predict(qx)
        protos = F.normalize(class_means(F.normalize(backbone(sx), dim=1), sy), dim=1)
        nearest = (F.normalize(backbone(qx), dim=1) @ protos.T).argmax(-1)
    assert torch.equal(pred, nearest)
    assert torch.allclose(m.task_weight, protos, atol=1e-6)


@pytest.mark.parametrize("transductive", [True, False])
def test_finetune_steps_change_head_and_transduction_uses_queries(transductive):
    sx, sy, qx, qy = _episode(seed=2)
    m = FineTune(MLP(16, (32, 8)), adapt_steps=20, adapt_lr=0.05, transductive=transductive).eval()
    with torch.no_grad():
        m.fit(sx, sy)
        s1 = m.scores(qx)
        w1 = m.task_weight.clone()
        init = F.normalize(class_means(F.normalize(m.embed(sx), dim=1), sy), dim=1)
        assert not torch.allclose(w1, init)
        s2 = m.scores(qx)  # same queries: no second adaptation
        assert torch.equal(s1, s2)
        other = qx[:7].clone()
        m.scores(other)
        assert torch.equal(m.task_weight, w1) != transductive  # new queries re-adapt only when transductive
    assert s1.shape == (qx.shape[0], 4)


def test_finetune_backbone_copy_leaves_pretrained_weights():
    sx, sy, qx, _ = _episode(seed=3)
    backbone = MLP(16, (32, 8))
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    m = FineTune(backbone, adapt_steps=5, finetune_backbone=True, backbone_lr=1e-2).eval()
    with torch.no_grad():
        m.fit(sx, sy).scores(qx)
    assert m._task_backbone is not None
    for k, v in backbone.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not any(k.startswith("_task_backbone") for k in m.state_dict())


def test_simpleshot_support_centering_without_pretraining():
    sx, sy, qx, qy = _episode(seed=4)
    m = build_method("simpleshot", MLP(16, (32,)), centering="support").eval()
    with torch.no_grad():
        acc = (m.fit(sx, sy).predict(qx) == qy).float().mean()
    assert acc > 0.6
    with pytest.raises(RuntimeError, match="centering='support'"):
        build_method("simpleshot", MLP(16, (32,))).fit(sx, sy)


def test_baseline_bad_options_and_unfitted():
    with pytest.raises(ValueError, match="head_type='rbf' is not one of the valid values"):
        build_method("baseline", None, head="rbf")
    m = build_method("baseline", MLP(16, (8,)))
    with pytest.raises(RuntimeError, match="call fit"):
        m.scores(torch.zeros(2, 16))
    assert isinstance(m, TransferMethod) and m.training_regime == "batch" and m.fit_needs_grad


@pytest.mark.parametrize("name,pretraining_head", [("baseline", "linear"), ("baseline_pp", "cosine")])
def test_task_head_defaults_to_the_pretraining_head_and_is_no_eval_override(name, pretraining_head):
    from fewshot.engine.checkpoint import eval_overrides

    m = build_method(name, MLP(16, (8,)))
    assert m.task_head is None and m._task_head == pretraining_head
    assert eval_overrides(method_spec(m, None)) == {}  # evaluating with the defaults changes nothing
    assert build_method(name, MLP(16, (8,)), head_type="cosine")._task_head == "cosine"
    other = "cosine" if pretraining_head == "linear" else "linear"
    assert eval_overrides(method_spec(m, None), {"task_head": other}) == {"task_head": other}


def test_resume_with_augmentation_repeats_the_uninterrupted_run(tmp_path):
    ds = make_blobs_dataset(num_classes=4, per_class=6, size=16)
    spec = ("mlp", {"in_features": 256, "sizes": [16]})

    def run(out, resume=False, crash_at=None):
        torch.manual_seed(0)
        m = build_method("baseline", MLP(256, (16,)), seed=1)
        steps = []
        if crash_at is not None:
            step = m.training_step

            def crashing(batch):
                if len(steps) == crash_at:
                    raise KeyboardInterrupt
                steps.append(1)
                return step(batch)

            m.training_step = crashing
        cfg = TrainConfig(steps=6, batch_size=8, val_tasks=0, progress=False, log_every=2, checkpoint_every=2,
                          device="cpu", channels_last=False, augment="characters")
        try:
            build_run(m, ds, cfg, out, backbone=spec).fit(resume=resume)
        except KeyboardInterrupt:
            pass
        return m

    full = run(tmp_path / "a")
    run(tmp_path / "b", crash_at=4)
    resumed = run(tmp_path / "b", resume=True)
    for k, v in full.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, msg=k)


def test_transductive_finetune_does_not_collapse_on_positive_features():
    """ReLU-like features (all in the positive orthant, every cosine high): the query-entropy term
    used to send every query to one class (chance, 5%, against 34% for the prototypes)."""
    from fewshot.methods import build_method

    g = torch.Generator().manual_seed(0)
    tasks = []
    for _ in range(8):
        mu = 0.5 * torch.randn(20, 64, generator=g)
        sx = (mu + torch.randn(20, 64, generator=g) + 1).relu()
        qx = (mu.repeat_interleave(5, 0) + torch.randn(100, 64, generator=g) + 1).relu()
        tasks.append((sx, torch.arange(20), qx, torch.arange(20).repeat_interleave(5)))

    def accuracy(**options) -> float:
        m = build_method("finetune", None, **options)
        return sum(float((m.fit(sx, sy).scores(qx).argmax(-1) == qy).float().mean()) for sx, sy, qx, qy in tasks) / len(tasks)

    prototypes = accuracy(adapt_steps=0)
    assert prototypes > 0.25
    assert accuracy() >= prototypes - 0.02
