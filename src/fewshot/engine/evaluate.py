"""Evaluation: accuracy ± 95% CI over a fixed task set, and Lake's 20-run protocol."""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..data.dataset import LabeledDataset
from ..data.lake import LakeRun
from ..tasks.episodes import TaskSet
from ..methods.base import FewShotMethod
from ..utils import mean_ci95


@dataclass
class EvalResult:
    """``accuracy`` and its 95% CI half-width (both in [0, 1]) over ``tasks`` tasks."""

    accuracy: float
    ci95: float
    tasks: int
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


@dataclass
class LakeResult:
    """Error rate in percent over ``trials`` test items, with the per-run errors."""

    error: float
    trials: int
    per_run: list[float]

    def to_dict(self) -> dict:
        return asdict(self)


def eval_mode(method: FewShotMethod) -> contextlib.AbstractContextManager:
    """``inference_mode`` for methods whose ``fit`` is gradient-free, else ``no_grad`` (they re-enable it)."""
    return torch.no_grad() if method.fit_needs_grad else torch.inference_mode()


def match_layout(method: FewShotMethod, channels_last: bool) -> None:
    """Put 4-D weights in the layout of the inputs: mixed NCHW/NHWC convolutions are the slowest of all."""
    method.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def _device_of(method: FewShotMethod) -> torch.device:
    p = next(method.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def evaluate(
    method: FewShotMethod,
    dataset: LabeledDataset,
    tasks: TaskSet,
    device: torch.device | str | None = None,
    confusion: bool = False,
    channels_last: bool = True,
) -> EvalResult:
    """Fit each task's support set, score its queries; mean accuracy ± 95% CI over tasks.

    With ``confusion=True`` also returns a dataset-class confusion matrix (rows: true class).
    """
    device = torch.device(device) if device is not None else _device_of(method)
    match_layout(method, channels_last)
    was_training = method.training
    method.eval()
    accs = []
    conf = np.zeros((dataset.num_classes, dataset.num_classes), dtype=np.int64) if confusion else None
    try:
        with eval_mode(method):
            for ep in tasks.episodes(dataset):
                ep = ep.to(device, channels_last=channels_last)
                pred = method.fit(ep.support_x, ep.support_y).predict(ep.query_x)
                accs.append(float((pred == ep.query_y).float().mean()))
                if conf is not None:
                    cls = ep.classes.numpy()
                    np.add.at(conf, (cls[ep.query_y.cpu().numpy()], cls[pred.cpu().numpy()]), 1)
    finally:
        method.train(was_training)
    mean, ci = mean_ci95(accs)
    return EvalResult(mean, ci, len(accs), tasks.meta.get("way"), tasks.meta.get("shot"), accs,
                      conf.tolist() if conf is not None else None)


def evaluate_lake(method: FewShotMethod, runs: list[LakeRun], device: torch.device | str | None = None,
                  channels_last: bool = True) -> LakeResult:
    """Lake et al.'s protocol: per run, fit the 20 training images (one class each) and classify
    the 20 test images; error = % of all test items misclassified."""
    device = torch.device(device) if device is not None else _device_of(method)
    match_layout(method, channels_last)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    was_training = method.training
    method.eval()
    wrong, total, per_run = 0, 0, []
    try:
        with eval_mode(method):
            for run in runs:
                sx = run.support.float().div(255).to(device).contiguous(memory_format=fmt)
                qx = run.query.float().div(255).to(device).contiguous(memory_format=fmt)
                pred = method.fit(sx, torch.arange(sx.shape[0], device=device)).predict(qx).cpu()
                w = int((pred != run.query_labels).sum())
                per_run.append(100.0 * w / len(pred))
                wrong, total = wrong + w, total + len(pred)
    finally:
        method.train(was_training)
    return LakeResult(100.0 * wrong / max(total, 1), total, per_run)
