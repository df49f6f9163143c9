"""One way to assemble a training run: spec -> backbone -> method -> :class:`Trainer`."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from ..data.dataset import LabeledDataset
from ..data.images import pixel_mean
from ..methods import FewShotMethod, build_method, method_class
from ..nn.backbones import backbone_spec_for, build_backbone
from ..utils import resolve_device, seed_everything
from .batches import batch_source
from .config import TrainConfig
from .distributed import from_env
from .rundir import RunDir
from .trainer import Trainer
from .validation import validation_tasks


def build_run(
    method: str | FewShotMethod,
    data: LabeledDataset,
    cfg: TrainConfig,
    out_dir: str | Path,
    *,
    params: dict[str, Any] | None = None,
    backbone: str | tuple[str, dict] | None = None,
    val_data: LabeledDataset | None = None,
    data_info: dict | None = None,
) -> Trainer:
    """Build the trainer of one run.

    Args:
        method: a registered method name, built here with ``params`` as its options (a method with
            a ``way`` parameter, i.e. a fixed-size head, gets ``cfg.way`` unless ``params`` sets it);
            or an already built method (then ``backbone`` is the spec it was built with, or None).
        data: the training data.
        cfg: the training configuration; ``cfg.seed`` also seeds the initial weights.
        out_dir: the run directory.
        backbone: a registered backbone name (sized for the data), a ``(name, kwargs)`` spec, or
            None for the method's default. The spec is recorded in the run's checkpoints.
        val_data: validation data (validated on ``cfg.val_tasks`` fixed tasks; 0 turns it off).
        data_info: the preprocessing to record (default: ``data.info``); for images, the training
            data's mean intensity is added as ``pixel_mean`` (eval/predict refuse negatives of it).
    """
    if isinstance(method, FewShotMethod):
        if params:
            raise ValueError("params only apply when the method is given by name")
        model, spec = method, _spec(backbone, data)
    else:
        model, spec = _build_method(method, data, cfg, params or {}, backbone)
    dist = from_env(cfg.device)  # under torchrun: join the process group (and pick this process's GPU)
    device = resolve_device(cfg.device)
    val_tasks = validation_tasks(val_data, cfg) if val_data is not None and cfg.val_tasks > 0 else None
    info = dict(data_info if data_info is not None else data.info)
    if "image" in info and data.x.ndim == 4:  # brightness of what the model learns from, to catch negatives later
        info["pixel_mean"] = round(pixel_mean(data.x), 4)
    run = RunDir(out_dir, spec, info,
                 None if val_tasks is None else {**val_tasks.meta, "tasks": len(val_tasks)})
    return Trainer(model, batch_source(model, data, cfg, device, dist), cfg, run,
                   val_data if val_tasks is not None else None, val_tasks, dist)


def _spec(backbone: str | tuple[str, dict] | None, data: LabeledDataset) -> tuple[str, dict] | None:
    if backbone is None or not isinstance(backbone, str):
        return None if backbone is None else (backbone[0], dict(backbone[1]))
    return backbone_spec_for(backbone, data.item_shape)


def _build_method(name: str, data: LabeledDataset, cfg: TrainConfig, params: dict[str, Any],
                  backbone: str | tuple[str, dict] | None) -> tuple[FewShotMethod, tuple[str, dict] | None]:
    cls = method_class(name)
    spec = cls.default_backbone(data.item_shape) if backbone is None else _spec(backbone, data)
    options = dict(params)
    if "way" in inspect.signature(cls.__init__).parameters:
        options.setdefault("way", cfg.way)  # a fixed-size head is built for the training way
    seed_everything(cfg.seed)  # the initial weights are part of the run: same seed, same model
    return build_method(name, build_backbone(spec[0], **spec[1]) if spec else None, **options), spec
