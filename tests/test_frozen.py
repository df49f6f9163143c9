"""Frozen-feature heads: centring, prototypes, logistic head, open-set scores and AUROC."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fewshot.methods.frozen import (auroc, calibrate_threshold, centroid_scores, logistic_scores, normalize_features,
                                    power_transform, soft_kmeans_scores, unknown_score)


def _task(seed=0, way=4, shot=2, query=5, dim=16, offset=5.0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(way, dim, generator=g) + offset  # a shared offset: what centring removes
    sy, qy = torch.arange(way).repeat_interleave(shot), torch.arange(way).repeat_interleave(query)
    s = centres[sy] + 0.3 * torch.randn(len(sy), dim, generator=g)
    q = centres[qy] + 0.3 * torch.randn(len(qy), dim, generator=g)
    return s, sy, q, qy, torch.full((dim,), offset)


def test_normalisation():
    x = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    n = normalize_features(x, mean=torch.tensor([1.0, 0.0]))
    assert torch.allclose(n.norm(dim=1)[1:], torch.ones(2)) and torch.equal(n[0], torch.zeros(2))


def test_centring_is_subtracting_the_mean_first():
    s, sy, q, qy, mean = _task(0, offset=3.0)
    assert torch.allclose(centroid_scores(s, sy, q, mean=mean), centroid_scores(s - mean, sy, q - mean), atol=1e-6)
    assert (centroid_scores(s, sy, q, mean=mean).argmax(1) == qy).float().mean() > 0.9
    # Without centring a shared direction dominates the angle: here it flips the decision.
    support = torch.tensor([[10.0, 1.0], [12.0, -1.0]])
    query = torch.tensor([[12.0, 0.8]])  # plain cosine: class 0; centred on (11, 0): class 1
    plain = centroid_scores(support, torch.tensor([0, 1]), query).argmax(1)
    centred = centroid_scores(support, torch.tensor([0, 1]), query, mean=torch.tensor([11.0, 0.0])).argmax(1)
    assert plain.item() != centred.item()


def test_logistic_head_fits_support():
    s, sy, q, qy, mean = _task(1, offset=0.0)
    scores = logistic_scores(s, sy, q, mean=mean)
    assert scores.shape == (len(q), 4) and (scores.argmax(1) == qy).float().mean() > 0.9
    assert torch.allclose(scores.exp().sum(1), torch.ones(len(q)), atol=1e-4)


def test_auroc_and_threshold():
    assert auroc(np.array([0.1, 0.2]), np.array([0.8, 0.9])) == 1.0
    assert auroc(np.array([0.8, 0.9]), np.array([0.1, 0.2])) == 0.0
    assert auroc(np.array([0.5, 0.5]), np.array([0.5])) == 0.5  # ties count half
    rng = np.random.default_rng(0)
    k, u = rng.normal(0, 1, 2000), rng.normal(1, 1, 2000)
    from math import erf, sqrt
    assert abs(auroc(k, u) - 0.5 * (1 + erf(1 / 2))) < 0.02  # Phi(1/sqrt(2))
    thr = calibrate_threshold(k, 0.95)
    assert abs((k <= thr).mean() - 0.95) < 0.01
    with pytest.raises(ValueError):
        auroc(np.array([]), u)
    scores = torch.tensor([[0.9, 0.1], [0.2, 0.3]])
    assert torch.allclose(unknown_score(scores), torch.tensor([0.1, 0.7]))


def test_power_transform():
    x = torch.tensor([[4.0, 0.0, 9.0], [1.0, 1.0, 0.0]])
    expected = torch.nn.functional.normalize(torch.tensor([[2.0, 0.0, 3.0], [1.0, 1.0, 0.0]]), dim=1)
    assert torch.allclose(power_transform(x), expected)
    with pytest.raises(ValueError, match="non-negative"):
        power_transform(torch.tensor([[1.0, -0.5]]))
    with pytest.raises(ValueError, match="beta"):
        power_transform(x, beta=0.0)


def _skewed_task(seed=0, way=3, query=20, dim=32):
    """Positive, heavy-tailed (ReLU-like) features sharing a common component; the single support
    example of each class is noisier than its queries, so the queries improve the prototypes."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(dim, generator=g) * 2 + torch.rand(way, dim, generator=g) ** 3 * 2
    qy = torch.arange(way).repeat_interleave(query)
    q = centres[qy] * torch.exp(0.5 * torch.randn(len(qy), dim, generator=g))
    s = centres * torch.exp(torch.randn(way, dim, generator=g))
    return s, torch.arange(way), q, qy


def test_soft_kmeans_applies_the_power_transform_and_uses_the_queries():
    s, sy, q, qy = _skewed_task()
    scores = soft_kmeans_scores(s, sy, q)
    assert scores.shape == (len(q), 3)
    # the default is the power-transformed pipeline, not the raw features
    pt = power_transform
    assert torch.allclose(scores, soft_kmeans_scores(pt(s), sy, pt(q), power=None), atol=1e-5)
    assert not torch.allclose(scores, soft_kmeans_scores(s, sy, q, power=None), atol=1e-3)
    # iters=0 is the task-centred cosine centroid on the transformed features
    assert torch.allclose(soft_kmeans_scores(s, sy, q, iters=0),
                          centroid_scores(pt(s), sy, pt(q), mean=torch.cat([pt(s), pt(q)]).mean(0)), atol=1e-5)
    accs = {}
    for iters in (0, 10):
        accs[iters] = np.mean([(soft_kmeans_scores(*t[:3], iters=iters).argmax(1) == t[3]).float().mean().item()
                               for t in map(_skewed_task, range(20))])
    assert accs[10] > accs[0] + 0.1, accs  # refining with the queries helps on these tasks
    with pytest.raises(ValueError, match="non-negative"):
        soft_kmeans_scores(s - 1, sy, q)


def test_soft_kmeans_method_is_the_registered_head():
    from fewshot.methods import build_method

    s, sy, q, qy = _skewed_task(3)
    method = build_method("soft_kmeans", None, iters="5")
    scores = method.fit(s, sy).scores(q)
    torch.testing.assert_close(scores, 10 * soft_kmeans_scores(s, sy, q, iters=5))
    assert build_method("soft_kmeans", None, power="none").config()["power"] is None
    with pytest.raises(ValueError, match="power"):
        build_method("soft_kmeans", None, power="2")
