"""MANN, the LSTM sequence baseline and Meta Networks through the FewShotMethod interface."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fewshot.nn.backbones import MLP
from fewshot.engine.checkpoint import load_checkpoint
from fewshot.tasks.episodes import EpisodeSampler
from fewshot.engine.evaluate import evaluate
from fewshot.tasks.episodes import TaskSet
from fewshot.methods import METHODS, build_method
from fewshot.methods.model_based import instance_accuracy
from fewshot.nn.inner_loop import preprocess_gradient
from fewshot.engine.build import build_run
from fewshot.engine.config import TrainConfig

SMALL = {
    "mann": dict(way=3, hidden=16, slots=8, width=6, heads=2),
    "lstm_seq": dict(way=3, hidden=16),
}


def test_registered():
    assert {"mann", "lstm_seq", "metanet"} <= set(METHODS)


@pytest.mark.parametrize("name", ["mann", "lstm_seq"])
def test_sequence_methods_fit_scores_and_loss(name, blobs):
    m = build_method(name, **SMALL[name])
    m.setup(blobs)
    assert m.feature_dim == 64  # 8x8 raw pixels
    ep = EpisodeSampler(blobs, 3, 2, 2, seed=0).episode(0)
    scores = m.fit(ep.support_x, ep.support_y).scores(ep.query_x)
    assert scores.shape == (6, 3) and torch.isfinite(scores).all()
    out = m.loss(ep)
    assert out.scores.shape == (6, 3)
    out.loss.backward()
    assert all(p.grad is not None for p in m.parameters())


@pytest.mark.parametrize("name", ["mann", "lstm_seq"])
def test_queries_are_independent_continuations(name, blobs):
    torch.manual_seed(0)
    m = build_method(name, **SMALL[name])
    m.setup(blobs)
    ep = EpisodeSampler(blobs, 3, 2, 2, seed=0).episode(0)
    m.eval()
    with torch.no_grad():
        all_q = m.fit(ep.support_x, ep.support_y).scores(ep.query_x)
        one = m.scores(ep.query_x[3:4])
    assert torch.allclose(all_q[3:4], one, atol=1e-5)


def test_sequence_loss_covers_every_step(blobs):
    """The training loss is the mean cross-entropy over the whole shuffled sequence."""
    m = build_method("lstm_seq", **SMALL["lstm_seq"])
    m.setup(blobs)
    ep = EpisodeSampler(blobs, 3, 2, 1, seed=0).episode(0)
    torch.manual_seed(5)
    out = m.loss(ep)
    torch.manual_seed(5)
    x, y, is_q = m.sequence_of([ep])
    logits, _ = m.run_sequence(x, y)
    assert torch.allclose(out.loss, F.cross_entropy(logits[..., :3].reshape(-1, 3), y.reshape(-1)))
    assert is_q.sum() == 3 and x.shape[:2] == (9, 1)


def test_labels_arrive_one_step_late(blobs):
    """Changing the label of the last step cannot change any output; changing an earlier one changes later outputs."""
    m = build_method("mann", **SMALL["mann"])
    m.setup(blobs)
    x = blobs.items(torch.arange(0, 50, 10)).unsqueeze(1)  # [5, 1, 1, 8, 8]
    y = torch.tensor([[0], [1], [2], [0], [1]])
    a, _ = m.run_sequence(x, y)
    y2 = y.clone()
    y2[-1] = 2
    b, _ = m.run_sequence(x, y2)
    assert torch.allclose(a, b)
    y3 = y.clone()
    y3[1] = 2
    c, _ = m.run_sequence(x, y3)
    assert torch.allclose(a[:2], c[:2]) and not torch.allclose(a[2:], c[2:])


def test_sequence_method_errors(blobs):
    m = build_method("mann", **SMALL["mann"])
    with pytest.raises(RuntimeError, match="feature_dim"):
        m.fit(torch.zeros(3, 1, 8, 8), torch.arange(3))
    m.setup(blobs)
    with pytest.raises(ValueError, match="way=5"):
        m.fit(torch.zeros(5, 1, 8, 8), torch.arange(5))
    with pytest.raises(RuntimeError, match="fit"):
        build_method("lstm_seq", feature_dim=64).scores(torch.zeros(2, 1, 8, 8))


def test_instance_accuracy_hand_computed():
    y = torch.tensor([[0], [1], [0], [0], [1]])
    pred = torch.tensor([[1], [1], [0], [1], [1]])
    logits = F.one_hot(pred, 2).float()
    hits, tot = instance_accuracy(logits, y, 3)
    # instances: 0->1st, 1->1st, 0->2nd, 0->3rd, 1->2nd
    assert tot.tolist() == [2, 2, 1]
    assert hits.tolist() == [1, 2, 0]


def test_preprocess_gradient_hand_computed():
    g = torch.tensor([1.0, -math.exp(-5.0), 1e-6, 0.0])
    out = preprocess_gradient(g, p=10.0)
    assert torch.allclose(out[0], torch.tensor([0.0, 1.0]))
    assert torch.allclose(out[1], torch.tensor([-0.5, -1.0]))
    assert torch.allclose(out[2], torch.tensor([-1.0, 1e-6 * math.exp(10.0)]))
    assert torch.allclose(out[3], torch.tensor([-1.0, 0.0]))


def _metanet(blobs, way=3):
    m = build_method("metanet", backbone=MLP(64, (32,)), way=way, hidden=16, meta_hidden=8, pairs=4)
    m.setup(blobs)
    return m


def test_metanet_base_gradients_match_autograd(blobs):
    torch.manual_seed(0)
    m = _metanet(blobs)
    hb = torch.randn(4, m.feature_dim)
    y = torch.tensor([0, 2, 1, 2])
    g1, g2 = m._base_gradients(hb, y)
    for i in range(4):
        logits = F.relu(hb[i] @ m.W1.T + m.b1) @ m.W2.T + m.b2
        a1, a2 = torch.autograd.grad(F.cross_entropy(logits[None], y[i:i + 1]), [m.W1, m.W2])
        assert torch.allclose(g1[i], a1, atol=1e-6) and torch.allclose(g2[i], a2, atol=1e-6)


def test_metanet_fit_scores_loss(blobs):
    m = _metanet(blobs)
    ep = EpisodeSampler(blobs, 3, 1, 2, seed=0).episode(0)
    out = m.loss(ep)
    assert out.scores.shape == (6, 3)
    out.loss.backward()
    trained = ["Q", "W1", "W2", "m_net.0.weight", "d_lstm.weight_ih_l0", "log_scale", "backbone.net.1.weight", "base_trunk.net.1.weight"]
    params = dict(m.named_parameters())
    assert all(params[k].grad is not None and params[k].grad.abs().sum() > 0 for k in trained)
    with torch.no_grad():
        s = m.fit(ep.support_x, ep.support_y).scores(ep.query_x)
    assert s.shape == (6, 3) and torch.isfinite(s).all()
    with pytest.raises(ValueError, match="way=4"):
        _metanet(blobs).fit(torch.zeros(4, 1, 8, 8), torch.arange(4))


def test_metanet_fast_weights_are_per_example_and_read_by_attention(blobs):
    m = _metanet(blobs)
    m.eval()
    ep = EpisodeSampler(blobs, 3, 1, 1, seed=0).episode(0)
    with torch.no_grad():
        m.fit(ep.support_x, ep.support_y)
        q_fast, keys, w1f, w2f = m.memory
        assert w1f.shape == (3, 16, m.feature_dim) and w2f.shape == (3, 3, 16) and keys.shape == (3, 16)
        # a very sharp attention on a support item itself reads exactly that item's fast weights
        m.log_scale.fill_(math.log(1e4))
        hu, hb = m._trunks(ep.support_x[1:2])
        r = m._represent(hu, q_fast)
        att = torch.softmax(m.log_scale.exp() * F.normalize(r, dim=-1) @ F.normalize(keys, dim=-1).T, -1)
        assert att.argmax() == 1
        expected = m._base_logits(hb, w1f[1:2], w2f[1:2])[:, :3]
        assert torch.allclose(m.scores(ep.support_x[1:2]), expected, atol=1e-4)


@pytest.mark.parametrize("name", ["mann", "lstm_seq", "metanet"])
def test_train_checkpoint_and_evaluate(name, blobs, tmp_path):
    """The trainer, checkpoints and evaluator work with each method (a few steps; not a learning test)."""
    torch.manual_seed(0)
    if name == "metanet":  # feature_dim left for the trainer's setup() to measure
        m = build_method("metanet", backbone=MLP(64, (32,)), way=3, hidden=16, meta_hidden=8, pairs=4)
        spec = ("mlp", {"in_features": 64, "sizes": [32]})
    else:
        m, spec = build_method(name, **SMALL[name]), None
    cfg = TrainConfig(steps=3, way=3, shot=2, query=2, tasks_per_step=2, val_every=3, val_tasks=4, log_every=1,
                      progress=False, device="cpu", seed=0)
    build_run(m, blobs, cfg, tmp_path, val_data=blobs, backbone=spec).fit()
    loaded, info = load_checkpoint(tmp_path)
    assert info["method"] == name
    tasks = TaskSet.generate(blobs, 3, 2, 2, tasks=3, seed=1)
    a = evaluate(m, tasks.episodes(blobs))
    b = evaluate(loaded, tasks.episodes(blobs))
    assert a.accuracy == pytest.approx(b.accuracy)


def _binding_batch(batch: int, way: int, instances: int, dim: int, g: torch.Generator):
    """Sequences ``[T, B, dim]`` of ``way`` classes whose items (random vectors plus noise) and labels
    are drawn anew for every sequence: only binding items to labels inside the sequence predicts
    the labels of later instances."""
    classes = torch.randn(batch, way, dim, generator=g)
    y = torch.stack([torch.randperm(way * instances, generator=g) % way for _ in range(batch)], 1)  # [T, B]
    x = classes[torch.arange(batch)[None], y] + 0.1 * torch.randn(way * instances, batch, dim, generator=g)
    return x, y


def test_mann_learns_to_bind_labels_inside_a_sequence():
    """Learnability on a tiny task: 2-way sequences of 3 instances per class, fresh items and labels
    in every sequence; the 2nd and 3rd instances are predictable only from the first one's label."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    m = build_method("mann", feature_dim=8, way=2, hidden=32, slots=8, width=8, heads=1)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(600):
        x, y = _binding_batch(32, 2, 3, 8, g)
        logits, _ = m.run_sequence(x, y)
        loss = F.cross_entropy(logits.reshape(-1, 2), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 10.0)
        opt.step()
    with torch.no_grad():
        x, y = _binding_batch(256, 2, 3, 8, torch.Generator().manual_seed(1))
        logits, _ = m.run_sequence(x, y)
    hits, totals = instance_accuracy(logits, y, 3)
    acc = hits.float() / totals
    assert acc[1] > 0.85 and acc[2] > 0.85, acc  # chance: 0.5
