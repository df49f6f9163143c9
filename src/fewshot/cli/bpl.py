"""``fewshot bpl``: the BPL generative model of characters (Lake et al. 2015): learn it from pen
strokes, sample new characters and new exemplars of a character, plot stroke data."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    import numpy as np

from . import main

STROKES_HELP = "stroke set the model is learned from when --model is not given"


def _model(model: str | None, strokes: str, data_dir: str | None):
    from ..bpl.model import BPLModel
    from ..data.strokes import load_strokes

    try:
        if model:
            return BPLModel.load(model)
        return BPLModel.fit(load_strokes(strokes, data_dir))
    except (FileNotFoundError, ValueError, KeyError, TypeError) as exc:
        raise click.ClickException(f"cannot get the BPL model: {exc}") from exc


def _image(path: str) -> np.ndarray:
    from ..data.images import ImageSpec, decode_image

    try:
        img = decode_image(Path(path), ImageSpec(size=105, channels=1, invert=True))[0] > 127
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    if not img.any():
        raise click.ClickException(f"{path} has no ink (expected dark strokes on a light page, as in Omniglot)")
    return img


@main.group("bpl")
def bpl() -> None:
    """Bayesian Program Learning: a generative model of handwritten characters.

    \b
    Examples:
      fewshot bpl fit --out bpl_model.json
      fewshot bpl sample-types --model bpl_model.json --n 24 --out types.png
      fewshot bpl sample-tokens char.png --model bpl_model.json --n 11 --out tokens.png
      fewshot bpl plot-strokes Balinese/character05 --out strokes.png
    """


_common = [
    click.option("--model", type=click.Path(exists=True, dir_okay=False), help="a model JSON written by `fewshot bpl fit`"),
    click.option("--strokes", default="background_small1", show_default=True, help=STROKES_HELP),
    click.option("--data-dir", help="folder with the stroke archives (default: $FEWSHOT_DATA, then the cache)"),
]


def common(f):
    for opt in reversed(_common):
        f = opt(f)
    return f


@bpl.command("fit")
@click.option("--strokes", default="background_small1", show_default=True, help="stroke set to learn from")
@click.option("--data-dir", help="folder with the stroke (and image) archives")
@click.option("--primitives", default=40, show_default=True, type=click.IntRange(2, 500))
@click.option("--ink/--no-ink", default=True, show_default=True, help="fit the ink width/gain/noise on the paired images")
@click.option("--seed", default=0, show_default=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False))
def fit_cmd(strokes, data_dir, primitives, ink, seed, out) -> None:
    """Learn primitives, relations, start positions (and ink) from pen strokes; write JSON."""
    from ..bpl.model import BPLModel
    from ..data.strokes import load_strokes

    try:
        drawings = load_strokes(strokes, data_dir, images=ink)
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    model = BPLModel.fit(drawings, primitives=primitives, seed=seed)
    if ink:
        model.fit_ink(drawings[:: max(1, len(drawings) // 150)])
    model.save(out)
    click.echo(f"learned from {len(drawings)} drawings: {primitives} primitives, ink sd {model.ink_sd}, "
               f"gain {model.ink_gain}, noise {model.noise} -> {out}")


@bpl.command("sample-types")
@common
@click.option("--n", default=24, show_default=True, type=click.IntRange(1, 400))
@click.option("--seed", default=0, show_default=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="PNG grid")
def sample_types(model, strokes, data_dir, n, seed, out) -> None:
    """New characters drawn from the prior (a grid of ink maps)."""
    from ..bpl.plots import plot_grid, sample_type_images

    m = _model(model, strokes, data_dir)
    plot_grid(sample_type_images(m, n, seed), out, title=f"{n} new character types (seed {seed})")
    click.echo(out)


@bpl.command("sample-tokens")
@click.argument("image", type=click.Path(exists=True, dir_okay=False))
@common
@click.option("--n", default=11, show_default=True, type=click.IntRange(1, 400))
@click.option("--walks", default=100, show_default=True, type=click.IntRange(1, 10000))
@click.option("--seed", default=0, show_default=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="PNG grid (the image first)")
def sample_tokens(image, model, strokes, data_dir, n, walks, seed, out) -> None:
    """New exemplars of the character in IMAGE: parse it, then sample tokens of the best parse."""
    from ..bpl.parse import parse_image
    from ..bpl.plots import plot_grid, sample_token_images

    m = _model(model, strokes, data_dir)
    img = _image(image)
    best = parse_image(img, m, k=1, walks=walks, seed=seed)[0]
    plot_grid([img.astype(float)] + sample_token_images(m, best.ctype, n, seed), out,
              title=f"{Path(image).name}: best parse ({len(best.cps)} strokes) and {n} new tokens")
    click.echo(out)


@bpl.command("plot-strokes")
@click.argument("character")
@click.option("--split", default="background_small1", show_default=True)
@click.option("--data-dir", help="folder with the stroke and image archives")
@click.option("--drawer", type=int, help="one drawer stroke by stroke (default: all drawers in a grid)")
@click.option("--out", required=True, type=click.Path(dir_okay=False))
def plot_strokes(character, split, data_dir, drawer, out) -> None:
    """Stroke order and direction of CHARACTER (Alphabet/characterNN)."""
    from ..bpl.plots import plot_drawers, plot_drawing
    from ..data.strokes import load_strokes

    try:
        drawings = [d for d in load_strokes(split, data_dir, images=True) if d.label == character]
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    if not drawings:
        raise click.ClickException(f"no character {character!r} in strokes_{split} (expected Alphabet/characterNN)")
    if drawer is None:
        plot_drawers(drawings, out)
    else:
        one = [d for d in drawings if d.drawer == drawer]
        if not one:
            raise click.ClickException(f"{character} has drawers {[d.drawer for d in drawings]}, not {drawer}")
        plot_drawing(one[0], out)
    click.echo(out)
