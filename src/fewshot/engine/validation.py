"""Validation that means something: held-out classes, at least 2-way tasks.

:func:`holdout_classes` holds out ``fraction`` of the classes but never fewer than 2 (a 1-way
task is always answered correctly, so it cannot choose the ``best`` checkpoint); on small
datasets (scikit-learn digits, MNIST: 10 classes) this means 2 validation classes and 2-way
validation tasks. :func:`validation_tasks` refuses a validation set with fewer than 2 classes.
"""

from __future__ import annotations

import torch

from ..data.dataset import LabeledDataset
from ..tasks.episodes import TaskSet
from .config import TrainConfig

MIN_VAL_CLASSES = 2


def holdout_classes(data: LabeledDataset, fraction: float, seed: int = 0) -> tuple[LabeledDataset, LabeledDataset]:
    """Split ``data`` by class into ``(train, val)`` with ``max(2, round(fraction * classes))``
    validation classes; at least 2 classes must remain for training."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the validation fraction must lie strictly between 0 and 1, got {fraction}")
    n = data.num_classes
    n_val = max(MIN_VAL_CLASSES, int(round(fraction * n)))
    if n - n_val < 2:
        raise ValueError(f"the data has {n} classes: too few to hold out {n_val} for validation and keep 2 for "
                         "training; pass --val-fraction 0 (no validation) or a separate validation split")
    return data.split_classes(n_val / n, seed=seed)


def validation_tasks(val_data: LabeledDataset, cfg: TrainConfig) -> TaskSet:
    """The fixed validation task set: ``cfg.val_way`` (default: the training way, shrunk to the
    validation classes — with ``cfg.within``, to the validation classes of the largest group)
    -way ``cfg.val_shot`` (default: training shot) -shot tasks."""
    available = val_data.num_classes
    if cfg.within is not None and val_data.groups is not None:
        # A 10% class hold-out spreads over the groups (Omniglot's small1: 14 classes, at most 7 per alphabet).
        available = int(torch.bincount(val_data.groups).max())
    way = cfg.val_way or min(cfg.way, available)
    if way < MIN_VAL_CLASSES:
        raise ValueError(f"validation needs tasks of at least {MIN_VAL_CLASSES} classes, but the validation set has "
                         f"{val_data.num_classes} class(es) (val_way={way}): a 1-way task is always right. Hold out "
                         "more classes (--val-fraction), validate on another split (--val-split) or turn it off (--val-tasks 0)")
    shot = cfg.val_shot or cfg.shot
    query = max(1, min(cfg.query or 5, int(val_data.class_counts().min()) - shot))
    return TaskSet.generate(val_data, way, shot, query, tasks=cfg.val_tasks, within=cfg.within, seed=cfg.val_seed)
