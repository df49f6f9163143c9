"""The training-free path of ``fewshot eval`` / ``fewshot predict``: a pretrained backbone's
features (cached by file content) and a classifier on them, no run directory."""

from __future__ import annotations

import click

from .common import load_dataset_arg, parse_params

#: ``eval --backbone``'s classifier on frozen features when none is named: transductive soft k-means on
#: power-transformed features, the best training-free head in benchmarks/results/photos.md
EVAL_METHOD, EVAL_PARAMS = "soft_kmeans", {}
#: ``predict --backbone``'s: ProtoNet's cosine to the class prototype, so a photo's prediction never
#: depends on the other photos sent with it
DEFAULT_METHOD = "protonet"
DEFAULT_PARAMS = {"distance": "cosine"}
#: ``fewshot train --backbone efficientnet_lite*``: blocks 12-15 + head (what photos.md meta-trained)
DEFAULT_TRAINABLE_BLOCKS = 4
#: input resolution of each pretrained backbone (``fewshot train`` decodes images at it)
# Static so that `fewshot --help` imports no torch; tests/test_startup.py checks it against nn.efficientnet.
PRETRAINED_RESOLUTION = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}


def pretrained_option(f):
    return click.option(
        "--backbone", default=None,
        help="a pretrained backbone (efficientnet_lite0 | efficientnet_lite1 | efficientnet_lite2), or several "
             "joined by + (efficientnet_lite0+efficientnet_lite1: features concatenated): classify its frozen "
             "features, no training run needed (needs fewshot[vision])")(f)


def embedder(backbone: str, quiet: bool = False):
    from ..engine.features import image_embedder

    try:
        return image_embedder(backbone, progress=None if not quiet else False)
    except (ImportError, FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc


def feature_dataset(backbone: str, dataset: str, split: str, data_dir: str | None, image_size: int | None,
                    alphabets: str | None, exclude_alphabets: str | None, quiet: bool = False):
    """The named data as pretrained features ``[N, dim]``: folders by file (cached), others decoded
    at their native size (Omniglot 105 px) and embedded in memory."""
    from ..engine.features import embed_dataset, embed_folder

    emb = embedder(backbone, quiet)
    try:
        if dataset.startswith("folder:"):
            return embed_folder(emb, dataset[7:])
        native = image_size or (105 if dataset == "omniglot" else None)
        return embed_dataset(emb, load_dataset_arg(dataset, split, data_dir, native, alphabets, exclude_alphabets))
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc


def feature_lake_runs(backbone: str, path: str, image_size: int | None, quiet: bool = False):
    """Lake's runs with each image replaced by the pretrained features ``[D]`` of its page as drawn
    (dark ink on white, at ``image_size``, default its native 105 px)."""
    from ..data import ImageSpec, LakeRun, load_lake_runs
    from ..engine.features import embed_pixels

    emb = embedder(backbone, quiet)
    try:
        runs = load_lake_runs(path, ImageSpec(image_size or 105, 1, False))
    except (FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    return [LakeRun(r.name, embed_pixels(emb, r.support), embed_pixels(emb, r.query), r.query_labels) for r in runs]


def feature_method(method: str | None, params: tuple[str, ...], transductive: bool = False):
    """The classifier on features (identity backbone): ``--method`` and ``-p``, or the default
    (``transductive``: ``eval``'s, which may use a task's queries together)."""
    from ..methods import build_method

    default, defaults = (EVAL_METHOD, EVAL_PARAMS) if transductive else (DEFAULT_METHOD, DEFAULT_PARAMS)
    options = parse_params(params) if method else {**defaults, **parse_params(params)}
    try:
        return build_method(method or default, None, **options)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
