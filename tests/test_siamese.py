"""Siamese networks: pair/triplet losses on hand-computed cases, margins, miners, samplers, scoring."""

from __future__ import annotations

import math

import pytest
import torch

from fewshot.nn.backbones import MLP, Identity
from fewshot.tasks.episodes import Episode, EpisodeSampler
from fewshot.methods import SiameseNet, build_method
from fewshot.methods.siamese import balanced_mean, contrastive_loss, mine_triplets, triplet_loss
from fewshot.tasks.pairs import PairSampler, TripletSampler, label_pairs


def test_contrastive_loss_hand_computed_and_convention():
    d = torch.tensor([0.0, 0.5, 0.5, 2.0, 0.25])
    same = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0])
    # same: d²/2 ; different: max(0, m - d)²/2 with m = 1
    torch.testing.assert_close(contrastive_loss(d, same, margin=1.0), torch.tensor([0.0, 0.125, 0.125, 0.0, 0.28125]))
    # same-class pairs are pulled together (loss grows with d), different ones pushed to the margin
    assert contrastive_loss(torch.tensor([2.0]), torch.tensor([1.0])) > contrastive_loss(torch.tensor([0.1]), torch.tensor([1.0]))


def test_contrastive_margin_behaviour():
    d = torch.tensor([0.2, 0.9, 1.0, 3.0], requires_grad=True)
    loss = contrastive_loss(d, torch.zeros(4), margin=1.0)
    loss.sum().backward()
    assert loss[2:].tolist() == [0.0, 0.0]  # at or beyond the margin: no loss, no gradient
    assert d.grad[2:].tolist() == [0.0, 0.0]
    assert (d.grad[:2] < 0).all()  # inside the margin: gradient descent increases the distance
    assert contrastive_loss(torch.tensor([3.0]), torch.zeros(1), margin=4.0).item() == pytest.approx(0.5)


def test_triplet_loss_hand_computed_and_margin():
    d_ap = torch.tensor([1.0, 1.0, 1.0, 2.0])
    d_an = torch.tensor([1.5, 2.0, 3.0, 1.0])
    torch.testing.assert_close(triplet_loss(d_ap, d_an, margin=1.0), torch.tensor([0.5, 0.0, 0.0, 2.0]))
    torch.testing.assert_close(triplet_loss(d_ap, d_an, margin=0.2), torch.tensor([0.0, 0.0, 0.0, 1.2]))


def _toy_distances():
    # items 0,1,2 class 0; items 3,4 class 1; points on a line
    pos = torch.tensor([0.0, 1.0, 3.0, 2.5, 6.0])
    return (pos[:, None] - pos[None, :]).abs(), torch.tensor([0, 0, 0, 1, 1])


def test_batch_hard_mining_picks_farthest_positive_and_nearest_negative():
    dist, y = _toy_distances()
    a, p, n = mine_triplets(dist, y, "batch_hard")
    assert a.tolist() == [0, 1, 2, 3, 4]
    assert p.tolist() == [2, 2, 0, 4, 3]
    assert n.tolist() == [3, 3, 3, 2, 2]


def test_semi_hard_mining_and_its_fallback():
    dist, y = _toy_distances()
    a, p, n = mine_triplets(dist, y, "semi_hard")
    got = {(int(i), int(j)): int(k) for i, j, k in zip(a, p, n)}
    assert got[(0, 1)] == 3  # d_ap=1: negatives at 2.5 and 6 are farther; nearest is item 3
    assert got[(0, 2)] == 4  # d_ap=3: only item 4 (6.0) is farther than the positive
    assert got[(2, 0)] == 4  # d_ap=3, negatives at 0.5 and 3: none farther -> farthest negative (3.0)
    assert got[(3, 4)] == 0  # d_ap=3.5, negatives at 2.5, 1.5, 0.5 -> farthest: item 0
    assert len(got) == 8


def test_random_mining_gives_valid_triplets_reproducibly():
    dist, y = _toy_distances()
    a, p, n = mine_triplets(dist, y, "random", generator=torch.Generator().manual_seed(0))
    assert (y[a] == y[p]).all() and (a != p).all() and (y[a] != y[n]).all()
    a2, p2, n2 = mine_triplets(dist, y, "random", generator=torch.Generator().manual_seed(0))
    assert n.tolist() == n2.tolist()


def test_label_pairs_and_balanced_mean():
    i, j, same = label_pairs(torch.tensor([0, 0, 1, 1, 1]))
    assert len(i) == 10 and int(same.sum()) == 4 and (i < j).all()
    # 1 positive with loss 4, 3 negatives with loss 0 -> 0.5 * 4 + 0.5 * 0
    assert balanced_mean(torch.tensor([4.0, 0.0, 0.0, 0.0]), torch.tensor([1.0, 0.0, 0.0, 0.0])).item() == 2.0


def test_pair_sampler_is_balanced_valid_and_deterministic(blobs):
    s = PairSampler(blobs, seed=3)
    b = s.pairs(0, 64)
    assert b.x1.shape == (64, 1, 8, 8) and b.same.sum().item() == 32
    y = blobs.y
    assert ((y[b.idx1] == y[b.idx2]).float() == b.same).all()
    assert (b.idx1 != b.idx2).all()
    assert torch.equal(b.idx1, s.pairs(0, 64).idx1) and not torch.equal(b.idx1, s.pairs(1, 64).idx1)
    assert not torch.equal(b.idx1, PairSampler(blobs, seed=4).pairs(0, 64).idx1)


def test_triplet_sampler(blobs):
    t = TripletSampler(blobs, seed=0).triplets(5, 32)
    y = blobs.y
    a, p, n = t.idx.T
    assert (y[a] == y[p]).all() and (a != p).all() and (y[a] != y[n]).all()
    assert t.anchor.shape == (32, 1, 8, 8)


def test_class_scores_mean_and_max_hand_computed():
    support = torch.tensor([[0.0], [2.0], [10.0]])
    labels = torch.tensor([0, 0, 1])
    q = torch.tensor([[0.0]])
    mean = SiameseNet(Identity(), objective="contrastive", aggregate="mean").fit(support, labels).scores(q)
    mx = SiameseNet(Identity(), objective="contrastive", aggregate="max").fit(support, labels).scores(q)
    torch.testing.assert_close(mean, torch.tensor([[-1.0, -10.0]]), atol=1e-4, rtol=0)
    torch.testing.assert_close(mx, torch.tensor([[0.0, -10.0]]), atol=1e-4, rtol=0)


def test_koch_head_is_symmetric_and_bce_matches_formula():
    torch.manual_seed(0)
    m = SiameseNet(MLP(4, (8,)), objective="bce", head_type="l1", feature_dim=8)
    a, b = torch.randn(5, 4), torch.randn(5, 4)
    torch.testing.assert_close(m.pair_scores(a, b), m.pair_scores(b, a))
    same = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0])
    s = m.pair_scores(a, b)
    expected = -(same * torch.sigmoid(s).log() + (1 - same) * (1 - torch.sigmoid(s)).log()).mean()
    torch.testing.assert_close(m.pair_loss(a, b, same), expected)


def test_separate_towers_are_separately_initialised_and_round_trip(tmp_path):
    from fewshot.engine.checkpoint import load_checkpoint, method_spec, save_checkpoint

    torch.manual_seed(0)
    m = build_method("siamese", MLP(4, (8,)), head_type="concat", shared=False, feature_dim=8)
    assert not torch.equal(m.backbone.net[1].weight, m.tower2.net[1].weight)
    save_checkpoint(tmp_path, "best", m, method_spec(m, ("mlp", {"in_features": 4, "sizes": [8]})))
    m2, _ = load_checkpoint(tmp_path)
    x1, x2 = torch.randn(3, 4), torch.randn(3, 4)
    torch.testing.assert_close(m.pair_scores(x1, x2), m2.pair_scores(x1, x2))


def test_missing_head_and_bad_options_fail_clearly():
    with pytest.raises(RuntimeError, match="feature_dim"):
        SiameseNet(Identity(), objective="bce").fit(torch.randn(2, 3), torch.tensor([0, 1])).scores(torch.randn(1, 3))
    with pytest.raises(ValueError, match="objective"):
        SiameseNet(objective="hinge")
    with pytest.raises(ValueError, match="margin"):
        SiameseNet(objective="contrastive", margin=0)


@pytest.mark.parametrize("kw", [{"objective": "bce"}, {"objective": "contrastive"},
                                {"objective": "triplet", "mining": "batch_hard"}, {"objective": "triplet", "mining": "semi_hard"}])
def test_each_objective_learns_on_blobs(blobs, kw):
    torch.manual_seed(0)
    m = SiameseNet(MLP(64, (32, 16)), **kw)
    m.setup(blobs)
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    sampler = EpisodeSampler(blobs, 4, 1, 3, seed=0)
    losses, accs = [], []
    for i in range(40):
        out = m.loss(sampler.episode(i))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
        accs.append((out.scores.argmax(-1) == sampler.episode(i).query_y).float().mean().item())
    assert sum(losses[-10:]) < sum(losses[:10])
    assert sum(accs[-10:]) / 10 > 0.5  # chance is 0.25


def test_triplet_episode_without_positives_fails_clearly():
    ep = Episode(torch.randn(3, 2), torch.tensor([0, 1, 2]), torch.randn(0, 2), torch.zeros(0, dtype=torch.long),
                 torch.arange(3), torch.arange(3), torch.arange(0))
    with pytest.raises(ValueError, match="no triplets"):
        SiameseNet(Identity(), objective="triplet").loss(ep)


def test_pair_scores_of_contrastive_net_are_negative_distances():
    m = SiameseNet(Identity(), objective="contrastive")
    s = m.pair_scores(torch.tensor([[0.0, 0.0]]), torch.tensor([[3.0, 4.0]]))
    assert s.item() == pytest.approx(-5.0)
    assert math.isfinite(m.pair_scores(torch.zeros(1, 2), torch.zeros(1, 2)).item())
