"""Support-set augmentation around any method (test-time: each support set enlarged)."""

from __future__ import annotations

import torch

from ..data.augment import Augmenter
from .base import FewShotMethod


class AugmentedSupport(FewShotMethod):
    """Wrap ``method`` so that ``fit`` sees each support set enlarged ``copies`` times by ``augmenter``.

    The ``i``-th call to ``fit`` is augmented with seed ``(seed, i)``: an evaluation over a task set
    repeats exactly. Queries are never augmented.
    """

    def __init__(self, method: FewShotMethod, augmenter: Augmenter, copies: int = 5, seed: int = 0):
        super().__init__(None)
        self.method, self.augmenter, self.copies, self.seed = method, augmenter, copies, seed
        self.fit_needs_grad = method.fit_needs_grad  # type: ignore[misc]
        self.calls = 0

    def config(self) -> dict:
        raise TypeError("AugmentedSupport is an evaluation wrapper, not a registered method: checkpoint the wrapped .method")

    def fit(self, support_x: torch.Tensor, support_y: torch.Tensor) -> "AugmentedSupport":
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.calls)
        self.calls += 1
        x, y = self.augmenter.expand(support_x, support_y, self.copies, g)
        self.method.fit(x, y)
        self.task_way = self.method.task_way
        return self

    def scores(self, query_x: torch.Tensor) -> torch.Tensor:
        return self.method.scores(query_x)
