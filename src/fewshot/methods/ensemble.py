"""Several trained methods scored as one (an ensemble over seeds, backbones or families)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .base import FewShotMethod


class ScoreEnsemble(FewShotMethod):
    """Fit every member on the same support set; the scores ``[Q, way]`` are the sum of the
    members' ``log_softmax(scores)``, so the decision is the product of their probabilities.

    Members that see items only through their embeddings (``embedding_only``) keep that shortcut:
    :meth:`embed` concatenates the members' embeddings ``[B, D_1 + ... + D_M]``, so an evaluation over
    a task set embeds each distinct item once per member.
    """

    def __init__(self, methods: Sequence[FewShotMethod]):
        super().__init__(None)
        if not methods:
            raise ValueError("ScoreEnsemble needs at least one method")
        self.methods = nn.ModuleList(methods)
        self.fit_needs_grad = any(m.fit_needs_grad for m in methods)  # type: ignore[misc]
        self.embedding_only = all(m.embedding_only for m in methods)  # type: ignore[misc]
        self._dims: list[int] | None = None

    def config(self) -> dict:
        raise TypeError("ScoreEnsemble is an evaluation wrapper, not a registered method: checkpoint each of .methods")

    def fit(self, support_x: torch.Tensor, support_y: torch.Tensor) -> "ScoreEnsemble":
        for m in self.methods:
            m.fit(support_x, support_y)
        self.task_way = self.methods[0].task_way
        return self

    def scores(self, query_x: torch.Tensor) -> torch.Tensor:
        return sum(torch.log_softmax(m.scores(query_x), -1) for m in self.methods)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        parts = [m.embed(x) for m in self.methods]
        self._dims = [p.shape[1] for p in parts]
        return torch.cat(parts, 1)

    def _split(self, emb: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self._dims is None or sum(self._dims) != emb.shape[1]:
            raise ValueError(f"embeddings of width {emb.shape[1]} did not come from this ensemble's embed()")
        return emb.split(self._dims, 1)

    def fit_embeddings(self, support_emb: torch.Tensor, support_y: torch.Tensor) -> "ScoreEnsemble":
        for m, emb in zip(self.methods, self._split(support_emb)):
            m.fit_embeddings(emb, support_y)
        self.task_way = self.methods[0].task_way
        return self

    def scores_embeddings(self, query_emb: torch.Tensor) -> torch.Tensor:
        return sum(torch.log_softmax(m.scores_embeddings(emb), -1) for m, emb in zip(self.methods, self._split(query_emb)))
