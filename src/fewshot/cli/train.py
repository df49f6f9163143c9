"""``fewshot train``."""

from __future__ import annotations

from pathlib import Path

import click

from ..engine.config import SCHEDULES, TrainConfig  # no torch: --help stays quick
from . import main
from .common import FiniteFloat, Fraction, apply_threads, data_options, device_option, echo_json, load_dataset_arg, parse_params, threads_option
from .pretrained import DEFAULT_TRAINABLE_BLOCKS, PRETRAINED_RESOLUTION


@main.command("train")
@click.option("--method", default="protonet", show_default=True, help="a registered method (see `fewshot methods`)")
@data_options
@click.option("--way", type=click.IntRange(min=2), default=20, show_default=True, help="classes per training episode")
@click.option("--shot", type=click.IntRange(min=1), default=1, show_default=True, help="support examples per class")
@click.option("--query", type=click.IntRange(min=1), default=5, show_default=True, help="query examples per class")
@click.option("--episodes", type=click.IntRange(min=0), default=3000, show_default=True, help="optimiser steps (episodes, or mini-batches for pre-training methods; 0 saves the initial model)")
@click.option("--within", type=click.Choice(["alphabet", "group"]), default=None, help="draw each episode's classes from one alphabet")
@click.option("--rotations/--no-rotations", default=None, help="add 90/180/270-degree rotated classes (default: on for Omniglot)")
@click.option("--val-fraction", type=Fraction(0, 1), default=0.1, show_default=True, help="fraction of training classes held out for validation, at least 2 classes (0: none)")
@click.option("--val-split", default=None, help="validate on this Omniglot split/alphabets instead, e.g. 'background:heldout'")
@click.option("--backbone", default=None, help="conv4 | mlp | identity | relation_conv4 | siamese_mnist | efficientnet_lite0/1/2 (pretrained; default: chosen by the method for the data)")
@click.option("--dropout", type=Fraction(0, 1), default=None, help="conv4 backbone: dropout with this probability after every block (default: none)")
@click.option("--width", type=click.IntRange(min=1), default=None,
              help="conv4 / relation_conv4 backbone: channels per block (default: the backbone's, 64; 32 for lstm_meta)")
@click.option("--trainable-blocks", type=click.IntRange(min=0), default=None, help="pretrained backbones: fine-tune the last N of the 16 blocks and the head (default 4; the rest stay frozen)")
@click.option("-p", "--param", "params", multiple=True, help="method option KEY=VALUE, repeatable (e.g. -p distance=cosine)")
@click.option("--lr", type=FiniteFloat(), default=1e-3, show_default=True)
@click.option("--optimizer", default="adam", show_default=True, type=click.Choice(["adam", "adamw", "sgd", "rmsprop"]))
@click.option("--schedule", default="cosine", show_default=True, type=click.Choice(SCHEDULES),
              help="learning rate: cosine to 0, step (halved at 50% and 75%), constant, or plateau (multiplied by "
                   "--plateau-factor after more than --plateau-patience validations without a better accuracy; needs validation)")
@click.option("--plateau-factor", type=Fraction(0, 1, open_low=True), default=None, help=f"--schedule plateau: multiply the learning rate by this  [default: {TrainConfig.plateau_factor}]")
@click.option("--plateau-patience", type=click.IntRange(min=0), default=None, help=f"--schedule plateau: validations without improvement tolerated  [default: {TrainConfig.plateau_patience}]")
@click.option("--tasks-per-step", type=click.IntRange(min=1), default=1, show_default=True, help="meta-batch: episodes per optimiser step")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True, help="mini-batch size for pre-training methods")
@click.option("--augment", type=click.Choice(["characters", "photos"]), default=None, help="augment the training batches (episodes or mini-batches) with this preset")
@click.option("--augment-per", type=click.Choice(["image", "class"]), default="image", show_default=True,
              help="with --augment on episodes: one transform per image, or one per class and episode shared by its images")
@click.option("--grad-clip", type=FiniteFloat(), default=None, help="clip the gradient norm to this value")
@click.option("--precision", type=click.Choice(["float32", "bfloat16"]), default="float32", show_default=True,
              help="bfloat16: the backbone's forward under autocast while training (~1.5-1.9x faster Conv4 steps on CPUs with AVX-512 BF16; weights, heads and losses stay float32)")
@click.option("--val-every", type=click.IntRange(min=1), default=500, show_default=True)
@click.option("--val-tasks", type=click.IntRange(min=0), default=200, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@device_option
@threads_option
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="run directory (checkpoints, logs, plots)")
@click.option("--resume", is_flag=True, help="continue the run in --out from its last checkpoint (an error if there is none)")
@click.option("--override", is_flag=True, help="with --resume: accept settings that differ from the run's, recording the change in its checkpoints")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=None, help="write the resumable 'last' checkpoint every N steps (default: every 60 s, and at the end)")
@click.option("--plots/--no-plots", default=True, show_default=True, help="save training-curve PNGs in the run directory")
@click.option("--quiet", is_flag=True, help="no progress bar")
@click.option("--json", "as_json", is_flag=True, help="print the final record as JSON")
def train_cmd(method, dataset, split, data_dir, image_size, alphabets, exclude_alphabets, skip_bad, way, shot, query, episodes,
              within, rotations, val_fraction, val_split, backbone, trainable_blocks, params, lr, optimizer, schedule, plateau_factor, plateau_patience, dropout, width, tasks_per_step,
              batch_size, augment, augment_per, grad_clip, precision, val_every, val_tasks, seed, device, threads, out_dir, resume, override, checkpoint_every, plots, quiet, as_json):
    """Train a method and write checkpoints (safetensors + JSON) and logs to --out.

    \b
    Examples:
      fewshot train --method protonet --dataset omniglot --split background --exclude-alphabets heldout \\
          --way 20 --shot 1 --query 5 --episodes 3000 --seed 0 --out runs/proto
      fewshot train --method protonet --dataset omniglot --split background_small1 --way 20 --shot 1 \\
          --episodes 3000 --out runs/proto-minimal
      fewshot train ... --out runs/proto --resume        # after a crash
      fewshot train --method protonet --split background_small1 --width 128 --out runs/proto-wide   # Conv4, 128 channels
      fewshot train --method matching --exclude-alphabets heldout --no-rotations --dropout 0.1 \\
          --schedule plateau --plateau-factor 0.5 --plateau-patience 2 --val-every 200 --out runs/book
      fewshot train --backbone efficientnet_lite0 --dataset folder:base_classes/ -p distance=cosine \\
          --way 5 --shot 1 --episodes 300 --lr 1e-4 --out runs/lite0-meta   # P>M>F's meta-training
    """
    apply_threads(threads)
    from ..data import with_rotations
    from ..engine.build import build_run
    from ..engine.distributed import close as close_process_group
    from ..engine.validation import holdout_classes
    from ..methods import canonical_name

    try:
        method = canonical_name(method)  # earlier names (meta-sgd, baseline++, ...) are aliases
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--method") from exc
    spec = backbone
    if backbone and "+" in backbone:
        raise click.UsageError(f"--backbone {backbone}: an ensemble (A+B) is a frozen feature extractor for "
                               "eval/predict --backbone; train one network (e.g. --backbone efficientnet_lite0)")
    if backbone in PRETRAINED_RESOLUTION:
        # decode at the network's resolution (Omniglot: its native 105 px); the last blocks are trained
        image_size = image_size or (105 if dataset == "omniglot" else PRETRAINED_RESOLUTION[backbone])
        spec = (backbone, {"trainable_blocks": DEFAULT_TRAINABLE_BLOCKS if trainable_blocks is None else trainable_blocks})
    elif trainable_blocks is not None:
        raise click.UsageError("--trainable-blocks applies to the pretrained backbones (efficientnet_lite0/1/2)")
    if schedule != "plateau" and (plateau_factor is not None or plateau_patience is not None):
        raise click.UsageError("--plateau-factor/--plateau-patience apply to --schedule plateau")
    try:  # the configuration's own checks, before any data is read
        cfg = TrainConfig(steps=episodes, way=way, shot=shot, query=query, within="group" if within else None,
                          tasks_per_step=tasks_per_step, batch_size=batch_size, augment=augment, augment_per=augment_per, optimizer=optimizer,
                          lr=lr, schedule=schedule, grad_clip=grad_clip, precision=precision, val_every=val_every, val_tasks=val_tasks,
                          seed=seed, device=device, progress=not quiet, checkpoint_every=checkpoint_every,
                          **{k: v for k, v in {"plateau_factor": plateau_factor, "plateau_patience": plateau_patience}.items()
                             if v is not None})
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    data = load_dataset_arg(dataset, split, data_dir, image_size, alphabets, exclude_alphabets, skip_bad=skip_bad)
    spec = _with_conv4_options(method, spec, data.item_shape, dropout=dropout, hidden=width)
    info = {**data.info, "dataset": dataset, "split": split}
    try:
        val = None
        if val_split:
            vsplit, _, valph = val_split.partition(":")
            val = load_dataset_arg(dataset, vsplit, data_dir, image_size, valph or None, skip_bad=skip_bad)
        elif val_fraction > 0:
            data, val = holdout_classes(data, val_fraction, seed=seed)
        if rotations is None:
            rotations = dataset == "omniglot"
        if rotations:
            data = with_rotations(data)
        trainer = build_run(method, data, cfg, out_dir, params=parse_params(params), backbone=spec,
                            val_data=val, data_info=info)
        if override and not resume:
            raise click.UsageError("--override only applies with --resume")
        records = trainer.fit(resume=resume, override=override)
    except (OSError, ValueError, FloatingPointError) as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        close_process_group()
    if plots and records:
        from ..engine.plots import plot_training_curves

        plot_training_curves(records, Path(out_dir) / "curves.png")
    final = records[-1] if records else {}
    if as_json:
        echo_json({"out": out_dir, **final})
    else:
        click.echo(f"trained {method} for {episodes} steps -> {out_dir}  " + "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in final.items()))


#: the backbone options `fewshot train` sets, by flag -> the conv4-family backbones that have them
CONV4_OPTIONS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "dropout": ("--dropout", "the conv4 backbone", ("conv4",)),
    "hidden": ("--width", "the conv4 and relation_conv4 backbones", ("conv4", "relation_conv4")),
}


def _with_conv4_options(method: str, backbone: str | tuple[str, dict] | None, item_shape: tuple[int, ...],
                        **options: float | int | None) -> str | tuple[str, dict] | None:
    """The backbone spec of the run (``--backbone``, or the method's default for the data) with the
    ``options`` that are not None set (keys of :data:`CONV4_OPTIONS`: ``dropout``, ``hidden``);
    ``backbone`` unchanged when all are None. A backbone without one of them is a usage error."""
    options = {key: value for key, value in options.items() if value is not None}
    if not options:
        return backbone
    from ..methods import method_class
    from ..nn.backbones import backbone_spec_for

    if isinstance(backbone, tuple):  # a pretrained backbone, already specified
        spec = backbone
    else:
        spec = backbone_spec_for(backbone, item_shape) if backbone else method_class(method).default_backbone(item_shape)
    for key in options:
        flag, which, names = CONV4_OPTIONS[key]
        if spec is None or spec[0] not in names:
            raise click.UsageError(f"{flag} applies to {which}, but this run's backbone is "
                                   f"{spec[0] if spec else 'none'}; drop {flag} or pass --backbone conv4")
    return spec[0], {**spec[1], **options}
