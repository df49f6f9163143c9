"""Same/different pairs and triplets for Siamese training, drawn reproducibly from a dataset.

``PairSampler.pairs(i, n)`` and ``TripletSampler.triplets(i, n)`` are pure functions of
``(seed, i)`` like :class:`fewshot.tasks.episodes.EpisodeSampler`. Pairs are balanced: half share a
class (two distinct items of one class), half do not (one item of each of two distinct classes);
classes are drawn uniformly, so large classes do not dominate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data.dataset import LabeledDataset


@dataclass
class PairBatch:
    """``x1, x2 [B, ...]`` items, ``same [B]`` float (1 = same class), ``idx1, idx2 [B]`` item indices."""

    x1: torch.Tensor
    x2: torch.Tensor
    same: torch.Tensor
    idx1: torch.Tensor
    idx2: torch.Tensor

    def to(self, device: torch.device | str) -> "PairBatch":
        return PairBatch(self.x1.to(device), self.x2.to(device), self.same.to(device), self.idx1, self.idx2)


@dataclass
class TripletBatch:
    """``anchor, positive, negative [B, ...]`` (anchor and positive share a class) and their item indices."""

    anchor: torch.Tensor
    positive: torch.Tensor
    negative: torch.Tensor
    idx: torch.Tensor  # [B, 3]


class _ClassSampler:
    def __init__(self, dataset: LabeledDataset, seed: int = 0, classes: list[int] | None = None):
        self.dataset, self.seed = dataset, seed
        by_class = dataset.indices_by_class()
        pool = range(dataset.num_classes) if classes is None else classes
        self.by_class = by_class
        self.multi = np.array([c for c in pool if len(by_class[c]) >= 2], dtype=np.int64)
        self.nonempty = np.array([c for c in pool if len(by_class[c]) >= 1], dtype=np.int64)
        if len(self.multi) < 1 or len(self.nonempty) < 2:
            raise ValueError(
                f"pairs need at least one class with 2 items and 2 non-empty classes; this dataset has "
                f"{len(self.multi)} classes with ≥2 items and {len(self.nonempty)} non-empty classes"
            )

    def _positive(self, rng: np.random.Generator) -> tuple[int, int]:
        c = rng.choice(self.multi)
        a, b = rng.choice(self.by_class[c], size=2, replace=False)
        return int(a), int(b)

    def _negative(self, rng: np.random.Generator, anchor_class: int | None = None) -> tuple[int, int]:
        if anchor_class is None:
            c1, c2 = rng.choice(self.nonempty, size=2, replace=False)
        else:
            c1 = anchor_class
            c2 = rng.choice(self.nonempty[self.nonempty != anchor_class])
        return int(rng.choice(self.by_class[c1])), int(rng.choice(self.by_class[c2]))


class PairSampler(_ClassSampler):
    """Balanced same/different pairs from ``dataset`` (optionally only from ``classes``).

    ``pairs(i, n)``: batch ``i`` of ``n`` pairs, the first ``ceil(n/2)`` same-class, shuffled.
    """

    def pair_indices(self, index: int, num_pairs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, index])
        n_pos = (num_pairs + 1) // 2
        rows = [self._positive(rng) + (1,) for _ in range(n_pos)]
        rows += [self._negative(rng) + (0,) for _ in range(num_pairs - n_pos)]
        arr = np.array(rows, dtype=np.int64)[rng.permutation(num_pairs)]
        return arr[:, 0], arr[:, 1], arr[:, 2]

    def pairs(self, index: int, num_pairs: int = 64) -> PairBatch:
        i1, i2, same = (torch.from_numpy(a) for a in self.pair_indices(index, num_pairs))
        return PairBatch(self.dataset.items(i1), self.dataset.items(i2), same.float(), i1, i2)


class TripletSampler(_ClassSampler):
    """Random triplets (anchor, positive of its class, negative of another class)."""

    def triplet_indices(self, index: int, num_triplets: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, index])
        rows = []
        y = self.dataset.y.numpy()
        for _ in range(num_triplets):
            a, p = self._positive(rng)
            _, n = self._negative(rng, anchor_class=int(y[a]))
            rows.append((a, p, n))
        return np.array(rows, dtype=np.int64)

    def triplets(self, index: int, num_triplets: int = 64) -> TripletBatch:
        idx = torch.from_numpy(self.triplet_indices(index, num_triplets))
        items = self.dataset.items(idx.reshape(-1)).reshape(num_triplets, 3, *self.dataset.item_shape)
        return TripletBatch(items[:, 0], items[:, 1], items[:, 2], idx)


def label_pairs(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every unordered pair ``i < j`` of a labelled batch: ``(i [P], j [P], same [P] float)``.

    Within an episode this enumerates all pairs; Siamese losses then weight the same-class and
    different-class pairs equally (balanced without sampling).
    """
    n = labels.shape[0]
    i, j = torch.triu_indices(n, n, offset=1, device=labels.device)
    return i, j, (labels[i] == labels[j]).float()
