"""Evaluation over a stream of episodes: accuracy ± 95% CI, error %, confusion matrix.

Every protocol is a stream of :class:`~fewshot.tasks.episodes.Episode`: a fixed task set
(``task_set.episodes(dataset)``), Lake et al.'s 20 runs (:func:`fewshot.tasks.episodes.lake_episodes`),
or any other iterable.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..methods.base import FewShotMethod, inference_context
from ..tasks.episodes import Episode, TaskEpisodes, assemble
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


def embeds_per_item(method: FewShotMethod) -> bool:
    """Whether the method's scores depend on each item only through its own embedding in evaluation
    mode: ``embedding_only`` and no normalisation by batch statistics (BatchNorm without running
    statistics would make an item's embedding depend on the rest of its batch)."""
    return method.embedding_only and not any(
        isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and not m.track_running_stats for m in method.modules())


def _embedded(method: FewShotMethod, stream: TaskEpisodes, device: torch.device, channels_last: bool,
              chunk: int = 256) -> Iterator[Episode]:
    """The task set's episodes with embeddings ``[n, D]`` in place of the items, each distinct item
    embedded once (in chunks of ``chunk`` items)."""
    index = stream.item_indices()
    parts = []
    for start in range(0, index.numel(), chunk):
        x = stream.dataset.items(index[start:start + chunk]).to(device)
        if channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        parts.append(method.embed(x))
    emb = torch.cat(parts)
    position = torch.full((len(stream.dataset),), -1, dtype=torch.long)
    position[index] = torch.arange(index.numel())
    position = position.to(device)
    return (assemble(stream.dataset, t, lambda i: emb[position[i.to(device)]]) for t in stream.tasks.tasks)


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
    hit_rates, ways, shots, wrong, total = [], [], [], [], 0
    pairs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    try:
        with inference_context(method):
            cached = isinstance(episodes, TaskEpisodes) and embeds_per_item(method)
            if cached:  # embed each distinct item once, then every task from the embeddings
                episodes = _embedded(method, episodes, device, channels_last)
            for ep in episodes:
                ep = ep.to(device, channels_last=channels_last)
                if cached:
                    scores = method.fit_embeddings(ep.support_x, ep.support_y).scores_embeddings(ep.query_x)
                    pred = method.decide(scores)
                else:
                    pred = method.fit(ep.support_x, ep.support_y).predict(ep.query_x)
                hits = pred == ep.query_y  # kept on the device: one host sync at the end, not per task
                hit_rates.append(hits.float().mean())
                wrong.append((~hits).sum())
                total += hits.numel()
                ways.append(ep.way)
                shots.append(ep.support_y.numel() // ep.way if ep.support_y.numel() % ep.way == 0 else -1)
                if confusion:
                    pairs.append((ep.classes, ep.query_y, pred))
    finally:
        method.train(was_training)
    if not hit_rates:
        raise ValueError("evaluate got no episodes: the task set or run list is empty")
    accs = torch.stack(hit_rates).tolist()
    wrong_total = int(torch.stack(wrong).sum())
    mean, ci = mean_ci95(accs)
    conf = None
    if confusion:
        both = np.concatenate([np.stack([cls.numpy()[y.cpu().numpy()], cls.numpy()[p.cpu().numpy()]])
                               for cls, y, p in pairs], axis=1)
        n = int(both.max()) + 1
        matrix = np.zeros((n, n), dtype=np.int64)
        np.add.at(matrix, (both[0], both[1]), 1)
        conf = matrix.tolist()
    shot = _common(shots)
    return EvalResult(mean, ci, len(accs), total, 100.0 * wrong_total / total, _common(ways),
                      shot if shot != -1 else None, accs, conf)
