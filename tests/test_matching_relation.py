"""Matching networks (attention, FCE, loss on log-probabilities) and relation networks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fewshot.nn.backbones import MLP, Conv4, Identity
from fewshot.tasks.episodes import Episode, EpisodeSampler
from fewshot.methods import MatchingNet, RelationNet
from fewshot.methods.metric import FullContextEmbedding, RelationEncoder, RelationModule


def _episode(sx, sy, qx, qy) -> Episode:
    way = int(sy.max()) + 1
    return Episode(sx, sy, qx, qy, torch.arange(way), torch.arange(len(sy)), torch.arange(len(qy)))


def test_matching_loss_is_nll_of_attention_probabilities_not_a_second_softmax():
    ep = _episode(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]), torch.tensor([[1.0, 0.0]]), torch.tensor([0]))
    out = MatchingNet(Identity(), scale=1.0).loss(ep)
    p0 = math.e / (math.e + 1)  # softmax over cosines (1, 0)
    assert out.loss.item() == pytest.approx(-math.log(p0), rel=1e-5)
    double_softmax = math.log(1 + math.exp(-(2 * p0 - 1)))
    assert abs(out.loss.item() - double_softmax) > 0.1
    m = MatchingNet(Identity(), scale=1.0).fit(ep.support_x, ep.support_y)
    torch.testing.assert_close(m.predict_proba(ep.query_x), torch.tensor([[p0, 1 - p0]]))


def test_matching_attention_sums_over_the_shots_of_a_class():
    sx = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]])
    m = MatchingNet(Identity(), scale=5.0).fit(sx, torch.tensor([0, 0, 1]))
    proba = m.predict_proba(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    torch.testing.assert_close(proba.sum(1), torch.ones(2))
    assert proba.argmax(1).tolist() == [1, 0]


def _zero_lstms(m: MatchingNet) -> None:
    with torch.no_grad():
        for p in m.context.parameters():
            p.zero_()


def test_fce_with_disabled_lstms_equals_plain_matching():
    torch.manual_seed(0)
    sampler_x = torch.randn(10, 1, 8, 8)
    sy = torch.arange(5).repeat(2)
    qx = torch.randn(7, 1, 8, 8)
    plain = MatchingNet(MLP(64, (16,)))
    fce = MatchingNet(MLP(64, (16,)), fce=True, fce_steps=3, feature_dim=16)
    fce.backbone.load_state_dict(plain.backbone.state_dict())
    assert not torch.allclose(fce.fit(sampler_x, sy).scores(qx), plain.fit(sampler_x, sy).scores(qx))
    _zero_lstms(fce)  # zero LSTMs output h = 0, so g = g' and h_k = f'(x)
    torch.testing.assert_close(fce.fit(sampler_x, sy).scores(qx), plain.fit(sampler_x, sy).scores(qx))
    ep = _episode(sampler_x, sy, qx, torch.arange(7) % 5)
    torch.testing.assert_close(fce.loss(ep).loss, plain.loss(ep).loss)


def test_fce_shapes_steps_and_context_dependence():
    torch.manual_seed(0)
    ctx = FullContextEmbedding(6, steps=4)
    g_prime = torch.randn(5, 6)
    g = ctx.support(g_prime)
    assert g.shape == (5, 6) and g.dtype == torch.float32
    assert ctx.query(torch.randn(3, 6), g).shape == (3, 6)
    # the support embedding of an item depends on the rest of the set (that is the point of FCE)
    g2 = ctx.support(torch.cat([g_prime[:4], torch.randn(1, 6)]))
    assert not torch.allclose(g[0], g2[0])
    f = torch.randn(3, 6)
    torch.testing.assert_close(FullContextEmbedding(6, steps=0).query(f, g), f)


def test_fce_needs_its_size():
    with pytest.raises(RuntimeError, match="feature_dim"):
        MatchingNet(Identity(), fce=True).fit(torch.randn(2, 3), torch.tensor([0, 1]))


def test_relation_encoder_and_module_shapes():
    assert RelationEncoder(1)(torch.zeros(2, 1, 28, 28)).shape == (2, 64, 5, 5)
    assert RelationEncoder(3)(torch.zeros(2, 3, 84, 84)).shape == (2, 64, 19, 19)
    for size in (1, 5, 19):
        assert RelationModule(64)(torch.zeros(3, 128, size, size)).shape == (3,)


def test_relation_class_maps_sum_the_shots_and_scores_have_shape():
    torch.manual_seed(0)
    m = RelationNet(RelationEncoder(1), class_pool="sum")
    assert m.feature_dim == 64
    m.eval()
    sx, sy = torch.rand(6, 1, 28, 28), torch.tensor([0, 0, 1, 1, 2, 2])
    m.fit(sx, sy)
    maps = m.feature_maps(sx)
    torch.testing.assert_close(m.class_maps[1], maps[2] + maps[3])
    m.class_pool = "mean"
    torch.testing.assert_close(m.fit(sx, sy).class_maps[1], (maps[2] + maps[3]) / 2)
    one_shot = m.fit(sx[::2], sy[::2]).scores(sx[:2])
    m.class_pool = "sum"
    torch.testing.assert_close(m.fit(sx[::2], sy[::2]).scores(sx[:2]), one_shot)  # the pools agree at 1-shot
    assert m.scores(torch.rand(4, 1, 28, 28)).shape == (4, 3)
    # the order of shots within a class does not matter
    perm = m.fit(sx[[1, 0, 3, 2, 5, 4]], sy).scores(sx[:2])
    torch.testing.assert_close(perm, m.fit(sx, sy).scores(sx[:2]))


def test_relation_objectives_cross_entropy_by_default_and_mse_to_one_hot():
    torch.manual_seed(0)
    ep = _episode(torch.randn(3, 4), torch.tensor([0, 1, 2]), torch.randn(2, 4), torch.tensor([2, 0]))
    m = RelationNet(MLP(4, (8,)), feature_dim=8)
    out = m.loss(ep)
    assert out.loss.item() == pytest.approx(F.cross_entropy(out.scores, ep.query_y).item(), rel=1e-6)
    m_mse = RelationNet(MLP(4, (8,)), objective="mse")
    m_mse.setup(type("D", (), {"item_shape": (4,)})())
    out = m_mse.loss(ep)
    target = torch.tensor([[0.0, 0, 1], [1, 0, 0]])
    assert out.loss.item() == pytest.approx(((torch.sigmoid(out.scores) - target) ** 2).mean().item(), rel=1e-6)
    with pytest.raises(ValueError, match="objective"):
        RelationNet(objective="hinge")


@pytest.mark.parametrize("make", [lambda: MatchingNet(Conv4(1, hidden=16)),
                                  lambda: MatchingNet(Conv4(1, hidden=16), fce=True, feature_dim=16),
                                  lambda: RelationNet(Conv4(1, hidden=16, flatten=False), objective="ce")])
def test_matching_and_relation_learn_on_blobs(make):
    from conftest import make_blobs_dataset

    ds = make_blobs_dataset(num_classes=12, per_class=8, size=16)  # big enough for Conv4's pooling
    torch.manual_seed(0)
    m = make()
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    sampler = EpisodeSampler(ds, 4, 1, 3, seed=0)
    accs = []
    for i in range(25):
        ep = sampler.episode(i)
        out = m.loss(ep)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        accs.append((out.scores.argmax(-1) == ep.query_y).float().mean().item())
    assert sum(accs[-8:]) / 8 > 0.5  # chance 0.25


def test_matching_default_attention_can_become_confident():
    """A fixed scale of 1 caps p(y|x, S) at e / (e + (way-1)/e) (0.65 at 5-way) however good the
    embedding; the default learns the scale, so perfectly separated classes reach p > 0.9."""
    g = torch.Generator().manual_seed(0)
    centres = torch.eye(5, 8)
    sx, sy = centres, torch.arange(5)
    qx, qy = centres + 0.01 * torch.randn(5, 8, generator=g), torch.arange(5)
    m = MatchingNet(None)
    opt = torch.optim.Adam(m.parameters(), 0.1)
    for _ in range(100):
        loss = m.loss(_episode(sx, sy, qx, qy)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert m.fit(sx, sy).scores(qx).exp().max(-1).values.min() > 0.9
