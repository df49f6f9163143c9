"""Verification: are two items the same class? A pair score from a trained run and a threshold
calibrated on labelled pairs (signatures of known writers, faces of known people)."""

from __future__ import annotations

import numpy as np
import torch

from ..data.dataset import LabeledDataset
from ..methods.base import FewShotMethod
from ..tasks.pairs import PairSampler


@torch.no_grad()
def pair_score(method: FewShotMethod, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Similarity ``[B]`` of pairs ``a, b [B, ...]`` (higher = more alike): the method's own pair
    score when it has one (Siamese: the "same" logit, or ``-distance``), else the negative
    Euclidean distance of the embeddings."""
    if hasattr(method, "pair_scores"):
        return method.pair_scores(a, b)
    return -torch.linalg.vector_norm(method.embed(a) - method.embed(b), dim=-1)


def calibrate_threshold(scores: torch.Tensor, same: torch.Tensor) -> tuple[float, float]:
    """The threshold on ``scores [P]`` (``same`` when score ≥ threshold) with the best balanced
    accuracy on pairs labelled ``same [P]`` (0/1); returns ``(threshold, balanced accuracy)``."""
    s, y = scores.double().cpu().numpy(), same.cpu().numpy().astype(bool)
    if y.all() or not y.any():
        raise ValueError("calibration needs both same-class and different-class pairs (at least 2 classes, one with 2 items)")
    cand = np.unique(s)
    cuts = np.concatenate([[cand[0] - 1.0], (cand[1:] + cand[:-1]) / 2, [cand[-1] + 1.0]])
    tpr = ((s[y][None, :] >= cuts[:, None]).mean(1))
    tnr = ((s[~y][None, :] < cuts[:, None]).mean(1))
    best = int(np.argmax((tpr + tnr) / 2))
    return float(cuts[best]), float((tpr[best] + tnr[best]) / 2)


def calibrate_on(method: FewShotMethod, dataset: LabeledDataset, pairs: int = 1000, seed: int = 0,
                 device: str | torch.device = "cpu") -> dict:
    """Calibrate on ``pairs`` balanced random pairs of ``dataset``: ``{"threshold", "balanced_accuracy", "pairs"}``."""
    if dataset.num_classes < 2:
        raise ValueError("calibration needs at least 2 classes (one sub-folder per person or writer)")
    batch = PairSampler(dataset, seed=seed).pairs(0, pairs)
    scores = torch.cat([pair_score(method, batch.x1[i:i + 256].to(device), batch.x2[i:i + 256].to(device)).cpu()
                        for i in range(0, pairs, 256)])
    threshold, acc = calibrate_threshold(scores, batch.same)
    return {"threshold": threshold, "balanced_accuracy": acc, "pairs": pairs, "seed": seed}
