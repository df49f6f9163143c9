"""Lake et al. (2015)'s 20 one-shot classification runs (``all_runs.zip``).

Each ``runNN/`` (01..20) has ``training/classNN.png`` (20 images, one per class),
``test/itemNN.png`` (20 images) and ``class_labels.txt`` whose lines read
``runNN/test/itemKK.png runNN/training/classJJ.png``: the true class of each test item.
The score is the error rate over the 400 test items.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .archive import FileTree
from .images import ImageSpec, decode_image
from .sources import RemoteFile

ALL_RUNS = RemoteFile(
    "all_runs.zip",
    "https://github.com/brendenlake/omniglot/raw/master/python/one-shot-classification/all_runs.zip",
    None,  # no published checksum: a download is validated by its structure (20 runs × 20 + 20 items)
    "omniglot",
)


@dataclass
class LakeRun:
    """One 20-way 1-shot run: ``support [20, C, H, W]`` (class j = row j), ``query [20, C, H, W]``
    (``uint8`` images, or features ``[20, D]`` once embedded), ``query_labels [20]`` (index of the
    true support image)."""

    name: str
    support: torch.Tensor
    query: torch.Tensor
    query_labels: torch.Tensor


_RUN = re.compile(r"(?:^|/)(run\d+)/class_labels\.txt$")


def load_lake_runs(path: str | Path, spec: ImageSpec = ImageSpec(size=28, channels=1, invert=True)) -> list[LakeRun]:
    """Read ``all_runs.zip`` or its extracted folder; images decoded with ``spec``."""
    with FileTree(path) as tree:
        names = list(tree.names())
        label_files = sorted(n for n in names if _RUN.search(n))
        if not label_files:
            raise ValueError(
                f"{path} holds no runNN/class_labels.txt: expected Lake's all_runs.zip or its extracted folder"
            )
        runs = []
        for lf in label_files:
            prefix = lf[: -len("class_labels.txt")]  # ".../runNN/"
            run_name = _RUN.search(lf).group(1)
            train_files = sorted(n for n in names if n.startswith(prefix + "training/") and n.endswith(".png"))
            test_files = sorted(n for n in names if n.startswith(prefix + "test/") and n.endswith(".png"))
            pairs = [ln.split() for ln in tree.read(lf).decode().splitlines() if ln.strip()]
            if any(len(p) != 2 for p in pairs):
                raise ValueError(f"{lf}: each line must read '<run>/test/itemKK.png <run>/training/classJJ.png'")
            # Lines are relative to the folder above runNN/.
            root = prefix[: -len(run_name) - 1]
            train_index = {n[len(root):]: i for i, n in enumerate(train_files)}
            test_index = {n[len(root):]: i for i, n in enumerate(test_files)}
            missing = [p for q, t in pairs for p in (q, t) if p not in test_index and p not in train_index]
            if missing or len(pairs) != len(test_files):
                raise ValueError(f"{lf} names files that are not in the archive ({missing[:3]}) or misses some test items")
            labels = torch.empty(len(test_files), dtype=torch.long)
            for q, t in pairs:
                labels[test_index[q]] = train_index[t]
            runs.append(LakeRun(
                run_name,
                torch.from_numpy(np.stack([decode_image(tree.read(n), spec, f"{tree.path}: {n}") for n in train_files])),
                torch.from_numpy(np.stack([decode_image(tree.read(n), spec, f"{tree.path}: {n}") for n in test_files])),
                labels,
            ))
    return runs
