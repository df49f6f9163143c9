"""Siamese networks: a twin encoder trained on same/different pairs or triplets.

Objectives (``objective=``):

* ``bce`` — pair classification (Koch et al. 2015): a learned head on ``|f(a) - f(b)|`` (``head_type="l1"``)
  or on ``[f(a), f(b)]`` (``head_type="concat"``) gives the logit of "same class"; binary cross-entropy.
* ``contrastive`` — Hadsell, Chopra & LeCun (2006) on the euclidean distance ``d = ||f(a) - f(b)||``.
  Convention here: ``same = 1`` for a same-class pair, and
  ``L = same · d²/2 + (1 - same) · max(0, margin - d)²/2``.
  Hadsell et al. write it with ``Y = 0`` for similar pairs (``Y = 1 - same``); some books print the
  formula with the roles of ``Y`` swapped, which pulls different classes together — not this.
* ``triplet`` — ``max(0, d(a, p) - d(a, n) + margin)`` (Schroff et al. 2015) with ``mining`` =
  ``random`` (one random negative per anchor-positive pair), ``batch_hard`` (per anchor its
  farthest positive and nearest negative, Hermans et al. 2017) or ``semi_hard`` (per
  anchor-positive pair the nearest negative farther than the positive; if there is none, the
  farthest negative — FaceNet / TensorFlow-addons' convention).

Trained on episodes: every item of an episode (support and query) is used, with all pairs weighted so
that same-class and different-class pairs count equally (or triplets mined within the episode).
Few-shot prediction: a query's score for a class is the mean (or max, ``aggregate="max"``) of its
similarity to that class's support items — the pair logit (``bce``) or minus the distance.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..tasks.episodes import Episode
from ..tasks.pairs import label_pairs
from .base import FewShotMethod, LossOutput, check_support

OBJECTIVES = ("bce", "contrastive", "triplet")
HEADS = ("l1", "concat")
MININGS = ("random", "batch_hard", "semi_hard")
_EPS = 1e-12


# ----------------------------------------------------------------------------- losses
def pair_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distance ``[B]`` between rows of ``a, b [B, D]`` (finite gradient at 0)."""
    return (a - b).pow(2).sum(-1).add(_EPS).sqrt()


def cdist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances ``[A, B]`` between ``a [A, D]`` and ``b [B, D]``."""
    return pair_distance(a.unsqueeze(1), b.unsqueeze(0))


def contrastive_loss(distance: torch.Tensor, same: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Per-pair contrastive loss ``[B]``: ``same·d²/2 + (1-same)·max(0, margin-d)²/2`` (``same = 1``: same class)."""
    same = same.to(distance.dtype)
    return same * 0.5 * distance.pow(2) + (1 - same) * 0.5 * F.relu(margin - distance).pow(2)


def triplet_loss(d_ap: torch.Tensor, d_an: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Per-triplet hinge ``max(0, d(a,p) - d(a,n) + margin)`` ``[T]``."""
    return F.relu(d_ap - d_an + margin)


def balanced_mean(per_pair: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
    """Mean over same-class pairs and mean over different-class pairs, averaged with equal weight."""
    pos, neg = same > 0.5, same <= 0.5
    parts = [per_pair[m].mean() for m in (pos, neg) if m.any()]
    if not parts:
        raise ValueError("no pairs to average")
    return torch.stack(parts).mean()


def mine_triplets(dist: torch.Tensor, labels: torch.Tensor, strategy: str = "batch_hard",
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Choose triplets in a labelled batch ``labels [N]`` from its distance matrix ``dist [N, N]``.

    Returns index tensors ``(anchor, positive, negative)`` of equal length (no gradient flows
    through the choice; index ``dist`` with them to get differentiable distances).
    """
    if strategy not in MININGS:
        raise ValueError(f"unknown mining {strategy!r}; choose from {', '.join(MININGS)}")
    n = labels.shape[0]
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(n, dtype=torch.bool, device=labels.device)
    pos_mask, neg_mask = same & ~eye, ~same
    d = dist.detach()
    if strategy == "batch_hard":
        anchors = torch.nonzero(pos_mask.any(1) & neg_mask.any(1)).flatten()
        p = d.masked_fill(~pos_mask, float("-inf"))[anchors].argmax(1)
        neg = d.masked_fill(~neg_mask, float("inf"))[anchors].argmin(1)
        return anchors, p, neg
    a, p = torch.nonzero(pos_mask & neg_mask.any(1, keepdim=True), as_tuple=True)
    if strategy == "random":
        weights = neg_mask[a].to(d.dtype)  # uniform over each anchor's negatives
        neg = torch.multinomial(weights, 1, generator=generator).flatten()
        return a, p, neg
    # semi-hard: nearest negative with d(a,n) > d(a,p); else the farthest negative
    d_ap = d[a, p][:, None]
    d_an = d[a]  # [T, N]
    valid = neg_mask[a]
    outside = valid & (d_an > d_ap)
    nearest_outside = d_an.masked_fill(~outside, float("inf")).argmin(1)
    farthest = d_an.masked_fill(~valid, float("-inf")).argmax(1)
    neg = torch.where(outside.any(1), nearest_outside, farthest)
    return a, p, neg


# ----------------------------------------------------------------------------- method
def _reset_parameters(module: nn.Module) -> None:
    for m in module.modules():
        if m is not module and hasattr(m, "reset_parameters"):
            m.reset_parameters()


class SiameseNet(FewShotMethod):
    """Twin encoders compared by a learned pair head (``bce``) or a euclidean distance.

    Args:
        backbone: the encoder ``[B, ...] -> [B, D]``.
        objective: ``bce`` | ``contrastive`` | ``triplet`` (see the module docstring).
        head_type: for ``bce``: ``l1`` (Koch: linear on ``|f(a) - f(b)|``) or ``concat`` (MLP on ``[f(a), f(b)]``).
        shared: one encoder for both inputs (True) or two separately initialised towers (False).
        margin: contrastive / triplet margin (in distance units).
        mining: triplet mining: ``random`` | ``batch_hard`` | ``semi_hard``.
        aggregate: ``mean`` or ``max`` similarity over a class's support items.
        hidden: hidden units of the ``concat`` head.
        feature_dim: ``D``; set by :meth:`setup` from the data when None (needed by the ``bce`` heads).
    """

    name = "siamese"

    renamed_params = {"embedding_dim": "feature_dim", "head": "head_type"}
    test_options = {"shared": False}  # the harder case: two towers

    def __init__(self, backbone: nn.Module | None = None, objective: Literal["bce", "contrastive", "triplet"] = "bce",
                 head_type: Literal["l1", "concat"] = "l1", shared: bool = True, margin: float = 1.0,
                 mining: Literal["random", "batch_hard", "semi_hard"] = "batch_hard",
                 aggregate: Literal["mean", "max"] = "mean", hidden: int = 128, feature_dim: int | None = None):
        super().__init__(backbone)
        for name, value, choices in (("objective", objective, OBJECTIVES), ("head_type", head_type, HEADS),
                                     ("mining", mining, MININGS), ("aggregate", aggregate, ("mean", "max"))):
            if value not in choices:
                raise ValueError(f"unknown {name} {value!r}; choose from {', '.join(choices)}")
        if margin <= 0:
            raise ValueError(f"margin must be positive, got {margin}")
        self.objective, self.head_type, self.shared, self.margin = objective, head_type, shared, margin
        self.mining, self.aggregate, self.hidden = mining, aggregate, hidden
        self.feature_dim = feature_dim
        self.tower2: nn.Module | None = None
        if not self.shared:
            if backbone is None:
                raise ValueError("shared=False needs a backbone to copy as the second tower")
            self.tower2 = copy.deepcopy(backbone)
            _reset_parameters(self.tower2)  # independent initialisation: two genuinely separate towers
        self.head: nn.Module | None = None
        if feature_dim is not None:
            self._build_head(feature_dim)
        self.support_emb: torch.Tensor | None = None
        self.support_y: torch.Tensor | None = None

    def _build_head(self, dim: int) -> None:
        self.feature_dim = int(dim)
        if self.objective != "bce":
            return
        if self.head_type == "l1":
            self.head = nn.Linear(dim, 1)
        else:
            self.head = nn.Sequential(nn.Linear(2 * dim, self.hidden), nn.ReLU(inplace=True), nn.Linear(self.hidden, 1))

    def setup(self, dataset) -> None:
        if self.feature_dim is None:
            from .metric import feature_dim_for

            self._build_head(feature_dim_for(self.backbone, tuple(dataset.item_shape)))

    # ------------------------------------------------------------------ encoders
    def embed_second(self, x: torch.Tensor) -> torch.Tensor:
        """Embedding by the second tower (the same network when ``shared``)."""
        if self.tower2 is None:
            return self.embed(x)
        return self.tower2(x)

    def _require_head(self) -> nn.Module:
        if self.head is None:
            raise RuntimeError("the pair head is not built: pass feature_dim=D or call setup(dataset) first")
        return self.head

    def pair_similarity(self, za: torch.Tensor, zb: torch.Tensor) -> torch.Tensor:
        """Similarity of embedded pairs ``za, zb [..., D]`` -> ``[...]``: the pair logit (bce) or ``-distance``."""
        if self.objective != "bce":
            return -pair_distance(za, zb)
        head = self._require_head()
        if self.head_type == "l1":
            return head((za - zb).abs()).squeeze(-1)
        za, zb = torch.broadcast_tensors(za, zb)
        return head(torch.cat([za, zb], -1)).squeeze(-1)

    def pair_scores(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """Similarity ``[B]`` of raw pairs (logit of "same" for bce, ``-distance`` otherwise)."""
        return self.pair_similarity(self.embed(x1), self.embed_second(x2))

    def pair_loss(self, x1: torch.Tensor, x2: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
        """Mean loss of a batch of pairs (``bce`` or ``contrastive``), ``same [B]`` in {0, 1}."""
        z1, z2 = self.embed(x1), self.embed_second(x2)
        return self._pair_objective(z1, z2, same).mean()

    def _pair_objective(self, z1: torch.Tensor, z2: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
        if self.objective == "bce":
            return F.binary_cross_entropy_with_logits(self.pair_similarity(z1, z2), same.float(), reduction="none")
        if self.objective == "contrastive":
            return contrastive_loss(pair_distance(z1, z2), same, self.margin)
        raise ValueError("pair losses are for objective 'bce' or 'contrastive'; objective 'triplet' trains on episodes (loss)")

    # ------------------------------------------------------------------ few-shot API
    def class_scores(self, query_emb: torch.Tensor, support_emb: torch.Tensor, support_y: torch.Tensor, way: int) -> torch.Tensor:
        """``[Q, way]``: per class, mean or max similarity of each query to its support items."""
        sim = self.pair_similarity(query_emb.unsqueeze(1), support_emb.unsqueeze(0))  # [Q, S]
        one_hot = F.one_hot(support_y, way).to(sim.dtype)  # [S, way]
        if self.aggregate == "mean":
            return sim @ one_hot / one_hot.sum(0)
        masked = sim.unsqueeze(-1).masked_fill(one_hot.unsqueeze(0) == 0, float("-inf"))  # [Q, S, way]
        return masked.max(1).values

    def fit(self, support_x: torch.Tensor, support_y: torch.Tensor) -> "SiameseNet":
        self.task_way = check_support(support_x, support_y)
        self.support_emb = self.embed_second(support_x)
        self.support_y = support_y.long()
        return self

    def scores(self, query_x: torch.Tensor) -> torch.Tensor:
        if self.support_emb is None or self.task_way is None:
            raise RuntimeError("call fit(support_x, support_y) before scoring queries")
        return self.class_scores(self.embed(query_x), self.support_emb, self.support_y, self.task_way)

    def loss(self, episode: Episode) -> LossOutput:
        """Pair/triplet loss over all items of the episode; scores are the few-shot query scores."""
        n_s = episode.support_x.shape[0]
        x = torch.cat([episode.support_x, episode.query_x])
        y = torch.cat([episode.support_y, episode.query_y])
        z1 = self.embed(x)
        z2 = z1 if self.tower2 is None else self.tower2(x)
        if self.objective == "triplet":
            dist = cdist(z1, z1)
            a, p, n = mine_triplets(dist, y, self.mining)
            if a.numel() == 0:
                raise ValueError("no triplets in this episode: use at least 2 classes and 2 items per class (shot + query ≥ 2)")
            loss = triplet_loss(dist[a, p], dist[a, n], self.margin).mean()
        else:
            i, j, same = label_pairs(y)
            loss = balanced_mean(self._pair_objective(z1[i], z2[j], same), same)
        with torch.no_grad():
            scores = self.class_scores(z1[n_s:], z2[:n_s], episode.support_y, episode.way)
        return LossOutput(loss, scores)
