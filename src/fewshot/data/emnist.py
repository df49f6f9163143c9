"""EMNIST (Cohen et al. 2017) from the official ``gzip.zip`` (NIST's Matlab-free release).

The archive holds ``gzip/emnist-<split>-<train|test>-<images-idx3|labels-idx1>-ubyte.gz`` and
``gzip/emnist-<split>-mapping.txt`` for the splits ``balanced, byclass, bymerge, digits,
letters, mnist``. The images are stored transposed (column-major); the loader turns them upright.
``letters`` labels run 1..26 (a/A..z/Z); the mapping file names every label by its ASCII code.
"""

from __future__ import annotations

import gzip
import io
import zipfile
from pathlib import Path

import numpy as np
import torch

from .dataset import LabeledDataset
from .idx import parse_idx

EMNIST_SPLITS = ("balanced", "byclass", "bymerge", "digits", "letters", "mnist")


def _member(names: set[str], want: str) -> str:
    for prefix in ("gzip/", ""):
        if prefix + want in names:
            return prefix + want
    raise FileNotFoundError(f"{want} not found in the archive; expected the official EMNIST gzip.zip layout "
                            f"(gzip/emnist-<split>-<train|test>-images-idx3-ubyte.gz ...)")


def load_emnist(path: str | Path, split: str = "digits", subset: str = "test") -> LabeledDataset:
    """One EMNIST split as a dataset: ``x uint8 [N, 1, 28, 28]`` upright, classes named by character.

    ``path`` is the official ``gzip.zip`` or the folder it unpacks to (``gzip/``).
    """
    if split not in EMNIST_SPLITS:
        raise ValueError(f"unknown EMNIST split {split!r}; choose from {', '.join(EMNIST_SPLITS)}")
    if subset not in ("train", "test"):
        raise ValueError(f"subset must be 'train' or 'test'; got {subset!r}")
    path = Path(path)
    stem = f"emnist-{split}-{subset}"
    files = {"images": f"{stem}-images-idx3-ubyte.gz", "labels": f"{stem}-labels-idx1-ubyte.gz",
             "mapping": f"emnist-{split}-mapping.txt"}
    if path.is_dir():
        folder = path / "gzip" if (path / "gzip").is_dir() else path
        missing = [f for f in files.values() if not (folder / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{', '.join(missing)} not found in {folder}; point at the official EMNIST gzip.zip "
                                    f"or the gzip/ folder it unpacks to")
        raw = {k: (folder / f).read_bytes() for k, f in files.items()}
    elif path.is_file():
        if not zipfile.is_zipfile(path):
            raise ValueError(f"{path} is not a zip archive; expected the official EMNIST gzip.zip")
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            raw = {k: zf.read(_member(names, f)) for k, f in files.items()}
    else:
        raise FileNotFoundError(f"{path} does not exist; download gzip.zip from the EMNIST page "
                                f"(https://www.nist.gov/itl/products-and-services/emnist-dataset) and pass its path")
    x = parse_idx(gzip.decompress(raw["images"]), files["images"])
    y = parse_idx(gzip.decompress(raw["labels"]), files["labels"])
    if x.ndim != 3 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"EMNIST {stem}: images {x.shape} and labels {y.shape} do not pair up ([N, 28, 28] and [N])")
    mapping = {}
    for line in raw["mapping"].decode().split("\n"):
        parts = line.split()
        if len(parts) >= 2:
            mapping[int(parts[0])] = chr(int(parts[1]))  # letters: "1 65 97" names label 1 'A'
    labels = np.unique(y)
    unknown = sorted(set(labels.tolist()) - set(mapping))
    if unknown:
        raise ValueError(f"labels {unknown[:5]} of {stem} are missing from {files['mapping']}")
    upright = np.ascontiguousarray(x.transpose(0, 2, 1))[:, None].astype(np.uint8)
    ds = LabeledDataset.from_arrays(torch.from_numpy(upright), y, [mapping[int(v)] for v in labels],
                                    info={"source": f"emnist-{split}", "split": subset})
    ds.info["image"] = {"size": int(x.shape[1]), "channels": 1, "invert": False}
    return ds
