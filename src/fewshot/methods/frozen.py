"""Few-shot classification on frozen pretrained features (no training run).

* Nearest centroid on L2-normalised features (cosine to the class prototype).
* SimpleShot (Wang et al. 2019, "SimpleShot: Revisiting Nearest-Neighbor Classification for
  Few-Shot Learning"): subtract the mean feature of *base* classes, then L2-normalise ("CL2N").
* A logistic-regression head fitted on the support set (Tian et al. 2020, "Rethinking Few-Shot
  Image Classification: a Good Embedding Is All You Need").
* The power transform (Hu et al. 2021, "Leveraging the Feature Distribution in Transfer-based
  Few-Shot Learning", PT-MAP): ``x ** 0.5`` of non-negative (ReLU) features makes their
  distribution closer to Gaussian before normalisation.
* Transductive soft k-means (Ren et al. 2018, "Meta-Learning for Semi-Supervised Few-Shot
  Classification"): prototypes refined with the task's unlabelled queries, on power-transformed,
  task-centred, L2-normalised features; the best training-free head measured on MPEG-7
  (benchmarks/results/photos.md).
* Open-set rejection by the cosine distance to the nearest prototype, with a threshold calibrated
  on held-out classes.

All functions take features ``[N, D]`` (from :class:`fewshot.engine.features.ImageEmbedder` or any
encoder) and episode labels ``0..way-1``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..nn.distances import class_means


def normalize_features(x: torch.Tensor, mean: torch.Tensor | None = None) -> torch.Tensor:
    """``[N, D]`` -> centred (when ``mean [D]`` is given) and L2-normalised ``[N, D]``."""
    if mean is not None:
        x = x - mean
    return F.normalize(x, dim=-1)


def centroid_scores(support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor,
                    mean: torch.Tensor | None = None) -> torch.Tensor:
    """Cosine similarity of each query to each class prototype ``[Q, way]``.

    Features are centred on ``mean`` (SimpleShot CL2N; ``None``: plain L2N) and normalised; the
    prototype is the mean normalised support feature, normalised again.
    """
    s, q = normalize_features(support, mean), normalize_features(query, mean)
    return q @ F.normalize(class_means(s, support_y), dim=-1).T


def power_transform(x: torch.Tensor, beta: float = 0.5) -> torch.Tensor:
    """``[N, D]`` non-negative features (e.g. ReLU6-pooled) -> ``x ** beta``, L2-normalised (PT-MAP).

    Raises ``ValueError`` on negative features: the transform is defined for ReLU outputs only.
    """
    if not 0 < beta <= 1:
        raise ValueError(f"beta must be in (0, 1]; got {beta}")
    if x.numel() and x.min() < 0:
        raise ValueError("the power transform needs non-negative features (ReLU outputs); these have negative "
                         "values: pass power=None (-p power=none) for features of other encoders")
    return F.normalize(x ** beta, dim=-1)


def soft_kmeans_scores(support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor,
                       power: float | None = 0.5, iters: int = 10, temperature: float = 10.0) -> torch.Tensor:
    """Transductive scores ``[Q, way]``: cosine of each query to prototypes refined by soft k-means.

    Features are power-transformed (``power``; ``None``: skipped, for features that can be
    negative), centred on the task's mean (support and queries), L2-normalised; the prototypes
    start at the support means and are updated ``iters`` times with every query weighted by its
    softmax(``temperature`` x cosine) assignment (Ren et al. 2018). Unlike PT-MAP's Sinkhorn step,
    this assumes nothing about how many queries each class has. Shapes: ``support [S, D]``,
    ``support_y [S]`` in ``0..way-1``, ``query [Q, D]``.
    """
    if iters < 0:
        raise ValueError(f"iters must be >= 0; got {iters}")
    s, q = (power_transform(support, power), power_transform(query, power)) if power is not None else (support, query)
    mean = torch.cat([s, q]).mean(0)
    s, q = normalize_features(s, mean), normalize_features(q, mean)
    onehot = F.one_hot(support_y.long()).to(s.dtype)  # [S, way]
    prototypes = F.normalize(class_means(s, support_y), dim=-1)
    for _ in range(iters):
        w = torch.softmax(temperature * q @ prototypes.T, dim=1)  # [Q, way]
        prototypes = F.normalize((onehot.T @ s + w.T @ q) / (onehot.sum(0) + w.sum(0))[:, None], dim=-1)
    return q @ prototypes.T


def logistic_scores(support: torch.Tensor, support_y: torch.Tensor, query: torch.Tensor,
                    mean: torch.Tensor | None = None, C: float = 10.0) -> torch.Tensor:
    """Class log-probabilities ``[Q, way]`` from an L2-regularised logistic regression on the support."""
    from sklearn.linear_model import LogisticRegression

    s, q = normalize_features(support, mean), normalize_features(query, mean)
    clf = LogisticRegression(C=C, max_iter=1000)
    clf.fit(s.numpy().astype(np.float64), support_y.numpy())
    return torch.from_numpy(clf.predict_log_proba(q.numpy().astype(np.float64))).float()


def unknown_score(scores: torch.Tensor) -> torch.Tensor:
    """Open-set score ``[Q]`` from cosine scores ``[Q, way]``: distance to the nearest prototype
    (``1 - max cosine``); higher means more likely an unknown class."""
    return 1 - scores.max(dim=1).values


def auroc(known: np.ndarray, unknown: np.ndarray) -> float:
    """Area under the ROC curve for separating ``unknown`` (positives) from ``known`` by score:
    the probability that a random unknown scores higher than a random known (ties count half)."""
    known, unknown = np.asarray(known, dtype=np.float64), np.asarray(unknown, dtype=np.float64)
    if known.size == 0 or unknown.size == 0:
        raise ValueError("AUROC needs at least one known and one unknown score")
    allv = np.concatenate([known, unknown])
    order = allv.argsort(kind="mergesort")
    ranks = np.empty(len(allv))
    sorted_v = allv[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_v, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1
    ranks[order] = np.repeat(avg, counts)
    r_unknown = ranks[len(known):].sum()
    return float((r_unknown - unknown.size * (unknown.size + 1) / 2) / (known.size * unknown.size))


def calibrate_threshold(known: np.ndarray, target_known_accept: float = 0.95) -> float:
    """The unknown-score threshold that accepts ``target_known_accept`` of known-class queries
    (measured on held-out classes): queries scoring above it are rejected as unknown."""
    if not 0 < target_known_accept <= 1:
        raise ValueError(f"target_known_accept must be in (0, 1]; got {target_known_accept}")
    return float(np.quantile(np.asarray(known, dtype=np.float64), target_known_accept))
