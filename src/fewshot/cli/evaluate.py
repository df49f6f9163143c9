"""``fewshot eval``."""

from __future__ import annotations

from pathlib import Path

import click

from . import main
from .common import apply_threads, check_run_fits, data_options, device_option, echo_json, load_dataset_arg, parse_params, run_image_spec, threads_option
from .pretrained import pretrained_option


def load_run(run_dir: str, checkpoint: str, device: str, params: tuple[str, ...] = ()):
    """The run's method on ``device``; ``params`` (``-p KEY=VALUE``) override its saved options."""
    from ..engine.checkpoint import load_checkpoint
    from ..utils import resolve_device

    dev = resolve_device(device)
    try:
        method, info = load_checkpoint(run_dir, checkpoint, map_location=dev, overrides=parse_params(params))
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    return method.to(dev), info, dev


def load_runs(run_dirs: tuple[str, ...], checkpoint: str, device: str, params: tuple[str, ...] = ()):
    """:func:`load_run` for one run; for several, their :class:`~fewshot.methods.ensemble.ScoreEnsemble`
    (each run loaded with the same checkpoint tag and ``params``), refused unless every run was trained
    on the same image spec. ``info`` is the first run's, its ``method`` naming every member."""
    from ..methods.ensemble import ScoreEnsemble

    loaded = [load_run(r, checkpoint, device, params) for r in run_dirs]
    if len(loaded) == 1:
        return loaded[0]

    def spec(info):
        s = run_image_spec(info)
        return s, ("non-image data" if s is None else f"{s.size}-px {s.channels}-channel images{' (inverted)' if s.invert else ''}")

    first, said = spec(loaded[0][1])
    for run, (_, info, _) in zip(run_dirs[1:], loaded[1:]):
        other, says = spec(info)
        if other != first:
            raise click.ClickException(f"{run} was trained on {says} but {run_dirs[0]} on {said}: an ensemble's runs "
                                       "must share their image size, channels and inversion")
    info = {**loaded[0][1], "method": "+".join(info["method"] for _, info, _ in loaded)}
    return ScoreEnsemble([m for m, _, _ in loaded]), info, loaded[0][2]


def build_untrained(name: str, params: tuple[str, ...], device: str):
    """A method with nothing to train (no backbone, no parameters), built from its name and ``-p`` options."""
    from ..methods import build_method
    from ..utils import resolve_device

    try:
        method = build_method(name, None, **parse_params(params))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--method/-p") from exc
    if any(True for _ in method.parameters()):
        raise click.UsageError(f"{name} has weights to train: run `fewshot train --method {name} ...` and evaluate its run directory")
    dev = resolve_device(device)
    return method.to(dev), {"method": method.name, "data": {}}, dev


def run_evaluation(method, episodes, device, trained_size: int | None, size: int | None, what: str, **kwargs):
    """:func:`~fewshot.engine.evaluate.evaluate`, its failures as a ClickException naming ``what``
    was evaluated: a task the method cannot take (``ValueError``, e.g. more classes than a fixed
    head has) or images at another size than the run was trained on that its network refuses."""
    from ..engine.evaluate import evaluate

    try:
        return evaluate(method, episodes, device, **kwargs)
    except ValueError as exc:
        raise click.ClickException(f"{what}: {exc}") from exc
    except RuntimeError as exc:
        if trained_size is None or size is None or size == trained_size:
            raise
        raise click.ClickException(f"the run was trained on {trained_size}-px images and its network does not take "
                                   f"{size}-px ones ({exc}); drop --image-size to decode at {trained_size} px") from exc


@main.command("eval")
@click.argument("run_dirs", nargs=-1, type=click.Path(exists=True, file_okay=False))
@pretrained_option
@click.option("--method", "method_name", default=None,
              help="with --backbone: the classifier on its features (default: protonet, cosine); alone: a method "
                   "with nothing to train (e.g. bpl), evaluated without a run")
@click.option("-p", "--param", "params", multiple=True, help="option KEY=VALUE, repeatable; with RUN_DIR: overrides an evaluation setting of the "
                   "trained method (e.g. test_inner_steps=10; options that change its weights are refused)")
@data_options
@click.option("--way", type=click.IntRange(min=2), default=5, show_default=True)
@click.option("--shot", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--query", type=click.IntRange(min=1), default=5, show_default=True, help="queries per class")
@click.option("--within", type=click.Choice(["alphabet", "group"]), default=None, help="each task's classes from one alphabet (Lake-style)")
@click.option("--tasks", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="seed of the task set (same seed = same tasks)")
@click.option("--task-file", type=click.Path(dir_okay=False), default=None, help="load the task set from this JSON (written if it does not exist)")
@click.option("--lake-runs", type=click.Path(exists=True), default=None, help="Lake's all_runs.zip or its folder: report the 20-run error instead (with RUN_DIR, "
                   "--backbone or --method)")
@click.option("--checkpoint", default="best", show_default=True, help="best | last")
@click.option("--tta", type=click.Choice(["characters"]), default=None,
              help="test-time augmentation of a trained RUN_DIR: embed every support and query image as the mean over fixed "
                   "views (characters: the image and its eight one-pixel shifts; 9x the embedding cost)")
@click.option("--confusion", is_flag=True, help="include the per-class confusion matrix (JSON)")
@click.option("--plot-episode", type=click.Path(dir_okay=False), default=None, help="save the first task as an episode grid PNG")
@click.option("--invert/--no-invert", default=None, help="folder datasets: invert the images (default: as the run's training data); --lake-runs: "
                   "map ink to 1 as for Omniglot (default: on); refused with --backbone (it sees images as drawn)")
@device_option
@threads_option
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
def eval_cmd(run_dirs, backbone, method_name, params, dataset, split, data_dir, image_size, alphabets, exclude_alphabets,
             skip_bad, way, shot, query, within, tasks, seed, task_file, lake_runs, checkpoint, tta, confusion, plot_episode, invert, device,
             threads, as_json):
    """Evaluate a trained run: accuracy ± 95% CI over a fixed task set, or Lake's protocol.

    Several RUN_DIRs are evaluated as one ensemble: each run fits the support set and the ensemble
    scores a query by the sum of the runs' log-softmax scores (the runs must share their image spec).

    \b
    Examples:
      fewshot eval runs/proto --dataset omniglot --split background --alphabets heldout \\
          --way 20 --shot 1 --within alphabet --tasks 1000 --seed 0 --json
      fewshot eval runs/proto --lake-runs all_runs.zip --json
      fewshot eval runs/proto-s1 runs/proto-s2 runs/proto-s3 --lake-runs all_runs.zip --json
      fewshot eval runs/proto --lake-runs all_runs.zip --tta characters --json
      fewshot eval runs/maml --dataset omniglot -p test_inner_steps=10 -p test_inner_lr=0.1
      fewshot eval --backbone efficientnet_lite0 --dataset folder:photos/ --way 5 --shot 1 --json
      fewshot eval --backbone efficientnet_lite0+efficientnet_lite1 --lake-runs all_runs.zip --json
      fewshot eval --method bpl --image-size 105 --lake-runs all_runs.zip --json
    """
    apply_threads(threads)
    import torch

    from ..data import ImageSpec, load_lake_runs
    from ..data.images import check_polarity
    from ..tasks.episodes import TaskSet, lake_episodes

    run_dir = run_dirs[0] if run_dirs else None
    if run_dirs:
        if backbone is not None or method_name:
            raise click.UsageError("a run directory records its own method and backbone: give RUN_DIR alone (-p to "
                                   "override an evaluation setting), or --backbone / --method instead of a run")
        method, info, dev = load_runs(run_dirs, checkpoint, device, params)
    elif backbone is not None:
        from ..utils import resolve_device
        from .pretrained import feature_dataset, feature_lake_runs, feature_method

        if invert is not None:
            # --invert chooses how a trained run's images are decoded (as its training data); a pretrained
            # network is shown every image as drawn (folders as stored, Omniglot's and Lake's pages dark on white)
            raise click.UsageError("--invert/--no-invert apply to a trained RUN_DIR: a pretrained --backbone sees images "
                                   "as drawn (Omniglot's and Lake's pages dark on white); drop the flag")
        if skip_bad:
            raise click.UsageError("--skip-bad applies to a trained RUN_DIR's folder decoding, not to --backbone (as in "
                                   "predict): drop it, and remove or replace any image that cannot be decoded")
        if lake_runs:
            runs = feature_lake_runs(backbone, lake_runs, image_size, quiet=as_json)
        else:
            data = feature_dataset(backbone, dataset, split, data_dir, image_size, alphabets, exclude_alphabets, quiet=as_json)
        method, dev = feature_method(method_name, params, transductive=True), resolve_device(device)
        method.to(dev)
        info = {"method": f"{method.name} on {backbone} features"}
    elif method_name is not None:
        method, info, dev = build_untrained(method_name, params, device)
    else:
        raise click.UsageError("give a trained RUN_DIR, --backbone NAME (a pretrained network, no training) or "
                               "--method NAME (a method with nothing to train, e.g. bpl)")
    if tta:
        if not run_dirs:
            raise click.UsageError("--tta applies to a trained RUN_DIR (its network embeds the augmented views): drop it")
        from ..data.augment import tta_views
        from ..methods.augmented import TestTimeAugmentation

        try:
            method = TestTimeAugmentation(method, tta_views(tta))
        except ValueError as exc:
            raise click.UsageError(f"--tta {tta}: {exc}") from exc
    image = info.get("data", {}).get("image", {})
    overrides = info.get("overrides", {})  # a run evaluated with -p: the options it replaced
    note = f" (with {', '.join(f'{k}={v}' for k, v in overrides.items())})" if overrides else ""
    if len(run_dirs) > 1:
        note += f" (ensemble of {len(run_dirs)} runs)"
    if tta:
        note += f" (test-time views: {tta})"
    extra = {"runs": list(run_dirs)} if len(run_dirs) > 1 else {}  # the JSON's ensemble members and views
    extra["tta"] = tta
    if lake_runs:
        if backbone is None:
            # Lake's pages are Omniglot's (dark ink on white): ink = 1 unless --no-invert, at the run's size and channels
            spec = ImageSpec(image_size or image.get("size", 28), image.get("channels", 1), True if invert is None else invert)
            try:
                runs = load_lake_runs(lake_runs, spec)
                if invert is None and runs:
                    check_polarity(torch.cat([torch.cat([r.support, r.query]) for r in runs]),
                                   info.get("data", {}).get("pixel_mean"), f"Lake's runs ({lake_runs})")
            except (FileNotFoundError, ValueError) as exc:
                raise click.ClickException(str(exc)) from exc
        res = run_evaluation(method, lake_episodes(runs), dev, image.get("size"), image_size,
                             f"Lake's runs ({runs[0].support.shape[0]}-way 1-shot)")
        out = {"run": run_dir, **extra, "backbone": backbone, "method": info["method"], "overrides": overrides,
               "protocol": "lake-20-runs", **res.to_dict(),
               "per_run": [100.0 * (1.0 - acc) for acc in res.per_task]}  # each run's error %
        if as_json:
            echo_json(out)
        else:
            click.echo(f"Lake one-shot error: {res.error:.2f}% over {res.trials} trials ({len(runs)} runs){note}")
        return
    if backbone is None:
        data = load_dataset_arg(dataset, split, data_dir, image_size or image.get("size"), alphabets, exclude_alphabets,
                                channels=image.get("channels"), spec=run_image_spec(info, image_size, invert),
                                skip_bad=skip_bad, invert=invert)  # invert: a --method without a run has no spec
        check_run_fits(data, info, invert, f"--dataset {dataset}")
    try:
        if task_file and Path(task_file).exists():
            taskset = TaskSet.load(task_file)
        else:
            taskset = TaskSet.generate(data, way, shot, query, tasks, within="group" if within else None, seed=seed)
            if task_file:
                try:
                    taskset.save(task_file)
                except OSError as exc:
                    raise click.BadParameter(f"cannot write {task_file}: {exc.strerror or exc}", param_hint="--task-file") from exc
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    res = run_evaluation(method, taskset.episodes(data), dev, image.get("size"), data.x.shape[-1] if data.x.ndim == 4 else None,
                         f"{taskset.meta.get('way', way)}-way {taskset.meta.get('shot', shot)}-shot tasks", confusion=confusion)
    if plot_episode:
        from ..engine.plots import plot_episode as draw
        from ..methods.base import inference_context
        from ..tasks.episodes import assemble

        ep = assemble(data, taskset.tasks[0]).to(dev)
        method.eval()
        with inference_context(method):
            pred = method.fit(ep.support_x, ep.support_y).predict(ep.query_x)
        draw(ep, pred.cpu(), plot_episode)
    out = {"run": run_dir, **extra, "backbone": backbone, "method": info["method"], "overrides": overrides, "dataset": dataset, "split": split,
           "way": taskset.meta.get("way", way), "shot": taskset.meta.get("shot", shot),
           "query": taskset.meta.get("query", query), "within": within, "seed": seed, **res.to_dict()}
    if as_json:
        echo_json(out)
    else:
        click.echo(f"{out['way']}-way {out['shot']}-shot{' within ' + within if within else ''}: "
                   f"accuracy {100 * res.accuracy:.2f}% ± {100 * res.ci95:.2f} (95% CI, {res.tasks} tasks){note}")
