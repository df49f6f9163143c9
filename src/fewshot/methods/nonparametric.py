"""Non-parametric baselines: k-nearest-neighbour, 1-NN and nearest prototype.

They work on raw inputs (no backbone: items are flattened) or on any backbone's embeddings.
Nothing is learned from the support set beyond storing it, so they need no training; given a
backbone, ``fewshot train`` trains its embedding with the matching soft objective (NCA for kNN,
the ProtoNet loss for nearest prototype).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.distances import pairwise_logits
from ..tasks.episodes import Episode
from .base import FewShotMethod, LossOutput, check_support
from .metric import ProtoNet

KNN_DISTANCES = ("euclidean", "cosine")
_EPS = 1e-12


def _distance(query: torch.Tensor, keys: torch.Tensor, distance: str) -> torch.Tensor:
    """Distances ``[Q, K]``: euclidean (not squared) or cosine distance ``1 - cos``."""
    if distance == "euclidean":
        return (-pairwise_logits(query, keys, "euclidean")).clamp_min(0).sqrt()
    return 1.0 - pairwise_logits(query, keys, "cosine")


class KNN(FewShotMethod):
    """k-nearest-neighbour vote over the (embedded) support items.

    ``scores`` are the log of the vote shares ``[Q, way]``, so ``predict_proba`` returns the
    share of the ``k`` neighbours' (weighted) votes each class got. Ties go to the lower class
    index, as in scikit-learn's ``KNeighborsClassifier``.

    Args:
        backbone: embedding network, or None to compare flattened raw inputs.
        k: neighbours that vote (capped at the support size).
        distance: ``euclidean`` or ``cosine`` (``1 - cos``).
        weights: ``uniform`` votes or ``distance`` (``1/d``; an exact match takes the whole vote).
        temperature: scale of the soft-neighbour (NCA) training loss, used only with a backbone.
    """

    name = "knn"
    embedding_only = True

    def __init__(self, backbone: nn.Module | None = None, k: int = 1, distance: Literal["euclidean", "cosine"] = "euclidean",
                 weights: Literal["uniform", "distance"] = "uniform", temperature: float = 1.0):
        super().__init__(backbone)
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if distance not in KNN_DISTANCES:
            raise ValueError(f"unknown distance {distance!r}; choose from {', '.join(KNN_DISTANCES)}")
        if weights not in ("uniform", "distance"):
            raise ValueError(f"weights must be 'uniform' or 'distance', got {weights!r}")
        self.k, self.distance, self.weights, self.temperature = k, distance, weights, temperature
        self.support_emb: torch.Tensor | None = None
        self.support_y: torch.Tensor | None = None

    @classmethod
    def default_backbone(cls, item_shape: tuple[int, ...]) -> tuple[str, dict] | None:
        return None  # raw inputs; pass --backbone to compare embeddings

    def fit_embeddings(self, support_emb: torch.Tensor, support_y: torch.Tensor) -> "KNN":
        self.task_way = check_support(support_emb, support_y)
        self.support_emb = support_emb
        self.support_y = support_y.long()
        return self

    def votes(self, query_emb: torch.Tensor) -> torch.Tensor:
        """Vote shares ``[Q, way]`` (rows sum to 1) of the ``k`` nearest support items."""
        assert self.support_emb is not None and self.support_y is not None and self.task_way is not None
        d = _distance(query_emb, self.support_emb, self.distance)  # [Q, S]
        k = min(self.k, d.shape[1])
        # stable sort: among equidistant neighbours the earlier support item wins, like scikit-learn
        d_sorted, order = torch.sort(d, dim=1, stable=True)
        near_d, near = d_sorted[:, :k], order[:, :k]
        if self.weights == "uniform":
            w = torch.ones_like(near_d)
        else:
            exact = near_d <= _EPS
            w = torch.where(exact.any(1, keepdim=True), exact.to(near_d.dtype), 1.0 / near_d.clamp_min(_EPS))
        one_hot = F.one_hot(self.support_y[near], self.task_way).to(w.dtype)  # [Q, k, way]
        v = (w.unsqueeze(-1) * one_hot).sum(1)
        return v / v.sum(1, keepdim=True)

    def scores_embeddings(self, query_emb: torch.Tensor) -> torch.Tensor:
        if self.support_emb is None:
            raise RuntimeError("call fit(support_x, support_y) before scoring queries")
        return self.votes(query_emb).clamp_min(_EPS).log()

    def decide(self, scores: torch.Tensor, threshold: float | None = None) -> torch.Tensor:
        proba = scores.softmax(-1)
        pred = proba.argmax(-1)  # first maximum: ties go to the lower class index
        if threshold is not None:
            pred = torch.where(proba.max(-1).values >= threshold, pred, torch.full_like(pred, -1))
        return pred

    def loss(self, episode: Episode) -> LossOutput:
        """Soft nearest-neighbour (NCA) loss: ``p(c|q) ∝ Σ_{i: y_i=c} exp(-d(q, s_i) / T)``.

        The vote itself has no gradient; this is its differentiable relaxation, for training a backbone.
        """
        n_s = episode.support_x.shape[0]
        z = self.embed(torch.cat([episode.support_x, episode.query_x]))
        logits = -_distance(z[n_s:], z[:n_s], self.distance) / self.temperature  # [Q, S]
        mask = F.one_hot(episode.support_y, episode.way).T.bool()  # [way, S]
        per_class = logits.unsqueeze(1).masked_fill(~mask.unsqueeze(0), float("-inf")).logsumexp(-1)  # [Q, way]
        return LossOutput(F.cross_entropy(per_class, episode.query_y), per_class)


class OneNN(KNN):
    """The 1-nearest-neighbour classifier (Lake et al.'s pixel baseline without a backbone)."""

    name = "one_nn"
    aliases = ('1nn',)

    def __init__(self, backbone: nn.Module | None = None, distance: Literal["euclidean", "cosine"] = "euclidean",
                 temperature: float = 1.0):
        super().__init__(backbone, k=1, distance=distance, temperature=temperature)


class NearestPrototype(ProtoNet):
    """Nearest class mean of the (embedded) support items; raw inputs by default.

    With a backbone this is ProtoNet's classifier (and ``fewshot train`` trains it with ProtoNet's loss).
    """

    name = "nearest_prototype"

    def __init__(self, backbone: nn.Module | None = None, distance: Literal["euclidean", "cosine"] = "euclidean"):
        if distance not in KNN_DISTANCES:
            raise ValueError(f"unknown distance {distance!r}; choose from {', '.join(KNN_DISTANCES)}")
        super().__init__(backbone, distance=distance, scale=1.0, learn_scale=False)

    @classmethod
    def default_backbone(cls, item_shape: tuple[int, ...]) -> tuple[str, dict] | None:
        return None


class SoftKMeans(ProtoNet):
    """Transductive nearest prototype: prototypes refined with the task's unlabelled queries.

    Embeddings are power-transformed (``x ** power``, Hu et al. 2021, PT-MAP; for non-negative
    features such as ReLU-pooled ones), centred on the mean of the task's support and queries,
    L2-normalised; the prototypes start at the support means and take ``iters`` soft k-means
    steps (Ren et al. 2018), each query weighted by softmax(``temperature`` x cosine). Logits
    are 10 x cosine to the refined prototypes. The best training-free head on pretrained photo
    features (benchmarks/results/photos.md); a query's prediction depends on the other queries
    scored with it. With a backbone, ``fewshot train`` trains it with ProtoNet's cosine loss.

    Args:
        power: exponent of the power transform, or ``None`` for features that can be negative.
        iters: soft k-means refinements (0: the task-centred cosine centroid).
        temperature: sharpness of the query assignments.
    """

    name = "soft_kmeans"
    test_options = {"power": None}  # the contract test's MLP features can be negative

    def __init__(self, backbone: nn.Module | None = None, power: float | None = 0.5, iters: int = 10,
                 temperature: float = 10.0):
        if power is not None and not 0 < power <= 1:
            raise ValueError(f"power must be in (0, 1] or none; got {power}")
        if iters < 0:
            raise ValueError(f"iters must be >= 0; got {iters}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0; got {temperature}")
        super().__init__(backbone, distance="cosine", scale=10.0, learn_scale=False)
        self.power, self.iters, self.temperature = power, iters, temperature
        self._support: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def default_backbone(cls, item_shape: tuple[int, ...]) -> tuple[str, dict] | None:
        return None

    def fit_embeddings(self, support_emb: torch.Tensor, support_y: torch.Tensor) -> "SoftKMeans":
        super().fit_embeddings(support_emb, support_y)
        self._support = (support_emb, support_y.long())
        return self

    def scores_embeddings(self, query_emb: torch.Tensor) -> torch.Tensor:
        from .frozen import soft_kmeans_scores

        if self._support is None:
            raise RuntimeError("call fit(support_x, support_y) before scoring queries")
        s, y = self._support
        return self.scale * soft_kmeans_scores(s, y, query_emb, self.power, self.iters, self.temperature)
