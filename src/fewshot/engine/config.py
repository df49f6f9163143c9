"""The training configuration and the learning-rate schedule it implies."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class TrainConfig:
    """Everything that decides a training run (saved in every checkpoint).

    ``steps`` optimiser steps; each step sees ``tasks_per_step`` episodes (episodic regime) or one
    mini-batch of ``batch_size`` items (batch regime). The learning rate follows ``schedule``
    (``cosine`` to 0, ``step``: halved at 50% and 75%, ``constant``, or ``plateau``: multiplied by
    ``plateau_factor`` after more than ``plateau_patience`` validations in a row without a better
    validation accuracy, see :class:`Plateau`; it needs validation) after ``warmup`` steps.
    ``augment`` names a :class:`fewshot.data.augment.Augmenter` preset (``characters``, ``photos``)
    applied to the training batches of either regime (None: no augmentation); ``augment_per``
    ``class`` (episodic regime) draws one transform per class and episode instead of one per image.
    The ``last``
    checkpoint is written every ``checkpoint_every`` steps, or (None) every ``checkpoint_seconds``
    seconds, and at the end. ``max_cpu_seconds`` (None: no limit) stops the run early, cleanly,
    once its training steps have used that much process CPU time (all threads; validation and
    checkpoints excluded; counted over the whole run: the checkpoints record it, ``state.cpu_seconds``,
    and a resumed run counts on from there, or from 0 for a checkpoint without it): the step it
    ends on is validated and saved as ``last`` like a final step, and its log record says why.
    """

    steps: int = 3000
    way: int = 20
    shot: int = 1
    query: int = 5
    within: str | None = None
    tasks_per_step: int = 1
    batch_size: int = 128
    augment: str | None = None
    augment_per: str = "image"
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "cosine"
    plateau_factor: float = 0.5
    plateau_patience: int = 2  # in validations (every ``val_every`` steps): 6 of them in a default run
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
    precision: str = "float32"  # "bfloat16": the backbone's forward under autocast (see engine/precision.py)
    progress: bool = True
    max_cpu_seconds: float | None = None

    def __post_init__(self):
        from .precision import PRECISIONS  # imports torch: only when a run is configured

        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r} in the training configuration; choose "
                             f"{' or '.join(PRECISIONS)} (bfloat16 runs the backbone's forward under autocast)")
        if self.augment_per not in ("image", "class"):
            raise ValueError(f"augment_per must be 'image' or 'class'; got {self.augment_per!r}")
        if self.augment_per == "class" and self.augment is None:
            raise ValueError("augment_per='class' (--augment-per class) needs an augmentation preset: "
                             "set augment (--augment characters or photos)")
        if self.max_cpu_seconds is not None and not self.max_cpu_seconds > 0:
            raise ValueError(f"max_cpu_seconds must be > 0 (or None: no limit); got {self.max_cpu_seconds}")


SCHEDULES = ("cosine", "step", "constant", "plateau")


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of the base learning rate at ``step`` (a pure function: nothing to checkpoint).
    With ``plateau`` the base learning rate is :attr:`Plateau.lr`, constant between validations."""
    if cfg.warmup and step < cfg.warmup:
        return (step + 1) / cfg.warmup
    if cfg.schedule in ("constant", "plateau"):
        return 1.0
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    if cfg.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    if cfg.schedule == "step":
        return 0.5 ** (int(progress >= 0.5) + int(progress >= 0.75))
    raise ValueError(f"unknown schedule {cfg.schedule!r}; choose {', '.join(SCHEDULES)}")


@dataclass
class Plateau:
    """PyTorch's ``ReduceLROnPlateau`` on the validation accuracy (``mode="max"``, relative
    threshold ``1e-4``, no cooldown, no minimum): :meth:`step` after every validation; when the
    accuracy has not beaten ``best * (1 + threshold)`` for more than ``patience`` validations in a
    row, ``lr`` (starting at ``base_lr``) is multiplied by ``factor``, unless that changes it by
    less than ``eps``.

    Its state (:meth:`state`: plain floats and ints) goes into the ``last`` checkpoint's JSON, so
    a resumed run continues the same schedule.
    """

    base_lr: float
    factor: float = 0.5
    patience: int = 2
    lr: float | None = None  # the current rate (None: base_lr)
    best: float | None = None  # None: no validation yet (PyTorch's -inf)
    bad: int = 0  # validations since the last improvement
    threshold: float = 1e-4
    eps: float = 1e-8

    def __post_init__(self):
        if not (0.0 < self.factor < 1.0):
            raise ValueError(f"the plateau factor must lie strictly between 0 and 1 (it multiplies the learning rate); "
                             f"got {self.factor}")
        if isinstance(self.patience, bool) or not isinstance(self.patience, int) or self.patience < 0:
            raise ValueError(f"the plateau patience is a number of validations >= 0; got {self.patience!r}")
        if self.lr is None:
            self.lr = self.base_lr

    @classmethod
    def from_config(cls, cfg: TrainConfig, state: dict | None = None) -> Plateau:
        """The schedule of ``cfg``: fresh at ``cfg.lr``, or continuing a checkpoint's ``state``
        (resumed with another ``--lr``: the same reductions of the new rate)."""
        if not state:
            return cls(cfg.lr, cfg.plateau_factor, cfg.plateau_patience)
        try:
            lr = float(state["lr"])
            if float(state["base_lr"]) != cfg.lr:
                lr = cfg.lr * (lr / float(state["base_lr"]))
            best = None if state["best"] is None else float(state["best"])
            bad = int(state["bad"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"the checkpoint's plateau state {state!r} is damaged ({exc!r}); was last.json edited? "
                             "Restore it, or retrain into a new --out") from exc
        return cls(cfg.lr, cfg.plateau_factor, cfg.plateau_patience, lr, best, bad)

    def state(self) -> dict:
        return {"base_lr": self.base_lr, "lr": self.lr, "best": self.best, "bad": self.bad}

    def step(self, accuracy: float) -> float:
        """Record one validation accuracy; return the learning rate from now on."""
        accuracy = float(accuracy)
        if self.best is None or accuracy > self.best * (1.0 + self.threshold):
            self.best, self.bad = accuracy, 0
        else:
            self.bad += 1
        if self.bad > self.patience:
            lower = self.lr * self.factor
            if self.lr - lower > self.eps:
                self.lr = lower
            self.bad = 0
        return self.lr
