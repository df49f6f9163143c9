"""Metric-based methods: embed, then compare queries with the support set."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..distances import DISTANCES, class_means, pairwise_logits
from ..episodes import Episode
from .base import FewShotMethod, LossOutput, check_support, register_method


@register_method("protonet")
class ProtoNet(FewShotMethod):
    """Prototypical networks (Snell et al. 2017): a query's logits are its negative distances
    to the class means (prototypes) of the embedded support set.

    Args:
        backbone: embedding network ``[B, ...] -> [B, D]``.
        distance: ``euclidean`` (squared, as in the paper), ``cosine`` or ``dot``.
        scale: multiplies the logits; for cosine a temperature of ~10 is needed to train well.
        learn_scale: make ``scale`` a learnable parameter (default: True for cosine).
    """

    def __init__(self, backbone: nn.Module | None = None, distance: str = "euclidean",
                 scale: float | None = None, learn_scale: bool | None = None):
        super().__init__(backbone)
        if distance not in DISTANCES:
            raise ValueError(f"unknown distance {distance!r}; choose from {', '.join(DISTANCES)}")
        self.distance = distance
        if scale is None:
            scale = 10.0 if distance == "cosine" else 1.0
        if learn_scale is None:
            learn_scale = distance == "cosine"
        self.learn_scale = learn_scale
        self.scale = nn.Parameter(torch.tensor(float(scale)), requires_grad=learn_scale)
        self.prototypes: torch.Tensor | None = None

    def config(self) -> dict:
        return {"distance": self.distance, "scale": self.scale.item(), "learn_scale": self.learn_scale}

    def fit(self, support_x: torch.Tensor, support_y: torch.Tensor) -> "ProtoNet":
        self.way = check_support(support_x, support_y)
        self.prototypes = class_means(self.embed(support_x), support_y, self.way)
        return self

    def _logits(self, query_emb: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        return self.scale * pairwise_logits(query_emb, prototypes, self.distance)

    def scores(self, query_x: torch.Tensor) -> torch.Tensor:
        if self.prototypes is None:
            raise RuntimeError("call fit(support_x, support_y) before scoring queries")
        return self._logits(self.embed(query_x), self.prototypes)

    def loss(self, episode: Episode) -> LossOutput:
        # One backbone pass over support and query together (BatchNorm sees the whole episode).
        n_s = episode.support_x.shape[0]
        z = self.embed(torch.cat([episode.support_x, episode.query_x]))
        protos = class_means(z[:n_s], episode.support_y, episode.way)
        scores = self._logits(z[n_s:], protos)
        return LossOutput(F.cross_entropy(scores, episode.query_y), scores)
