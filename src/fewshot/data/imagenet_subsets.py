"""miniImageNet and tieredImageNet in the layouts the few-shot literature distributes.

* miniImageNet (Vinyals et al. 2016) with Ravi & Larochelle's (2017) split files:
  ``<root>/{train,val,test}.csv`` (header ``filename,label``; label = WordNet id) and the images
  in ``<root>/images/<filename>``. 64/16/20 classes x 600 images.
* tieredImageNet (Ren et al. 2018), either as the original pickles
  ``<root>/{train,val,test}_images_png.pkl`` (a list of PNG-encoded images) and
  ``{split}_labels.pkl`` (``label_specific``, ``label_general`` and their ``*_str`` names), read
  with the restricted unpickler, or as class folders ``<root>/{train,val,test}/<wnid>/*.jpg``.
  351/97/160 classes in 20/6/8 categories (the categories are kept as groups).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from .dataset import LabeledDataset
from .filelist import ImageFiles, files_from_names
from .images import IMAGE_SUFFIXES, ImageSpec, decode_image
from .safe_pickle import load_data_pickle

SPLITS = ("train", "val", "test")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")


def mini_imagenet_files(root: str | Path, split: str = "test") -> ImageFiles:
    """The images of one Ravi & Larochelle split of miniImageNet (not decoded)."""
    _check_split(split)
    root = Path(root)
    csv_path = root / f"{split}.csv"
    if not csv_path.is_file():
        raise FileNotFoundError(
            f"{csv_path} not found: miniImageNet needs Ravi & Larochelle's split files "
            f"(train.csv, val.csv, test.csv with header 'filename,label') in {root}, and the images in {root / 'images'}"
        )
    with open(csv_path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or [c.strip() for c in rows[0]] != ["filename", "label"]:
        raise ValueError(f"{csv_path}: expected the header 'filename,label', got {rows[0] if rows else 'an empty file'}")
    bad = [i + 2 for i, r in enumerate(rows[1:]) if len(r) != 2 or not r[0] or not r[1]]
    if bad:
        raise ValueError(f"{csv_path}: line {bad[0]} is not 'filename,label' ({len(bad)} bad lines)")
    files = files_from_names([root / "images" / r[0] for r in rows[1:]], [r[1] for r in rows[1:]],
                             info={"source": "mini_imagenet", "split": split, "path": str(root)})
    files.check_exist()
    return files


def tiered_imagenet_files(root: str | Path, split: str = "test") -> ImageFiles:
    """tieredImageNet as class folders ``<root>/<split>/<wnid>/*`` (not decoded)."""
    _check_split(split)
    base = Path(root) / split
    if not base.is_dir():
        raise FileNotFoundError(f"{base} is not a folder; expected {root}/{{train,val,test}}/<class>/<image>")
    paths, names = [], []
    for d in sorted(p for p in base.iterdir() if p.is_dir()):
        for f in sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES):
            paths.append(f)
            names.append(d.name)
    if not paths:
        raise ValueError(f"{base} has no class folders with images")
    return files_from_names(paths, names, info={"source": "tiered_imagenet", "split": split, "path": str(root)})


def load_tiered_imagenet_pickles(root: str | Path, split: str = "test",
                                 spec: ImageSpec = ImageSpec(size=84, channels=3)) -> LabeledDataset:
    """tieredImageNet from Ren et al.'s ``{split}_images_png.pkl`` / ``{split}_labels.pkl``.

    Classes are the specific labels, groups their general (category) labels.
    """
    _check_split(split)
    root = Path(root)
    img_path, lab_path = root / f"{split}_images_png.pkl", root / f"{split}_labels.pkl"
    for p in (img_path, lab_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p} not found: expected Ren et al.'s {split}_images_png.pkl and {split}_labels.pkl in {root}")
    labels = load_data_pickle(lab_path.read_bytes(), encoding="latin1")
    images = load_data_pickle(img_path.read_bytes(), encoding="latin1")
    try:
        specific = np.asarray(labels["label_specific"], dtype=np.int64)
        general = np.asarray(labels["label_general"], dtype=np.int64)
        specific_names = [str(s) for s in labels["label_specific_str"]]
        general_names = [str(s) for s in labels["label_general_str"]]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{lab_path}: expected a dict with label_specific, label_general and their *_str names ({exc})") from exc
    if len(images) != len(specific):
        raise ValueError(f"{img_path} holds {len(images)} images but {lab_path} {len(specific)} labels")
    x = np.empty((len(images), spec.channels, spec.size, spec.size), dtype=np.uint8)
    for i, png in enumerate(images):
        x[i] = decode_image(np.asarray(png, dtype=np.uint8).tobytes(), spec)
    groups = np.zeros(len(specific_names), dtype=np.int64)
    groups[specific] = general
    return LabeledDataset(torch.from_numpy(x), torch.from_numpy(specific), specific_names, torch.from_numpy(groups),
                          general_names, {"source": "tiered_imagenet", "split": split, "image": spec.to_dict()})
