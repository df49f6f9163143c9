"""``fewshot verify RUN A.png B.png``: same or different (person, writer, character)?"""

from __future__ import annotations

import json
from pathlib import Path

import click

from . import main
from .common import device_option, echo_json
from .evaluate import load_run

CALIBRATION = "verify.json"


@main.command("verify")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("image_a", type=click.Path(exists=True, dir_okay=False))
@click.argument("image_b", type=click.Path(exists=True, dir_okay=False))
@click.option("--calibrate-on", "calib_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="folder with one sub-folder of images per person/writer: calibrate the threshold on random pairs of "
                   "it and save it in RUN/verify.json")
@click.option("--pairs", type=int, default=1000, show_default=True, help="calibration pairs (half same, half different)")
@click.option("--threshold", type=float, default=None, help="use this score threshold instead of RUN/verify.json")
@click.option("--checkpoint", default="best", show_default=True)
@device_option
@click.option("--json", "as_json", is_flag=True)
def verify_cmd(run_dir, image_a, image_b, calib_dir, pairs, threshold, checkpoint, device, as_json):
    """Say whether two images show the same class, with a calibrated threshold.

    The score is the run's pair score (a Siamese run's "same" logit or −distance; other methods:
    −distance of the embeddings); "same" when it is at least the threshold. The threshold comes
    from --threshold, or from RUN/verify.json, written by --calibrate-on (the one with the best
    balanced accuracy on random pairs of that folder).

    \b
    Examples:
      fewshot verify runs/siamese signatures/a.png signatures/b.png --calibrate-on signatures/known/
      fewshot verify runs/siamese a.png b.png --json
    """
    from ..data import ImageSpec, load_image_folder
    from ..data.images import load_images
    from ..methods.base import inference_context
    from ..engine.verify import calibrate_on, pair_score

    method, info, dev = load_run(run_dir, checkpoint, device)
    image = info.get("data", {}).get("image")
    if not image:
        raise click.ClickException(f"{run_dir} was not trained on images; verify needs an image model")
    spec = ImageSpec.from_dict(image)
    calib_path = Path(run_dir) / CALIBRATION
    method.eval()
    with inference_context(method):
        calib = None
        if calib_dir is not None:
            try:
                calib = calibrate_on(method, load_image_folder(calib_dir, spec), pairs, device=dev)
            except (FileNotFoundError, ValueError) as exc:
                raise click.ClickException(str(exc)) from exc
            calib["folder"] = str(calib_dir)
            calib_path.write_text(json.dumps(calib, indent=1))
        if threshold is None:
            if calib is None and not calib_path.is_file():
                raise click.ClickException(f"no threshold: pass --threshold T, or calibrate once with --calibrate-on FOLDER "
                                           f"(one sub-folder per person/writer), which writes {calib_path}")
            calib = calib or json.loads(calib_path.read_text())
            threshold = float(calib["threshold"])
        try:
            x = load_images([Path(image_a), Path(image_b)], spec).float().div(255).to(dev)
        except (FileNotFoundError, ValueError) as exc:
            raise click.ClickException(str(exc)) from exc
        score = float(pair_score(method, x[:1], x[1:])[0])
    same = score >= threshold
    out = {"run": run_dir, "a": image_a, "b": image_b, "score": score, "threshold": threshold,
           "answer": "same" if same else "different"}
    if calib is not None:
        out["calibration"] = calib
    if as_json:
        echo_json(out)
    else:
        click.echo(f"{out['answer']}\tscore {score:.4f}\tthreshold {threshold:.4f}")
