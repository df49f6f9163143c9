"""Test-time augmentation around a trained method: support sets enlarged (any method) or every
image embedded as the mean over fixed views (embedding methods)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..data.augment import Augmenter, View
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


class TestTimeAugmentation(FewShotMethod):
    """Wrap ``method`` so that every image, support and query alike, is embedded as the mean of its
    embeddings over fixed ``views`` (e.g. :func:`fewshot.data.augment.tta_views`), ``[B, ...] -> [B, D]``.

    Deterministic (the views are fixed maps). Only for methods that see items through their
    embeddings (``embedding_only``: protonet, matching (FCE too: it works on the embeddings), an ensemble of such runs, ...);
    an evaluation over a task set still embeds each distinct item once, at ``len(views)`` times the cost.
    """

    __test__ = False  # not a pytest class, whatever its name
    embedding_only = True

    def __init__(self, method: FewShotMethod, views: Sequence[View]):
        super().__init__(None)
        if not method.embedding_only:
            raise ValueError(f"test-time augmentation averages embeddings, and {getattr(method, 'name', type(method).__name__)} "
                             "does not see its items only through them (it adapts on the images): use it with protonet, "
                             "matching, simpleshot, ..., or enlarge the support set with AugmentedSupport instead")
        if not views:
            raise ValueError("test-time augmentation needs at least one view")
        self.method, self.views = method, list(views)
        self.fit_needs_grad = method.fit_needs_grad  # type: ignore[misc]

    def config(self) -> dict:
        raise TypeError("TestTimeAugmentation is an evaluation wrapper, not a registered method: checkpoint the wrapped .method")

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.method.embed(view(x)) for view in self.views]).mean(0)

    def fit_embeddings(self, support_emb: torch.Tensor, support_y: torch.Tensor) -> "TestTimeAugmentation":
        self.method.fit_embeddings(support_emb, support_y)
        self.task_way = self.method.task_way
        return self

    def scores_embeddings(self, query_emb: torch.Tensor) -> torch.Tensor:
        return self.method.scores_embeddings(query_emb)

    def decide(self, scores: torch.Tensor, threshold: float | None = None) -> torch.Tensor:
        return self.method.decide(scores, threshold)
