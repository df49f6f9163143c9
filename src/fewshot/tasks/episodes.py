"""N-way K-shot Q-query episodes: samplers, fixed task sets, and the Episode batch.

An episode's labels are remapped to ``0..way-1`` in the order of ``classes`` (the original
class ids), so ``support_y == arange(way).repeat_interleave(shot)`` after sampling.
"""

from __future__ import annotations

import dataclasses

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.augment import Augmenter
from ..data.dataset import LabeledDataset
from ..data.lake import LakeRun


@dataclass
class Episode:
    """One task. Shapes: ``support_x [way*shot, ...]``, ``support_y [way*shot]`` in ``0..way-1``,
    ``query_x [way*query, ...]``, ``query_y [way*query]``; ``classes [way]`` original class ids;
    ``support_idx`` / ``query_idx`` dataset item indices (for traceability)."""

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    classes: torch.Tensor
    support_idx: torch.Tensor
    query_idx: torch.Tensor

    @property
    def way(self) -> int:
        return int(self.classes.numel())

    def to(self, device: torch.device | str, channels_last: bool = False) -> "Episode":
        def move(t: torch.Tensor) -> torch.Tensor:
            t = t.to(device, non_blocking=True)
            return t.contiguous(memory_format=torch.channels_last) if channels_last and t.ndim == 4 else t

        return Episode(move(self.support_x), self.support_y.to(device), move(self.query_x),
                       self.query_y.to(device), self.classes, self.support_idx, self.query_idx)


@dataclass(frozen=True)
class TaskSpec:
    """Item indices of one task: ``support [way, shot]`` and ``query [way, query]`` (dataset indices)."""

    classes: tuple[int, ...]
    support: tuple[tuple[int, ...], ...]
    query: tuple[tuple[int, ...], ...]


def assemble(dataset: LabeledDataset, task: TaskSpec,
             gather: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Episode:
    """Gather a task's items from the in-memory dataset by tensor indexing (``gather``: another
    map from dataset indices ``[n]`` to items ``[n, ...]``, e.g. to precomputed embeddings)."""
    s_idx = torch.tensor(task.support, dtype=torch.long)  # [way, shot]
    q_idx = torch.tensor(task.query, dtype=torch.long)  # [way, query]
    way, shot, query = s_idx.shape[0], s_idx.shape[1], q_idx.shape[1]
    both = (gather or dataset.items)(torch.cat([s_idx.reshape(-1), q_idx.reshape(-1)]))
    labels = torch.arange(way)
    return Episode(
        both[: way * shot],
        labels.repeat_interleave(shot),
        both[way * shot:],
        labels.repeat_interleave(query),
        torch.tensor(task.classes, dtype=torch.long),
        s_idx.reshape(-1),
        q_idx.reshape(-1),
    )


class EpisodeSampler:
    """Samples N-way K-shot Q-query tasks from a dataset, reproducibly.

    Task ``i`` depends only on ``(seed, i)``, so a resumed run sees the same episodes as an
    uninterrupted one. With ``within`` set to ``"group"`` every task draws its classes from one
    group (e.g. one Omniglot alphabet), groups chosen with probability proportional to their size.

    Args:
        dataset: the labelled data.
        way, shot, query: classes per task, support and query items per class.
        within: ``None`` (classes from anywhere) or ``"group"`` (all from one group).
        seed: base seed.
    """

    def __init__(self, dataset: LabeledDataset, way: int, shot: int, query: int, within: str | None = None,
                 seed: int = 0):
        for name, v in (("way", way), ("shot", shot)):
            if v < 1:
                raise ValueError(f"{name} must be at least 1, got {v}")
        if query < 0:
            raise ValueError(f"query must be non-negative, got {query}")
        self.dataset, self.way, self.shot, self.query = dataset, way, shot, query
        self.within, self.seed = within, seed
        counts = dataset.class_counts()
        need = shot + query
        self.eligible = np.flatnonzero(counts >= need)
        if len(self.eligible) < way:
            raise ValueError(
                f"{way}-way {shot}-shot {query}-query needs {way} classes with at least {need} items each, "
                f"but only {len(self.eligible)} of {dataset.num_classes} classes have that many "
                f"(smallest class: {counts.min()} items). Lower --way, --shot or --query."
            )
        if within is not None:
            if within not in ("group", "alphabet"):
                raise ValueError(f"within must be None or 'group' (alias 'alphabet'), got {within!r}")
            if dataset.groups is None:
                raise ValueError("within-group episodes need a dataset with groups (e.g. Omniglot alphabets)")
            groups = dataset.groups.numpy()[self.eligible]
            self.group_classes = [self.eligible[groups == g] for g in np.unique(groups)]
            self.group_classes = [c for c in self.group_classes if len(c) >= way]
            if not self.group_classes:
                largest = np.bincount(groups).max()
                raise ValueError(
                    f"within-group {way}-way episodes need a group with {way} eligible classes; the largest has "
                    f"{largest}. Lower --way or drop --within."
                )
            sizes = np.array([len(c) for c in self.group_classes], dtype=np.float64)
            self.group_p = sizes / sizes.sum()
        self.by_class = dataset.indices_by_class()

    def task(self, index: int) -> TaskSpec:
        """The ``index``-th task (a pure function of ``seed`` and ``index``)."""
        rng = np.random.default_rng([self.seed, index])
        if self.within is None:
            pool = self.eligible
        else:
            pool = self.group_classes[rng.choice(len(self.group_classes), p=self.group_p)]
        classes = rng.choice(pool, size=self.way, replace=False)
        support, query = [], []
        for c in classes:
            items = rng.choice(self.by_class[c], size=self.shot + self.query, replace=False)
            support.append(tuple(int(i) for i in items[: self.shot]))
            query.append(tuple(int(i) for i in items[self.shot:]))
        return TaskSpec(tuple(int(c) for c in classes), tuple(support), tuple(query))

    def episode(self, index: int) -> Episode:
        return assemble(self.dataset, self.task(index))


class TaskSet:
    """A fixed list of tasks, saved as JSON of item indices so evaluations repeat exactly."""

    def __init__(self, tasks: Sequence[TaskSpec], meta: dict | None = None):
        self.tasks = list(tasks)
        self.meta = dict(meta or {})

    @classmethod
    def generate(cls, dataset: LabeledDataset, way: int, shot: int, query: int, tasks: int,
                 within: str | None = None, seed: int = 0) -> "TaskSet":
        sampler = EpisodeSampler(dataset, way, shot, query, within=within, seed=seed)
        meta = {"way": way, "shot": shot, "query": query, "within": within, "seed": seed,
                "num_items": len(dataset), "num_classes": dataset.num_classes}
        return cls([sampler.task(i) for i in range(tasks)], meta)

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self) -> Iterator[TaskSpec]:
        return iter(self.tasks)

    def episodes(self, dataset: LabeledDataset) -> "TaskEpisodes":
        """The tasks' episodes, assembled from ``dataset`` as they are iterated."""
        self.check(dataset)
        return TaskEpisodes(self, dataset)

    def check(self, dataset: LabeledDataset) -> None:
        n = self.meta.get("num_items")
        if n is not None and n != len(dataset):
            raise ValueError(f"this task set was made for a dataset of {n} items; this one has {len(dataset)}")

    def save(self, path: str | Path) -> None:
        data = {"meta": self.meta, "tasks": [{"classes": t.classes, "support": t.support, "query": t.query} for t in self.tasks]}
        Path(path).write_text(json.dumps(data))

    @classmethod
    def load(cls, path: str | Path) -> "TaskSet":
        try:
            data = json.loads(Path(path).read_text())
            tasks = [TaskSpec(tuple(t["classes"]), tuple(map(tuple, t["support"])), tuple(map(tuple, t["query"])))
                     for t in data["tasks"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path} is not a fewshot task set (JSON with 'meta' and 'tasks'): {exc}") from exc
        return cls(tasks, data.get("meta"))


class TaskEpisodes:
    """The episodes of a task set over a dataset (iterate for :class:`Episode` s). Evaluation reads
    ``tasks`` and ``dataset`` to embed each distinct item once for methods that allow it."""

    def __init__(self, tasks: TaskSet, dataset: LabeledDataset):
        self.tasks, self.dataset = tasks, dataset

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self) -> Iterator[Episode]:
        return (assemble(self.dataset, t) for t in self.tasks)

    def item_indices(self) -> torch.Tensor:
        """The distinct dataset indices of all tasks' items, sorted ``[n]``."""
        return torch.unique(torch.tensor([i for t in self.tasks.tasks for row in (*t.support, *t.query) for i in row],
                                         dtype=torch.long))


def augment_episode(episode: Episode, augmenter: "Augmenter", generator: torch.Generator,
                    queries: bool = True, per: str = "image") -> Episode:
    """The same episode with its support (and, with ``queries``, query) images augmented, labels and
    indices unchanged (for episodic training). ``per="image"``: one fresh draw per image;
    ``per="class"``: one draw per class, shared by its support and query images (the transformed
    class looks like a new class, its instances stay alike; measured for MANN in docs/model_based.md)."""
    if per not in ("image", "class"):
        raise ValueError(f"per must be 'image' or 'class', got {per!r}")
    aug_q = queries and len(episode.query_x) > 0
    if per == "image":
        qx = augmenter(episode.query_x, generator) if aug_q else episode.query_x
        return dataclasses.replace(episode, support_x=augmenter(episode.support_x, generator), query_x=qx)
    sx, qx = episode.support_x.clone(), episode.query_x.clone() if aug_q else episode.query_x
    for c in range(episode.way):
        s_at = torch.nonzero(episode.support_y == c).flatten()
        q_at = torch.nonzero(episode.query_y == c).flatten() if aug_q else s_at[:0]
        items = torch.cat([sx[s_at], qx[q_at]])  # [n, C, H, W]
        n, ch = items.shape[:2]
        # the class's images as the channels of one image: one draw of every transform for all of them
        out = augmenter(items.reshape(1, n * ch, *items.shape[2:]), generator).reshape(items.shape)
        sx[s_at] = out[: len(s_at)]
        if aug_q:
            qx[q_at] = out[len(s_at):]
    return dataclasses.replace(episode, support_x=sx, query_x=qx)


def lake_episodes(runs: Iterable[LakeRun]) -> Iterator[Episode]:
    """Lake et al.'s runs as episodes: ``way`` = the run's training images (one per class, class j
    = image j), 1 shot, its test images as queries (``query_y`` = index of the true class).
    ``uint8`` images are scaled to ``[0, 1]``; features (runs embedded beforehand) are kept as they are."""
    def scaled(x: torch.Tensor) -> torch.Tensor:
        return x.float().div(255) if x.dtype == torch.uint8 else x

    for run in runs:
        way, q = run.support.shape[0], run.query.shape[0]
        yield Episode(scaled(run.support), torch.arange(way), scaled(run.query),
                      run.query_labels.long(), torch.arange(way), torch.arange(way), torch.arange(q))
