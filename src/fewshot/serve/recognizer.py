"""Recognition over one collection: nearest-example cosine scores per class, a threshold, top-k.

A collection's examples are held in memory as one L2-normalised matrix ``[N, D]``; a query's score
for a class is its highest cosine similarity to that class's examples (1-nearest neighbour per
class, which suits one or two examples per class). The answer is the top class when its score
reaches the threshold, ``unknown`` otherwise.

The threshold is calibrated leave-one-out from the collection's own examples (:func:`calibrate`):
every example, left out, should still be recognised as its class (its score against the rest of
its class must pass), and should be rejected as unknown when its whole class is left out (its best
score against the other classes must not pass). The threshold minimising those two error counts
is taken, halfway between the neighbouring scores.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

#: Used until a collection has the examples to calibrate from (two classes, one with 2 examples).
DEFAULT_THRESHOLD = 0.5
#: Leave-one-out scores at most this many examples (a fixed, seeded sample) against the whole collection,
#: and at most CALIBRATION_BUDGET similarities in all: 2,000 up to 25k examples, 500 at 100k.
CALIBRATION_SAMPLE = 2000
CALIBRATION_BUDGET = 50_000_000


@dataclass
class Calibration:
    threshold: float
    source: str  # calibrated | default
    genuine: int  # left-out examples with another example of their class
    impostor: int  # left-out examples scored against the other classes only
    false_rejects: int
    false_accepts: int

    def to_dict(self) -> dict:
        return asdict(self)


def class_scores(emb: torch.Tensor, labels: torch.Tensor, num_classes: int, queries: torch.Tensor) -> torch.Tensor:
    """Per-class max cosine ``[Q, C]`` of unit ``queries [Q, D]`` vs unit ``emb [N, D]`` with ``labels [N]``.

    Classes without examples score ``-inf``.
    """
    sims = queries @ emb.T  # [Q, N]
    out = torch.full((queries.shape[0], num_classes), float("-inf"), dtype=sims.dtype)
    return out.scatter_reduce(1, labels.expand_as(sims), sims, reduce="amax", include_self=True)


def calibrate(emb: np.ndarray, labels: np.ndarray, seed: int = 0) -> Calibration:
    """Leave-one-out threshold from ``emb [N, D]`` (unit rows) and ``labels [N]``."""
    n = len(labels)
    if n < 2:
        return Calibration(DEFAULT_THRESHOLD, "default", 0, 0, 0, 0)
    idx = np.arange(n)
    sample = min(CALIBRATION_SAMPLE, max(256, CALIBRATION_BUDGET // n))
    if n > sample:
        idx = np.sort(np.random.default_rng(seed).choice(n, sample, replace=False))
    e, lab = torch.from_numpy(emb), torch.from_numpy(labels)
    genuine, impostor = torch.empty(len(idx)), torch.empty(len(idx))
    step = max(1, 2**22 // n)  # rows per chunk: the similarity block stays near 16 MB
    for s in range(0, len(idx), step):
        rows = torch.from_numpy(idx[s:s + step])
        sims = e[rows] @ e.T  # [r, N]
        sims[torch.arange(len(rows)), rows] = float("-inf")  # leave each one out
        same = lab[rows][:, None] == lab[None, :]
        genuine[s:s + step] = sims.masked_fill(~same, float("-inf")).amax(1)
        impostor[s:s + step] = sims.masked_fill(same, float("-inf")).amax(1)
    g = genuine[torch.isfinite(genuine)].double().numpy()
    u = impostor[torch.isfinite(impostor)].double().numpy()
    if len(g) == 0 or len(u) == 0:
        return Calibration(DEFAULT_THRESHOLD, "default", len(g), len(u), 0, 0)
    # Candidate thresholds: halfway between neighbouring distinct scores, and past both ends.
    s = np.unique(np.concatenate([g, u]))
    cands = np.concatenate([[s[0] - 1e-6], (s[1:] + s[:-1]) / 2, [s[-1] + 1e-6]])
    gs, us = np.sort(g), np.sort(u)
    false_rejects = np.searchsorted(gs, cands, side="left")  # genuine < t
    false_accepts = len(us) - np.searchsorted(us, cands, side="left")  # impostor >= t
    errors = false_rejects / len(g) + false_accepts / len(u)  # balanced: classes are few, impostors many
    best = np.flatnonzero(errors == errors.min())
    i = best[len(best) // 2]  # the middle of a tie: the widest margin
    return Calibration(float(cands[i]), "calibrated", len(g), len(u), int(false_rejects[i]), int(false_accepts[i]))


class CollectionIndex:
    """One collection's embeddings in memory, with its calibration, at one ``version``."""

    def __init__(self, version: int, emb: np.ndarray, labels: np.ndarray, class_ids: list[int], class_names: list[str]):
        self.version = version
        self.emb = torch.from_numpy(np.ascontiguousarray(emb, dtype=np.float32))
        self.labels = torch.from_numpy(labels)
        self.class_ids, self.class_names = class_ids, class_names
        self._calibration: Calibration | None = None

    def __len__(self) -> int:
        return self.emb.shape[0]

    @property
    def calibration(self) -> Calibration:
        if self._calibration is None:
            self._calibration = calibrate(self.emb.numpy(), self.labels.numpy())
        return self._calibration

    def recognize(self, queries: torch.Tensor, k: int, threshold: float) -> list[dict]:
        """For each query ``[Q, D]``: ``{"decision", "class", "score", "top": [{"class", "class_id", "score"}]}``."""
        scores = class_scores(self.emb, self.labels, len(self.class_ids), queries.float())
        present = torch.isfinite(scores[0]).sum().item() if len(scores) else 0
        k = max(1, min(k, present))
        top_s, top_i = scores.topk(k, dim=1)
        out = []
        for s_row, i_row in zip(top_s.tolist(), top_i.tolist()):
            top = [{"class": self.class_names[i], "class_id": self.class_ids[i], "score": round(s, 6)} for s, i in zip(s_row, i_row)]
            known = s_row[0] >= threshold
            out.append({"decision": "class" if known else "unknown", "class": top[0]["class"] if known else None,
                        "score": round(s_row[0], 6), "top": top})
        return out
