"""Evaluation over a stream of episodes: accuracy ± 95% CI, error %, confusion matrix.

Every protocol is a stream of :class:`~fewshot.tasks.episodes.Episode`: a fixed task set
(``task_set.episodes(dataset)``), Lake et al.'s 20 runs (:func:`fewshot.tasks.episodes.lake_episodes`),
or any other iterable.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..methods.base import FewShotMethod, inference_context
from ..tasks.episodes import Episode
from ..utils import mean_ci95


@dataclass
class EvalResult:
    """``accuracy`` (mean over ``tasks`` episodes) and its 95% CI half-width, both in [0, 1];
    ``error``: percent of all ``trials`` (query items, pooled over episodes) misclassified, the
    score of Lake et al.'s protocol. ``way``/``shot`` when every episode shares them."""

    accuracy: float
    ci95: float
    tasks: int
    trials: int
    error: float
    way: int | None = None
    shot: int | None = None
    per_task: list[float] = field(default_factory=list, repr=False)
    confusion: list[list[int]] | None = field(default=None, repr=False)

    def to_dict(self, per_task: bool = False) -> dict:
        d = asdict(self)
        if not per_task:
            d.pop("per_task")
        if d["confusion"] is None:
            d.pop("confusion")
        return d


def match_layout(method: FewShotMethod, channels_last: bool) -> None:
    """Put 4-D weights in the layout of the inputs: mixed NCHW/NHWC convolutions are the slowest of all."""
    method.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def _device_of(method: FewShotMethod) -> torch.device:
    p = next(method.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _common(values: list[int]) -> int | None:
    return values[0] if values and all(v == values[0] for v in values) else None


def evaluate(
    method: FewShotMethod,
    episodes: Iterable[Episode],
    device: torch.device | str | None = None,
    confusion: bool = False,
    channels_last: bool = True,
) -> EvalResult:
    """Fit each episode's support set and score its queries.

    With ``confusion=True`` also returns a confusion matrix over the episodes' original class ids
    (``episode.classes``; rows: true class, columns: predicted class, size ``max id + 1``).
    """
    device = torch.device(device) if device is not None else _device_of(method)
    match_layout(method, channels_last)
    was_training = method.training
    method.eval()
    accs, ways, shots, wrong, total = [], [], [], 0, 0
    pairs: list[np.ndarray] = []
    try:
        with inference_context(method):
            for ep in episodes:
                ep = ep.to(device, channels_last=channels_last)
                pred = method.fit(ep.support_x, ep.support_y).predict(ep.query_x)
                hits = pred == ep.query_y
                accs.append(float(hits.float().mean()))
                wrong, total = wrong + int((~hits).sum()), total + hits.numel()
                ways.append(ep.way)
                shots.append(ep.support_y.numel() // ep.way if ep.support_y.numel() % ep.way == 0 else -1)
                if confusion:
                    cls = ep.classes.numpy()
                    pairs.append(np.stack([cls[ep.query_y.cpu().numpy()], cls[pred.cpu().numpy()]]))
    finally:
        method.train(was_training)
    if not accs:
        raise ValueError("evaluate got no episodes: the task set or run list is empty")
    mean, ci = mean_ci95(accs)
    conf = None
    if confusion:
        both = np.concatenate(pairs, axis=1)
        n = int(both.max()) + 1
        matrix = np.zeros((n, n), dtype=np.int64)
        np.add.at(matrix, (both[0], both[1]), 1)
        conf = matrix.tolist()
    shot = _common(shots)
    return EvalResult(mean, ci, len(accs), total, 100.0 * wrong / total, _common(ways),
                      shot if shot != -1 else None, accs, conf)
