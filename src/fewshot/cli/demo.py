"""``fewshot demo``: train a ProtoNet briefly and report held-out accuracy ± 95% CI."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from . import main
from .common import device_option


#: what a demo writes into --out (and only this is ever removed from it)
DEMO_FILES = ("curves.png", "episode.png", "results.json", "metrics.jsonl", "metrics.csv", ".lock")
DEMO_PATTERNS = ("best.*", "last.*", "*.tmp")
MARKER = ".fewshot-demo"


def clear_demo_dir(out: Path) -> None:
    """Make ``out`` ready for a demo: create it, or empty a folder an earlier demo wrote (its marker
    file says so) of the demo's own files only. A non-empty folder without the marker is refused:
    the demo never deletes what it did not create."""
    if out.exists() and not out.is_dir():
        raise click.BadParameter(f"{out} is a file, not a folder", param_hint="--out")
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists():
            raise click.BadParameter(f"{out} is not empty and was not written by `fewshot demo`; the demo will not "
                                     "touch it: choose an empty or new folder", param_hint="--out")
        for p in list(out.iterdir()):
            if p.is_file() and (p.name in DEMO_FILES or any(p.match(g) for g in DEMO_PATTERNS)):
                p.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / MARKER).write_text("written by `fewshot demo`; its files here are replaced by the next demo\n")
    except OSError as exc:
        raise click.BadParameter(f"cannot write to {out}: {exc.strerror or exc}", param_hint="--out") from exc


@main.command("demo")
@click.option("--data-dir", default=None, envvar="FEWSHOT_DATA", help="where Omniglot's archives are (else: scikit-learn digits)")
@click.option("--episodes", type=click.IntRange(min=1), default=400, show_default=True, help="training episodes")
@click.option("--tasks", type=click.IntRange(min=1), default=300, show_default=True, help="evaluation tasks per setting")
@click.option("--out", "out_dir", default="runs/demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--seed", type=int, default=0, show_default=True)
@device_option
def demo_cmd(data_dir, episodes, tasks, out_dir, seed, device):
    """Train a prototypical network on Omniglot (or scikit-learn's digits when Omniglot is not
    found), evaluate on held-out classes, print accuracy ± 95% CI and save plots.

    \b
    Examples:
      fewshot demo
      FEWSHOT_DATA=../shared/data fewshot demo --episodes 1000
    """
    from ..data import load_digits_images, load_omniglot, with_rotations
    from ..data.omniglot import HELDOUT_ALPHABETS, SPLITS
    from ..data.sources import find_file
    from ..engine.build import build_run
    from ..engine.config import TrainConfig
    from ..engine.evaluate import evaluate
    from ..engine.plots import plot_episode, plot_training_curves
    from ..methods.base import inference_context
    from ..tasks.episodes import TaskSet, assemble

    out = Path(out_dir)
    clear_demo_dir(out)
    if find_file(SPLITS["background"], data_dir, extracted="images_background"):
        data = load_omniglot("background", data_dir=data_dir)
        train = data.select_groups(HELDOUT_ALPHABETS, exclude=True)
        test = data.select_groups(HELDOUT_ALPHABETS)
        train, val = train.split_classes(0.1, seed=seed)
        train = with_rotations(train)
        source = "Omniglot background (6 held-out alphabets for testing)"
        settings = [(5, 1, None), (5, 5, None), (20, 1, None), (20, 1, "group")]
        way, query = 20, 5
    else:
        data = load_digits_images()
        train, test = data.subset_classes(range(6)), data.subset_classes(range(6, 10))
        val = None
        source = "scikit-learn digits (Omniglot not found: pass --data-dir or set FEWSHOT_DATA); classes 0-5 train, 6-9 test"
        settings = [(4, 1, None), (4, 5, None)]
        way, query = 5, 5
    click.echo(f"data: {source}")
    cfg = TrainConfig(steps=episodes, way=way, shot=1, query=query, val_every=max(episodes // 4, 1), val_tasks=100 if val else 0,
                      seed=seed, device=device, log_every=max(episodes // 20, 1))
    t0 = time.perf_counter()
    trainer = build_run("protonet", train, cfg, out, val_data=val)
    records = trainer.fit()
    method = trainer.method
    train_s = time.perf_counter() - t0
    curves = plot_training_curves(records, out / "curves.png")
    results = []
    for w, s, within in settings:
        ts = TaskSet.generate(test, w, s, 5, tasks, within=within, seed=seed)
        r = evaluate(method, ts.episodes(test))
        results.append({"way": w, "shot": s, "within": within, "accuracy": r.accuracy, "ci95": r.ci95, "tasks": r.tasks})
        click.echo(f"  {w:2d}-way {s}-shot{' within alphabet' if within else '':16s} accuracy {100 * r.accuracy:6.2f}% ± {100 * r.ci95:.2f}  ({r.tasks} tasks)")
    ep = assemble(test, TaskSet.generate(test, settings[0][0], 1, 5, 1, seed=seed).tasks[0])
    method.eval()
    with inference_context(method):
        pred = method.fit(ep.support_x, ep.support_y).predict(ep.query_x)
    grid = plot_episode(ep, pred, out / "episode.png")
    (out / "results.json").write_text(json.dumps({"data": source, "episodes": episodes, "train_seconds": train_s, "results": results}, indent=1))
    click.echo(f"trained {episodes} episodes in {train_s:.0f}s; plots: {curves}, {grid}; results: {out / 'results.json'}")
