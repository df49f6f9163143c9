"""Shared CLI plumbing: dataset arguments, ``-p KEY=VALUE`` parsing, JSON output."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:  # the CLI imports torch (through data/) only inside the commands that need it: quick --help
    from ..data import ImageSpec, LabeledDataset

#: the smallest side a conv4 backbone (four 2x poolings) can take
MIN_IMAGE_SIZE = 16
DATASET_HELP = "omniglot | mnist | digits (scikit-learn 8x8, offline) | folder:PATH (one sub-folder per class)"


def parse_params(items: Sequence[str]) -> dict[str, str]:
    """``["distance=cosine", "inner-steps=5"]`` -> ``{"distance": "cosine", "inner_steps": "5"}``.

    Values stay strings: the method's annotations decide what they mean
    (:func:`fewshot.methods.params.coerce_params`, called by ``build_method``).
    """
    out = {}
    for item in items:
        if "=" not in item:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE (e.g. -p distance=cosine)", param_hint="-p/--param")
        key, value = item.split("=", 1)
        key = key.strip().replace("-", "_")
        if key in out:
            raise click.BadParameter(f"{key!r} is given twice", param_hint="-p/--param")
        out[key] = value
    return out


def split_names(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def run_image_spec(info: dict, image_size: int | None = None, invert: bool | None = None) -> ImageSpec | None:
    """How new images are decoded for a trained run: exactly as its training data (``info["data"]
    ["image"]``), with ``--image-size`` / ``--invert`` overriding when given. None: not an image run."""
    from ..data import ImageSpec

    image = (info.get("data") or {}).get("image")
    if not image:
        return None
    spec = ImageSpec.from_dict(image)
    return ImageSpec(image_size or spec.size, spec.channels, spec.invert if invert is None else invert)


def check_run_fits(data: LabeledDataset, info: dict, invert: bool | None, what: str) -> None:
    """Data given to a trained run must have its channels and (unless ``--invert``/``--no-invert``
    chose explicitly) not be the negative of its training images."""
    from ..data.images import check_polarity

    image = (info.get("data") or {}).get("image") or {}
    if image and data.x.ndim == 4 and data.x.shape[1] != image.get("channels", data.x.shape[1]):
        raise click.ClickException(f"the run was trained on {image['channels']}-channel images but {what} has "
                                   f"{data.x.shape[1]}-channel ones; give data of the run's kind (a folder dataset is "
                                   "decoded to the run's channels)")
    if invert is None:
        try:
            check_polarity(data.x, (info.get("data") or {}).get("pixel_mean"), what)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc


def report_skipped(data: LabeledDataset) -> None:
    if data.info.get("skipped_count"):
        shown = data.info["skipped"][:5]
        click.echo(f"skipped {data.info['skipped_count']} file(s): " + "; ".join(shown) +
                   (" ..." if data.info["skipped_count"] > len(shown) else ""), err=True)


def load_dataset_arg(dataset: str, split: str, data_dir: str | None, image_size: int | None,
                     alphabets: str | None = None, exclude_alphabets: str | None = None,
                     channels: int | None = None, spec: ImageSpec | None = None,
                     skip_bad: bool = False, invert: bool | None = None) -> LabeledDataset:
    """Load the data named on the command line (without augmentation); a folder dataset is decoded
    with ``spec`` (a trained run's, see :func:`run_image_spec`) when given, else at ``image_size``
    (default 84), ``channels`` (default 3) and ``invert`` (``--invert``; default off)."""
    from ..data import ImageSpec, load_digits_images, load_image_folder, load_mnist, load_omniglot

    try:
        if dataset == "omniglot":
            return load_omniglot(split, data_dir=data_dir, image_size=image_size or 28,
                                 alphabets=split_names(alphabets), exclude_alphabets=split_names(exclude_alphabets))
        if alphabets or exclude_alphabets:
            raise click.UsageError("--alphabets/--exclude-alphabets only apply to --dataset omniglot")
        if dataset == "mnist":
            return load_mnist(data_dir)
        if dataset == "digits":
            return load_digits_images()
        if dataset.startswith("folder:"):
            data = load_image_folder(dataset[7:], spec or ImageSpec(size=image_size or 84, channels=channels or 3,
                                                                    invert=bool(invert)),
                                     skip_bad=skip_bad)
            report_skipped(data)
            return data
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    raise click.BadParameter(f"unknown dataset {dataset!r}; use {DATASET_HELP}", param_hint="--dataset")


def echo_json(obj: dict) -> None:
    click.echo(json.dumps(obj, indent=None, sort_keys=False))


class FiniteFloat(click.ParamType):
    """A finite float above ``minimum`` (at least ``minimum`` with ``inclusive``); click's FloatRange
    lets NaN through."""

    name = "number"

    def __init__(self, minimum: float = 0.0, inclusive: bool = False):
        self.minimum, self.inclusive = minimum, inclusive

    def convert(self, value, param, ctx):
        try:
            out = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(out) or out < self.minimum or (out == self.minimum and not self.inclusive):
            self.fail(f"{value!r} is not a finite number {'>=' if self.inclusive else '>'} {self.minimum:g}", param, ctx)
        return out


class Fraction(click.ParamType):
    """A finite float in ``[low, high)`` (``high`` included with ``closed=True``, ``low`` excluded
    with ``open_low=True``)."""

    name = "fraction"

    def __init__(self, low: float = 0.0, high: float = 1.0, closed: bool = False, open_low: bool = False):
        self.low, self.high, self.closed, self.open_low = low, high, closed, open_low

    def convert(self, value, param, ctx):
        try:
            out = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        above = out > self.low if self.open_low else out >= self.low
        if not (math.isfinite(out) and above and (out <= self.high if self.closed else out < self.high)):
            self.fail(f"{value!r} is not in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}"
                      f"{']' if self.closed else ')'}", param, ctx)
        return out


def check_device(ctx, param, value):
    """Click callback: the device must exist on this machine (a clear error, not a traceback later)."""
    from ..utils import resolve_device

    try:
        resolve_device(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from exc
    return value


def device_option(f):
    return click.option("--device", default="auto", show_default=True, callback=check_device,
                        help="auto | cpu | cuda[:N] | mps (auto picks a GPU if present)")(f)


def threads_option(f):
    """--threads N: torch's intra-op threads (default: this process's share of the CPUs)."""
    return click.option("--threads", type=click.IntRange(min=1), default=None,
                        help="CPU threads for torch (default: the CPUs available / processes per node under torchrun; "
                             "with several jobs on one machine give each 1)")(f)


def apply_threads(threads: int | None) -> None:
    from ..utils import set_threads

    set_threads(threads)


def data_options(f):
    """--dataset/--split/--data-dir/--image-size/--alphabets/--exclude-alphabets/--skip-bad."""
    f = click.option("--skip-bad", is_flag=True, help="folder datasets: skip images that cannot be decoded (they are listed) instead of stopping")(f)
    f = click.option("--exclude-alphabets", default=None, help="Omniglot: drop these alphabets (comma list; 'heldout' = the project's 6 held-out ones)")(f)
    f = click.option("--alphabets", default=None, help="Omniglot: keep only these alphabets (comma list; 'heldout' = the project's 6 held-out ones)")(f)
    f = click.option("--image-size", type=click.IntRange(min=MIN_IMAGE_SIZE), default=None, help="resize images to this side (Omniglot default 28; 105 keeps originals)")(f)
    f = click.option("--data-dir", default=None, envvar="FEWSHOT_DATA", help="folder with the data archives (default: $FEWSHOT_DATA, then the cache)")(f)
    f = click.option("--split", default="background", show_default=True, help="Omniglot: background, evaluation, background_small1, background_small2 (comma list combines)")(f)
    f = click.option("--dataset", default="omniglot", show_default=True, help=DATASET_HELP)(f)
    return f
