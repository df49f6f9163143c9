"""A run directory: what was built (backbone spec, data preprocessing), ``best``/``last``
checkpoints, the metrics log (JSONL + CSV) and the bookkeeping of resume."""

from __future__ import annotations

import contextlib
import csv
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, NamedTuple

import torch

from ..methods.base import FewShotMethod
from ..methods.params import coerce_params
from .checkpoint import method_spec, read_checkpoint_info, restore_training, save_checkpoint
from .config import TrainConfig


class StartState(NamedTuple):
    """Where a training run starts (or resumes): the step, the best validation accuracy so far (-1:
    none), the log records up to the step, the (loss, accuracy) window of the steps since the last
    log line, the learning-rate schedule's state (None: none) and the training steps' CPU seconds."""

    step: int
    best_val: float
    records: list[dict]
    window: list[tuple[float, float]]
    schedule: dict | None
    cpu_seconds: float

    @classmethod
    def fresh(cls) -> StartState:
        """A new run's start (new lists each time: the trainer extends them)."""
        return cls(0, -1.0, [], [], None, 0.0)

    @classmethod
    def saved(cls, state: dict[str, Any], records: list[dict] | None = None) -> StartState:
        """The start state a checkpoint's training state ``state`` records (what
        :func:`fewshot.engine.checkpoint.restore_training` returns), with the log ``records`` up to
        its step (none: ``[]``). A run saved before the CPU time was recorded has spent 0 s."""
        return cls(state["step"], state.get("best_val", -1.0), list(records or []),
                   [tuple(w) for w in state.get("window", [])], state.get("schedule"),
                   float(state.get("cpu_seconds", 0.0)))


class RunDir:
    """The folder ``path`` of one training run.

    ``backbone`` (name, kwargs), ``data`` (preprocessing: image size, inversion...) and
    ``validation`` (the validation task set's way/shot/query/tasks, None without validation) are
    recorded in every checkpoint with the method's config and the :class:`TrainConfig`, so
    :func:`fewshot.engine.checkpoint.load_checkpoint` and ``fewshot eval/predict`` rebuild the
    method and decode new data identically.
    """

    CSV_COLUMNS = ["step", "loss", "accuracy", "lr", "items_per_s", "val_accuracy", "val_ci95"]

    def __init__(self, path: str | Path, backbone: tuple[str, dict] | None = None, data: dict | None = None,
                 validation: dict | None = None):
        self.path = Path(path)
        self.backbone = backbone
        self.data = dict(data or {})
        self.validation = validation
        self.overrides: list[dict] = []

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @contextlib.contextmanager
    def lock(self):
        """Hold the run directory for one writer: a second training into the same folder (another
        process, or the same one) fails at once with a clear error. The OS drops the lock when the
        process dies, so a killed run never leaves the folder locked."""
        try:
            import fcntl
        except ImportError:  # not POSIX: no locking
            yield
            return
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
                raise FileExistsError(f"{self.path} is being written by another training (pid {holder}); wait for it to "
                                      "finish or choose another --out") from None
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            yield
        finally:
            os.close(fd)

    def has_run(self) -> bool:
        return (self.path / "last.json").exists()

    # ------------------------------------------------------------------ checkpoints
    def save(self, tag: str, method: FewShotMethod, cfg: TrainConfig, step: int, best: float,
             optimizer: torch.optim.Optimizer | None = None, window: list | None = None,
             schedule: dict | None = None, cpu_seconds: float | None = None) -> None:
        """Checkpoint ``tag``; ``window``: the (loss, accuracy) of the steps since the last log line,
        so a resumed run logs exactly what an uninterrupted one would; ``schedule``: the state of a
        learning-rate schedule that has one (:meth:`fewshot.engine.config.Plateau.state`);
        ``cpu_seconds``: the CPU time the run's training steps have used up to ``step`` (what
        ``max_cpu_seconds`` caps, counted on across resumes)."""
        spec = {**method_spec(method, self.backbone), "train_config": asdict(cfg), "data": self.data,
                "validation": self.validation}
        state = {"step": step, "best_val": best, "window": list(window or []), "overrides": self.overrides}
        if schedule is not None:
            state["schedule"] = schedule
        if cpu_seconds is not None:
            state["cpu_seconds"] = cpu_seconds
        save_checkpoint(self.path, tag, method, spec, state, optimizer)

    #: settings that do not change what a run computes: free to differ on resume
    FREE_SETTINGS = frozenset({"device", "progress", "checkpoint_every", "checkpoint_seconds", "max_cpu_seconds"})

    def start(self, resume: bool, method: FewShotMethod, cfg: TrainConfig,
              optimizer: torch.optim.Optimizer | None, override: bool = False
              ) -> StartState:
        """The :class:`StartState` to start from: a fresh run, or with ``resume`` the ``last``
        checkpoint (weights, optimiser and RNG state restored).

        Resuming refuses settings that differ from the run's (training configuration, data,
        validation; the method, its options and backbone can never change), unless ``override``:
        then the changes are recorded in the checkpoints (``state["overrides"]``). A changed
        optimiser starts with a fresh optimiser state.
        """
        self.overrides: list[dict] = []
        if not self.has_run():
            if resume:
                raise FileNotFoundError(f"nothing to resume in {self.path}: it holds no checkpoint (last.json); "
                                        "drop --resume to start the run")
            self.path.mkdir(parents=True, exist_ok=True)
            self.write_log([])
            return StartState.fresh()
        if not resume:
            raise FileExistsError(f"{self.path} already holds a run; pass --resume to continue it or choose another --out")
        saved = read_checkpoint_info(self.path, "last")
        fixed = {k: (saved.get(k), v) for k, v in method_spec(method, self.backbone).items() if k != "config"}
        fixed = {k: v for k, v in fixed.items() if _jsonable(v[0]) != _jsonable(v[1])}
        if fixed:
            raise ValueError(f"{self.path} was trained with {_describe(fixed)}; the method and backbone of a run cannot "
                             "change: resume with the run's own, or train into a new --out")
        new = {f"train_config.{k}": v for k, v in asdict(cfg).items() if k not in self.FREE_SETTINGS}
        saved_cfg = saved.get("train_config") or {}
        if isinstance(saved_cfg, dict) and saved_cfg:  # settings added since the run was saved: their defaults
            saved_cfg = {**asdict(TrainConfig()), **saved_cfg}
        old = {f"train_config.{k}": v for k, v in saved_cfg.items() if k not in self.FREE_SETTINGS}
        new.update(data=self.data, validation=self.validation)
        old.update(data=saved.get("data"), validation=saved.get("validation"))
        if isinstance(old["data"], dict) and "pixel_mean" not in old["data"]:  # runs of earlier versions
            new["data"] = {k: v for k, v in self.data.items() if k != "pixel_mean"}
        changes = {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new))
                   if _jsonable(old.get(k)) != _jsonable(new.get(k))}
        if changes and not override:
            raise ValueError(f"--resume with other settings than the run's: {_describe(changes)}. Resume with the "
                             "same settings, or pass --override to continue with the new ones (the change is recorded)")
        fresh_optimizer = "train_config.optimizer" in changes
        state = restore_training(self.path, "last", method, None if fresh_optimizer else optimizer)
        saved_config = coerce_params(type(method), saved.get("config") or {}, saved=True)  # earlier option names
        config_changes = {f"config.{k}": (v, method.config().get(k)) for k, v in saved_config.items()
                          if _jsonable(v) != _jsonable(method.config().get(k))}
        if config_changes:
            raise ValueError(f"{self.path} was trained with other method options: {_describe(config_changes)}; the "
                             "options (-p) of a run cannot change: resume with the run's own, or train into a new --out")
        self.overrides = list(state.get("overrides") or [])
        if changes:
            self.overrides.append({"step": state["step"], "changes": {k: list(v) for k, v in changes.items()}})
        records = self.read_log(upto=state["step"])
        self.write_log(records)  # drop lines logged after the checkpoint
        return StartState.saved(state, records)

    # ------------------------------------------------------------------ metrics
    def read_log(self, upto: int) -> list[dict]:
        if not self.metrics_path.exists():
            return []
        out = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line cut by a crash
            if rec.get("step", 0) <= upto:
                out.append(rec)
        return out

    def write_log(self, records: list[dict]) -> None:
        self.metrics_path.write_text("".join(json.dumps(r) + "\n" for r in records))
        self._write_csv(records)

    def append_log(self, record: dict) -> None:
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        self._write_csv([record], append=True)

    def _write_csv(self, records: list[dict], append: bool = False) -> None:
        with open(self.path / "metrics.csv", "a" if append else "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.CSV_COLUMNS, extrasaction="ignore")
            if not append:
                w.writeheader()
            w.writerows(records)


def _jsonable(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), for comparisons with saved settings."""
    return json.loads(json.dumps(value))


def _describe(changes: dict[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{k} {old!r} (now {new!r})" for k, (old, new) in changes.items())
