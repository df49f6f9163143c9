"""The training configuration and the learning-rate schedule it implies."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class TrainConfig:
    """Everything that decides a training run (saved in every checkpoint).

    ``steps`` optimiser steps; each step sees ``tasks_per_step`` episodes (episodic regime) or one
    mini-batch of ``batch_size`` items (batch regime). The learning rate follows ``schedule``
    (``cosine`` to 0, ``step``: halved at 50% and 75%, or ``constant``) after ``warmup`` steps.
    ``augment`` names a :class:`fewshot.data.augment.Augmenter` preset (``characters``, ``photos``)
    applied to the training batches of either regime (None: no augmentation). The ``last``
    checkpoint is written every ``checkpoint_every`` steps, or (None) every ``checkpoint_seconds``
    seconds, and at the end.
    """

    steps: int = 3000
    way: int = 20
    shot: int = 1
    query: int = 5
    within: str | None = None
    tasks_per_step: int = 1
    batch_size: int = 128
    augment: str | None = None
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup: int = 0
    grad_clip: float | None = None
    val_every: int = 500
    val_tasks: int = 200
    val_way: int | None = None
    val_shot: int | None = None
    val_seed: int = 1234
    checkpoint_every: int | None = None  # steps between ``last`` checkpoints; None: by time
    checkpoint_seconds: float = 60.0  # with checkpoint_every=None: a ``last`` checkpoint this often
    log_every: int = 50
    seed: int = 0
    device: str = "auto"
    channels_last: bool = True  # NHWC convolutions: ~1.7x faster for Conv4 on CPU here
    compile: bool = False  # torch.compile the backbone (see benchmarks/results/throughput.md for when it pays)
    progress: bool = True


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of the base learning rate at ``step`` (a pure function: nothing to checkpoint)."""
    if cfg.warmup and step < cfg.warmup:
        return (step + 1) / cfg.warmup
    if cfg.schedule == "constant":
        return 1.0
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    if cfg.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    if cfg.schedule == "step":
        return 0.5 ** (int(progress >= 0.5) + int(progress >= 0.75))
    raise ValueError(f"unknown schedule {cfg.schedule!r}; choose cosine, step or constant")
