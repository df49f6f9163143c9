"""Omniglot (Lake, Salakhutdinov & Tenenbaum 2015) from its official archives.

Layout: ``<set>/<Alphabet>/characterNN/<id>_<drawer>.png``, 105×105 1-bit images with dark
ink on a white page. Loaded with ink = 1, resized (28×28 by default), alphabets kept as groups.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch

from .archive import FileTree
from .cache import cached
from .dataset import LabeledDataset, concat_datasets, with_rotations
from .images import ImageSpec, decode_image
from .sources import RemoteFile, download as fetch, find_file, missing_data_error

_BASE = "https://github.com/brendenlake/omniglot/raw/master/python/"
SPLITS: dict[str, RemoteFile] = {
    "background": RemoteFile("images_background.zip", _BASE + "images_background.zip", "68d2efa1b9178cc56df9314c21c6e718", "omniglot"),
    "evaluation": RemoteFile("images_evaluation.zip", _BASE + "images_evaluation.zip", "6b91aef0f799c5bb55b94e3f2daec811", "omniglot"),
    "background_small1": RemoteFile("images_background_small1.zip", _BASE + "images_background_small1.zip", "e704a628b5459e08445c13499850abc4", "omniglot"),
    "background_small2": RemoteFile("images_background_small2.zip", _BASE + "images_background_small2.zip", "b75a71a51d3b13f821f212756fe481fd", "omniglot"),
}

#: Background alphabets this project holds out for validation. None of them is in either
#: "minimal" set, so both the minimal and the original setting can be scored on them.
HELDOUT_ALPHABETS: tuple[str, ...] = ("Armenian", "Bengali", "Cyrillic", "Futurama", "Hebrew", "Tifinagh")

_ITEM = re.compile(r"(?:^|/)([^/]+)/(character\d+)/(\d+)_(\d+)\.png$")


def parse_splits(split: str | Sequence[str]) -> list[str]:
    names = [s.strip() for s in split.split(",")] if isinstance(split, str) else list(split)
    bad = [s for s in names if s not in SPLITS]
    if bad or not names:
        raise ValueError(f"unknown Omniglot split(s) {bad or names}; choose from {', '.join(SPLITS)} (a comma list combines them)")
    return names


def read_omniglot_tree(tree: FileTree, spec: ImageSpec, split: str) -> LabeledDataset:
    """Decode every character image in ``tree`` (zip or folder) into a dataset."""
    items: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for name in tree.names():
        m = _ITEM.search(name)
        if m:
            alphabet, char, _, drawer = m.groups()
            items.setdefault((alphabet, char), []).append((int(drawer), name))
    if not items:
        raise ValueError(
            f"{tree.path} holds no Omniglot images: expected <set>/<Alphabet>/characterNN/<id>_<drawer>.png "
            "as in the official archives; is this the right file, and is it complete?"
        )
    keys = sorted(items)
    alphabets = sorted({a for a, _ in keys})
    n = sum(len(v) for v in items.values())
    x = np.empty((n, 1, spec.size, spec.size), dtype=np.uint8)
    y, drawers, i = np.empty(n, np.int64), np.empty(n, np.int64), 0
    for c, key in enumerate(keys):
        for drawer, name in sorted(items[key]):
            x[i] = decode_image(tree.read(name), spec, where=f"{tree.path}: {name}")
            y[i], drawers[i] = c, drawer
            i += 1
    return LabeledDataset(
        torch.from_numpy(x),
        torch.from_numpy(y),
        [f"{a}/{ch}" for a, ch in keys],
        torch.tensor([alphabets.index(a) for a, _ in keys]),
        alphabets,
        info={"source": "omniglot", "split": split, "image": spec.to_dict()},
        item_meta={"drawer": torch.from_numpy(drawers)},
    )


def load_omniglot(
    split: str | Sequence[str] = "background",
    data_dir: str | None = None,
    image_size: int = 28,
    rotations: bool = False,
    alphabets: Sequence[str] | None = None,
    exclude_alphabets: Sequence[str] | None = None,
    download: bool = False,
    cache: bool = True,
) -> LabeledDataset:
    """Load one or more Omniglot splits (comma list or sequence) as a :class:`LabeledDataset`.

    Args:
        split: ``background``, ``evaluation``, ``background_small1``, ``background_small2``.
        data_dir: folder holding the archives (zipped or extracted); else ``$FEWSHOT_DATA`` or the cache.
        image_size: side length after resizing (105 keeps the originals).
        rotations: add 90/180/270-degree rotated copies as new classes (×4 classes).
        alphabets / exclude_alphabets: keep only / drop these alphabets (``["heldout"]`` names
            :data:`HELDOUT_ALPHABETS`).
        download: fetch missing archives from the official URLs (MD5-checked).
    """
    spec = ImageSpec(size=image_size, channels=1, invert=True)
    parts = []
    for name in parse_splits(split):
        remote = SPLITS[name]
        path = find_file(remote, data_dir, extracted=remote.name[:-4])
        if path is None:
            if not download:
                raise missing_data_error(remote, data_dir, f"Omniglot split '{name}'")
            path = fetch(remote)
        with FileTree(path) as tree:
            parts.append(cached({"omniglot": tree.fingerprint(), "spec": spec.to_dict(), "v": 1},
                                lambda: read_omniglot_tree(tree, spec, name), cache))
    ds = concat_datasets(parts)
    ds.info["split"] = ",".join(parse_splits(split))
    if alphabets:
        ds = ds.select_groups(expand_alphabets(alphabets))
    if exclude_alphabets:
        ds = ds.select_groups(expand_alphabets(exclude_alphabets), exclude=True)
    return with_rotations(ds) if rotations else ds


def expand_alphabets(names: Sequence[str]) -> list[str]:
    """Expand the preset name ``heldout`` into :data:`HELDOUT_ALPHABETS`."""
    out: list[str] = []
    for n in names:
        out += list(HELDOUT_ALPHABETS) if n == "heldout" else [n]
    return out
