"""``fewshot predict``: enroll a few examples per class from folders, classify new images."""

from __future__ import annotations

from pathlib import Path

import click
import torch

from . import main
from .common import device_option, echo_json
from .evaluate import load_run


@main.command("predict")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--support", required=True, type=click.Path(exists=True, file_okay=False), help="folder with one sub-folder of images per class")
@click.option("--query", "queries", required=True, multiple=True, type=click.Path(exists=True, dir_okay=False), help="image file(s) to classify (repeat --query, or list several)")
@click.option("--threshold", type=float, default=None, help="answer 'unknown' when the top probability is below this")
@click.option("--checkpoint", default="best", show_default=True)
@device_option
@click.option("--json", "as_json", is_flag=True)
def predict_cmd(run_dir, support, queries, threshold, checkpoint, device, as_json):
    """Classify query images among the classes of a support folder.

    \b
    Examples:
      fewshot predict runs/proto --support staff/ --query visitor.png
      fewshot predict runs/proto --support staff/ --query a.png --query b.png --threshold 0.6 --json
    """
    from ..data import ImageSpec, load_image_folder
    from ..data.images import load_images
    from ..methods.base import inference_context

    method, info, dev = load_run(run_dir, checkpoint, device)
    image = info.get("data", {}).get("image")
    if not image:
        raise click.ClickException(f"{run_dir} was not trained on images; predict needs an image model")
    spec = ImageSpec.from_dict(image)
    try:
        sup = load_image_folder(support, spec)
        qx = load_images([Path(q) for q in queries], spec).float().div(255)
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    method.eval()
    with inference_context(method):
        method.fit(sup.items(torch.arange(len(sup))).to(dev), sup.y.to(dev))
        proba = method.predict_proba(qx.to(dev)).cpu()
    conf, pred = proba.max(-1)
    rows = []
    for i, (q, c, p) in enumerate(zip(queries, conf.tolist(), pred.tolist())):
        label = sup.class_names[p] if threshold is None or c >= threshold else "unknown"
        rows.append({"query": q, "prediction": label, "score": c,
                     "probabilities": dict(zip(sup.class_names, proba[i].tolist()))})
    if as_json:
        echo_json({"run": run_dir, "support": support, "threshold": threshold, "predictions": rows})
    else:
        for r in rows:
            click.echo(f"{r['query']}\t{r['prediction']}\t{r['score']:.3f}")
