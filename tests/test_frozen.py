"""Frozen-feature heads: centring, prototypes, logistic head, open-set scores and AUROC."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fewshot.methods.frozen import (auroc, calibrate_threshold, centroid_scores, logistic_scores, normalize_features,
                                    unknown_score)


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
