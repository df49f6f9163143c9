"""The training loop: it only steps. Batches come from a batch source (:mod:`.batches`), the run
directory keeps checkpoints, metrics and resume state (:mod:`.rundir`), validation scores a fixed
task set with :func:`.evaluate.evaluate`. Assemble all of it with :func:`.build.build_run`."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import torch
from tqdm.auto import tqdm

from ..data.dataset import LabeledDataset
from ..methods.base import FewShotMethod
from ..tasks.episodes import TaskSet
from ..utils import seed_everything
from .batches import BatchSource
from .checkpoint import check_finite_state, restore_training
from .config import Plateau, TrainConfig, lr_factor
from .distributed import Distributed
from .evaluate import evaluate
from .precision import BackboneAutocast, autocast_dtype
from .rundir import RunDir, StartState

__all__ = ["Trainer", "TrainConfig", "build_optimizer", "lr_factor"]


def build_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose adam, adamw, sgd or rmsprop")


def _window_means(window: list[tuple[float | torch.Tensor, float | torch.Tensor]]) -> tuple[float, float]:
    """Mean loss and accuracy of the steps since the last log (floats or 0-dim tensors)."""
    values = torch.tensor([[float(v) for v in w] for w in window], dtype=torch.float64)
    return float(values[:, 0].mean()), float(values[:, 1].mean())


class Trainer:
    """Train ``method`` on the batches of ``batches`` for ``cfg.steps`` steps, validate on the fixed
    ``val_tasks`` of ``val_data`` every ``cfg.val_every`` steps, keep ``best``/``last`` in ``run``.

    A method with no trainable parameters (kNN on raw inputs...) is a zero-step run: the same loop
    validates once and saves both checkpoints. The ``plateau`` schedule steps a :class:`Plateau`
    after every validation, so it needs validation.
    """

    def __init__(self, method: FewShotMethod, batches: BatchSource, cfg: TrainConfig, run: RunDir,
                 val_data: LabeledDataset | None = None, val_tasks: TaskSet | None = None,
                 dist: Distributed = Distributed()):
        if (val_data is None) != (val_tasks is None):
            raise ValueError("pass both val_data and val_tasks (or neither)")
        if cfg.max_cpu_seconds is not None and dist.active:
            raise ValueError("max_cpu_seconds counts one process's CPU time, so several processes would stop at "
                             "different steps: train without it, or in one process")
        if cfg.schedule == "plateau" and val_tasks is None:
            raise ValueError("the plateau schedule lowers the learning rate when the validation accuracy stops improving, "
                             "but this run has no validation: hold out validation classes (--val-fraction > 0 or "
                             "--val-split) with --val-tasks > 0, or choose another --schedule")
        self.method, self.batches, self.cfg, self.run = method, batches, cfg, run
        self.val_data, self.val_tasks = val_data, val_tasks
        self.device = batches.device
        self.dist = dist  # several processes: each steps its share, process 0 validates, logs, checkpoints

    def fit(self, resume: bool = False, override: bool = False) -> list[dict]:
        """Run (or, with ``resume``, continue) training; returns the log records. The run directory
        is locked meanwhile: a second writer gets a ``FileExistsError``. ``override``: resume with
        changed settings, recording the change (see :meth:`RunDir.start`)."""
        with self.run.lock() if self.dist.is_main else contextlib.nullcontext():
            return self._fit(resume, override)

    def _fit(self, resume: bool, override: bool) -> list[dict]:
        cfg, method = self.cfg, self.method
        seed_everything(cfg.seed)
        method.setup(self.batches.data)
        method.to(self.device)
        if cfg.channels_last:
            method.to(memory_format=torch.channels_last)
        if cfg.compile and method.backbone is not None:
            method.backbone.compile()  # in place: parameter names (and checkpoints) unchanged
        trainable = [p for p in method.parameters() if p.requires_grad]
        steps = cfg.steps if trainable else 0
        if autocast_dtype(cfg.precision) is not None and method.backbone is None and steps:
            raise ValueError(f"precision={cfg.precision!r} applies to a backbone; {method.name} has none here "
                             "(train in float32)")
        low_precision = BackboneAutocast(method.backbone, cfg.precision)
        optimizer = build_optimizer(trainable, cfg) if trainable else None
        state = self._start(resume, optimizer, override)
        start, self.best, records, window, self._cpu = state.step, state.best_val, state.records, state.window, state.cpu_seconds
        self.plateau = Plateau.from_config(cfg, state.schedule) if cfg.schedule == "plateau" else None
        method.train()
        main = self.dist.is_main
        # the step the run ends on: earlier when max_cpu_seconds is spent (a resumed run counts on from
        # the CPU time its checkpoint recorded, so it may already be spent: then no step is taken)
        spent = cfg.max_cpu_seconds is not None and start < steps and self._cpu >= cfg.max_cpu_seconds
        end = start if spent else steps
        if spent:
            records.append({"step": start, "stopped": f"max_cpu_seconds={cfg.max_cpu_seconds:g} already spent "
                            f"({self._cpu:.1f} CPU s) after {start} of {steps} steps; raise it (or set None) to continue"})
        bar = tqdm(range(start, end), initial=start, total=steps, disable=not cfg.progress or steps == 0 or not main,
                   desc=f"train {method.name}", dynamic_ncols=True)
        self._saved_at = time.monotonic()
        t0, n_items = time.perf_counter(), 0
        for step in bar:
            c0 = time.process_time()
            lr = (cfg.lr if self.plateau is None else self.plateau.lr) * lr_factor(step, cfg)
            for g in optimizer.param_groups:
                g["lr"] = lr
            batch = self.batches(step)
            n_items += self.batches.items(batch) * self.dist.world_size
            optimizer.zero_grad(set_to_none=True)
            with low_precision:  # validation stays float32
                out = method.training_step(batch)
            out = self.dist.average(trainable, out)
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(method.parameters(), cfg.grad_clip)
            optimizer.step()
            self._cpu += time.process_time() - c0  # the steps' CPU time: validation and checkpoints excluded
            window.append((out.loss, out.accuracy))
            done = step + 1
            record = None
            if cfg.max_cpu_seconds is not None and done < steps and self._cpu >= cfg.max_cpu_seconds:
                end = done  # finish here as on a last step: validate, log, save ``last``
            if done % cfg.log_every == 0 or done == end:
                loss, acc = _window_means(window)  # the only host synchronisation of the logging
                record = {"step": done, "loss": loss, "accuracy": acc, "lr": lr,
                          "items_per_s": n_items / max(time.perf_counter() - t0, 1e-9)}
                if end < steps:
                    record["stopped"] = (f"max_cpu_seconds={cfg.max_cpu_seconds:g} spent ({self._cpu:.1f} CPU s) after "
                                         f"{done} of {steps} steps")
                window = []
                bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record['accuracy']:.3f}", refresh=False)
            if main:
                records += self._end_of_step(done, end, record, optimizer, window)
            if self.plateau is not None and self._validates(done, end):  # process 0 validated: its rate for all
                self.plateau.lr = self.dist.broadcast_float(self.plateau.lr, self.device)
            if done == end:
                break
        bar.close()
        if main and steps == 0 and not records:  # nothing to train, fresh run: validate and save the method once
            records += self._end_of_step(0, 0, {"step": 0}, None)
        if main and self.val_tasks is None:
            self.run.save("best", method, cfg, end, self.best, cpu_seconds=self._cpu)  # no validation: best is last
        self.dist.barrier()  # the last checkpoint is complete when any process returns
        return records

    def _start(self, resume: bool, optimizer: torch.optim.Optimizer | None,
               override: bool) -> StartState:
        """``run.start`` in process 0; the other processes restore the same checkpoint (or start fresh),
        without its log records (process 0 alone logs), and then take process 0's weights."""
        if not self.dist.active:
            return self.run.start(resume, self.method, self.cfg, optimizer, override)
        had_run = self.run.has_run()
        self.dist.barrier()
        if self.dist.is_main:
            state = self.run.start(resume, self.method, self.cfg, optimizer, override)
        elif resume and had_run:
            state = StartState.saved(restore_training(self.run.path, "last", self.method, optimizer))
        else:
            state = StartState.fresh()
        self.dist.barrier()
        self.dist.broadcast(self.method)
        return state

    def _end_of_step(self, done: int, steps: int, record: dict[str, Any] | None,
                     optimizer: torch.optim.Optimizer | None, window: list | None = None) -> list[dict]:
        """Validate, log and checkpoint after step ``done`` as the config asks; the new log records."""
        cfg = self.cfg
        validate = self._validates(done, steps)
        due = done == steps or (done % cfg.checkpoint_every == 0 if cfg.checkpoint_every else
                                time.monotonic() - self._saved_at >= cfg.checkpoint_seconds)
        if validate or due:
            check_finite_state(self.method, done)  # a diverged model is neither validated nor saved
        if validate:
            res = evaluate(self.method, self.val_tasks.episodes(self.val_data), self.device,
                           channels_last=cfg.channels_last)
            record = record or {"step": done}
            record.update(val_accuracy=res.accuracy, val_ci95=res.ci95)
            if self.plateau is not None:
                self.plateau.step(res.accuracy)
            if res.accuracy > self.best:
                self.best = res.accuracy
                self.run.save("best", self.method, cfg, done, self.best, cpu_seconds=self._cpu)
        if record is not None:
            self.run.append_log(record)
        if due:
            self.run.save("last", self.method, cfg, done, self.best, optimizer,
                          None if window is None else [(float(l), float(a)) for l, a in window],
                          None if self.plateau is None else self.plateau.state(), self._cpu)
            self._saved_at = time.monotonic()
        return [record] if record is not None else []

    def _validates(self, done: int, steps: int) -> bool:
        """Whether the run validates after step ``done`` (of ``steps``)."""
        return self.val_tasks is not None and (done % self.cfg.val_every == 0 or done == steps)
