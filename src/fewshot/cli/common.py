"""Shared CLI plumbing: dataset arguments, ``-p KEY=VALUE`` parsing, JSON output."""

from __future__ import annotations

import json
from collections.abc import Sequence

import click

from ..data import ImageSpec, LabeledDataset, load_digits_images, load_image_folder, load_mnist, load_omniglot

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


def load_dataset_arg(dataset: str, split: str, data_dir: str | None, image_size: int | None,
                     alphabets: str | None = None, exclude_alphabets: str | None = None,
                     channels: int | None = None) -> LabeledDataset:
    """Load the data named on the command line (without augmentation)."""
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
            return load_image_folder(dataset[7:], ImageSpec(size=image_size or 84, channels=channels or 3))
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    raise click.BadParameter(f"unknown dataset {dataset!r}; use {DATASET_HELP}", param_hint="--dataset")


def echo_json(obj: dict) -> None:
    click.echo(json.dumps(obj, indent=None, sort_keys=False))


def device_option(f):
    return click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda[:N] | mps (auto picks a GPU if present)")(f)


def data_options(f):
    """--dataset/--split/--data-dir/--image-size/--alphabets/--exclude-alphabets."""
    f = click.option("--exclude-alphabets", default=None, help="Omniglot: drop these alphabets (comma list; 'heldout' = the project's 6 held-out ones)")(f)
    f = click.option("--alphabets", default=None, help="Omniglot: keep only these alphabets (comma list; 'heldout' = the project's 6 held-out ones)")(f)
    f = click.option("--image-size", type=int, default=None, help="resize images to this side (Omniglot default 28; 105 keeps originals)")(f)
    f = click.option("--data-dir", default=None, envvar="FEWSHOT_DATA", help="folder with the data archives (default: $FEWSHOT_DATA, then the cache)")(f)
    f = click.option("--split", default="background", show_default=True, help="Omniglot: background, evaluation, background_small1, background_small2 (comma list combines)")(f)
    f = click.option("--dataset", default="omniglot", show_default=True, help=DATASET_HELP)(f)
    return f
