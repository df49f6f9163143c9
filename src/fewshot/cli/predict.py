"""``fewshot predict``: enroll a few examples per class from folders, classify new images."""

from __future__ import annotations

from pathlib import Path

import click

from . import main
from .common import FiniteFloat, apply_threads, check_run_fits, device_option, echo_json, report_skipped, run_image_spec, threads_option
from .evaluate import load_run
from .pretrained import pretrained_option


def tsv_field(value: str) -> str:
    """``value`` safe inside one TSV field: backslash, tab, newline and carriage return escaped."""
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


@main.command("predict")
@click.argument("run_dir", required=False, type=click.Path(exists=True, file_okay=False))
@pretrained_option
@click.argument("more_queries", nargs=-1, type=click.Path(exists=True, dir_okay=False), metavar="[QUERY]...")
@click.option("--support", required=True, type=click.Path(exists=True, file_okay=False), help="folder with one sub-folder of images per class")
@click.option("--query", "queries", required=True, multiple=True, type=click.Path(exists=True, dir_okay=False), help="image file(s) to classify (repeat --query, or list several after it)")
@click.option("--threshold", type=FiniteFloat(0.0, inclusive=True), default=None,
              help="answer --unknown-label when the query is farther than this from every class (--reject-by distance, "
                   "in units of the support examples' own spread; 2.0 is a good start) or its top probability is below it (probability, 0..1)")
@click.option("--reject-by", type=click.Choice(["distance", "probability"]), default="distance", show_default=True,
              help="distance to the nearest class prototype, calibrated on the support set, or the top class probability")
@click.option("--unknown-label", default="unknown", show_default=True, help="the answer for rejected queries (must not name a class)")
@click.option("--invert/--no-invert", default=None, help="invert the images (default: as the run's training data)")
@click.option("--skip-bad", is_flag=True, help="skip support images that cannot be decoded (they are listed) instead of stopping")
@click.option("--checkpoint", default="best", show_default=True)
@click.option("-p", "--param", "params", multiple=True,
              help="option KEY=VALUE, repeatable: with RUN_DIR, overrides an evaluation setting of the trained method "
                   "(as in fewshot eval); with --backbone, an option of the classifier on its features")
@device_option
@threads_option
@click.option("--json", "as_json", is_flag=True)
def predict_cmd(run_dir, backbone, more_queries, support, queries, threshold, reject_by, unknown_label, invert, skip_bad,
                checkpoint, params, device, threads, as_json):
    """Classify query images among the classes of a support folder; with --threshold, answer
    'unknown' for images of none of them.

    \b
    Examples:
      fewshot predict runs/proto --support staff/ --query visitor.png
      fewshot predict runs/proto --support staff/ --query a.png b.png c.png --threshold 2.0 --json
      fewshot predict runs/proto --support staff/ --query a.png --reject-by probability --threshold 0.6
      fewshot predict --backbone efficientnet_lite0 --support products/ --query new.jpg --threshold 2.0 --json
    """
    apply_threads(threads)
    import torch

    from ..data import load_image_folder
    from ..data.images import load_images
    from ..methods.base import inference_context
    from ..methods.openset import PrototypeRejector

    queries = list(queries) + list(more_queries)
    if threshold is not None and reject_by == "probability" and threshold > 1:
        raise click.BadParameter(f"{threshold} is not a probability (0..1) for --reject-by probability", param_hint="--threshold")
    if (run_dir is None) == (backbone is None):
        raise click.UsageError("give a trained RUN_DIR or --backbone NAME (a pretrained network, no training), not both")
    if backbone is not None:
        if skip_bad or invert is not None:
            raise click.UsageError("--skip-bad and --invert apply to a trained RUN_DIR, not to --backbone")
        from ..engine.features import embed_folder
        from ..utils import resolve_device
        from .pretrained import embedder, feature_method

        emb = embedder(backbone, quiet=as_json)
        try:
            sup = embed_folder(emb, support)  # features [N, dim], cached by file content
            qx = emb.embed_files([Path(q) for q in queries])
        except (FileNotFoundError, ValueError) as exc:
            raise click.ClickException(str(exc)) from exc
        method, dev = feature_method(None, params), resolve_device(device)
        info = {}
        method.to(dev)
    else:
        method, info, dev = load_run(run_dir, checkpoint, device, params)
        spec = run_image_spec(info, invert=invert)
        if spec is None:
            raise click.ClickException(f"{run_dir} was not trained on images; predict needs an image model")
        try:
            sup = load_image_folder(support, spec, skip_bad=skip_bad)
            qx = load_images([Path(q) for q in queries], spec).float().div(255)
        except (FileNotFoundError, ValueError) as exc:
            raise click.ClickException(str(exc)) from exc
        report_skipped(sup)
        check_run_fits(sup, info, invert, f"the support images in {support}")
    if unknown_label in sup.class_names:
        raise click.ClickException(f"the class folder {unknown_label!r} in {support} has the name of the rejection label; "
                                   "rename the folder or choose another --unknown-label")
    qx = qx.to(dev)
    sx, sy = sup.items(torch.arange(len(sup))).to(dev), sup.y.to(dev)
    method.eval()
    try:
        with inference_context(method):
            proba = method.fit(sx, sy).predict_proba(qx).cpu()
            rejector = PrototypeRejector().fit(method.embed(sx).cpu(), sy.cpu())
            distance = rejector.score(method.embed(qx).cpu())
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    conf, pred = proba.max(-1)
    rows = []
    for i, q in enumerate(queries):
        score = float(distance[i]) if reject_by == "distance" else float(conf[i])
        rejected = threshold is not None and (score > threshold if reject_by == "distance" else score < threshold)
        rows.append({"query": q, "prediction": unknown_label if rejected else sup.class_names[int(pred[i])],
                     "rejected": rejected, "score": score, "probability": float(conf[i]), "distance": float(distance[i]),
                     "probabilities": dict(zip(sup.class_names, proba[i].tolist()))})
    if as_json:
        echo_json({"run": run_dir, "backbone": backbone, "overrides": info.get("overrides", {}), "support": support, "threshold": threshold, "reject_by": reject_by,
                   "unknown_label": unknown_label, "predictions": rows})
    else:
        for r in rows:
            click.echo(f"{tsv_field(r['query'])}\t{tsv_field(r['prediction'])}\t{r['score']:.3f}")
