"""EMNIST (Cohen et al. 2017) from the official IDX archive (``gzip.zip``, or its folder).

The archive holds ``gzip/emnist-<subset>-{train,test}-{images-idx3,labels-idx1}-ubyte.gz`` and
``emnist-<subset>-mapping.txt`` (label -> character code). EMNIST stores images transposed; they
are turned upright here. Classes are named by their character.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from .archive import FileTree
from .dataset import LabeledDataset
from .idx import parse_idx

SUBSETS = ("balanced", "byclass", "bymerge", "digits", "letters", "mnist")


def load_emnist(path: str | Path, subset: str = "balanced", split: str = "test") -> LabeledDataset:
    """One EMNIST subset/split: ``uint8 [N, 1, 28, 28]`` (white ink on black, upright)."""
    if subset not in SUBSETS:
        raise ValueError(f"unknown EMNIST subset {subset!r}; choose one of {', '.join(SUBSETS)}")
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; choose train or test")
    with FileTree(path) as tree:
        names = {n.rsplit("/", 1)[-1]: n for n in tree.names()}
        stem = f"emnist-{subset}-{split}"
        want = [f"{stem}-images-idx3-ubyte.gz", f"{stem}-labels-idx1-ubyte.gz", f"emnist-{subset}-mapping.txt"]
        missing = [w for w in want if w not in names]
        if missing:
            raise FileNotFoundError(f"{path} lacks {', '.join(missing)}: expected the official EMNIST gzip.zip (or its folder)")
        try:
            x = parse_idx(gzip.decompress(tree.read(names[want[0]])), want[0])
            y = parse_idx(gzip.decompress(tree.read(names[want[1]])), want[1])
        except (OSError, EOFError) as exc:
            raise ValueError(f"{path}: {stem} is not valid gzip data ({exc}); the archive is corrupt") from exc
        mapping = tree.read(names[want[2]]).decode()
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise ValueError(f"{path}: {stem} images {x.shape} and labels {y.shape} do not pair up")
    codes = {}
    for line in mapping.splitlines():
        if line.strip():
            label, code = line.split()[:2]
            codes[int(label)] = chr(int(code))
    labels = sorted(codes)
    index = {lab: i for i, lab in enumerate(labels)}
    unknown = set(np.unique(y).tolist()) - set(index)
    if unknown:
        raise ValueError(f"{path}: labels {sorted(unknown)[:5]} are not in emnist-{subset}-mapping.txt")
    upright = np.ascontiguousarray(x.transpose(0, 2, 1))[:, None].astype(np.uint8)
    yy = torch.tensor([index[int(v)] for v in y], dtype=torch.long)
    return LabeledDataset(torch.from_numpy(upright), yy, [codes[lab] for lab in labels],
                          info={"source": "emnist", "subset": subset, "split": split,
                                "image": {"size": 28, "channels": 1, "invert": False}})
