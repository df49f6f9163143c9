"""CIFAR-FS (Bertinetto et al. 2019) and FC100 (Oreshkin et al. 2018) from the CIFAR-100 Python archive.

Both re-split CIFAR-100's 100 classes (train + test images: 600 per class, 32x32 RGB):
CIFAR-FS at random into 64/16/20 classes, FC100 by superclass into 12/4/4 superclasses (60/20/20
classes), so its test classes share no superclass with training. The archive
(``cifar-100-python.tar.gz`` or its extracted ``cifar-100-python/`` folder) is pickled; it is
read with the restricted unpickler (arrays and containers only).
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import torch

from .dataset import LabeledDataset
from .safe_pickle import load_data_pickle

SPLITS = ("train", "val", "test")

#: Bertinetto et al.'s split (the remaining 64 classes are train).
CIFAR_FS_VAL = ("otter", "motorcycle", "television", "lamp", "crocodile", "shark", "butterfly", "beaver", "beetle",
                "tractor", "flatfish", "maple_tree", "camel", "crab", "sea", "cattle")
CIFAR_FS_TEST = ("baby", "bed", "bicycle", "chimpanzee", "fox", "leopard", "man", "pickup_truck", "plain", "poppy",
                 "rocket", "rose", "snail", "sweet_pepper", "table", "telephone", "wardrobe", "whale", "woman", "worm")
#: Oreshkin et al.'s superclass split (the remaining 12 superclasses are train).
FC100_VAL = ("large_carnivores", "large_omnivores_and_herbivores", "non-insect_invertebrates", "small_mammals")
FC100_TEST = ("aquatic_mammals", "insects", "medium_mammals", "people")


def _members(path: Path) -> dict[str, bytes]:
    names = ("train", "test", "meta")
    if path.is_dir():
        folder = path / "cifar-100-python" if (path / "cifar-100-python").is_dir() else path
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise FileNotFoundError(f"{folder} lacks {', '.join(missing)}: expected the extracted cifar-100-python archive")
        return {n: (folder / n).read_bytes() for n in names}
    try:
        with tarfile.open(path) as tar:
            out = {}
            for n in names:
                member = tar.getmember(f"cifar-100-python/{n}")
                if not member.isfile():
                    raise ValueError(f"{path}: cifar-100-python/{n} is not a regular file")
                out[n] = tar.extractfile(member).read()  # read in memory: nothing is extracted to disk
            return out
    except (tarfile.TarError, KeyError, OSError) as exc:
        raise ValueError(f"{path} is not the CIFAR-100 Python archive (cifar-100-python.tar.gz): {exc}") from exc


def load_cifar100(path: str | Path) -> LabeledDataset:
    """All 60,000 CIFAR-100 images ``uint8 [N, 3, 32, 32]``, fine classes, superclasses as groups."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: give the CIFAR-100 Python archive (cifar-100-python.tar.gz) or its folder")
    files = _members(path)
    meta = load_data_pickle(files["meta"])
    fine = [n.decode() for n in meta[b"fine_label_names"]]
    coarse = [n.decode() for n in meta[b"coarse_label_names"]]
    xs, ys, cs = [], [], []
    for part in ("train", "test"):
        d = load_data_pickle(files[part])
        try:
            data = np.asarray(d[b"data"], dtype=np.uint8)
            xs.append(data.reshape(-1, 3, 32, 32))
            ys.append(np.asarray(d[b"fine_labels"], dtype=np.int64))
            cs.append(np.asarray(d[b"coarse_labels"], dtype=np.int64))
        except (KeyError, ValueError) as exc:
            raise ValueError(f"{path}: the {part} batch is not CIFAR-100 (needs data [N, 3072], fine_labels, coarse_labels): {exc}") from exc
    y, c = np.concatenate(ys), np.concatenate(cs)
    groups = np.zeros(len(fine), dtype=np.int64)
    groups[y] = c
    return LabeledDataset(torch.from_numpy(np.concatenate(xs)), torch.from_numpy(y), fine, torch.from_numpy(groups), coarse,
                          {"source": "cifar100", "image": {"size": 32, "channels": 3, "invert": False}})


def _split_classes(ds: LabeledDataset, val: set[int], test: set[int], split: str) -> LabeledDataset:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    keep = {"val": sorted(val), "test": sorted(test),
            "train": sorted(set(range(ds.num_classes)) - val - test)}[split]
    return ds.subset_classes(keep)


def load_cifar_fs(path: str | Path, split: str = "test") -> LabeledDataset:
    """CIFAR-FS: 64/16/20 classes of CIFAR-100 (Bertinetto et al. 2019)."""
    ds = load_cifar100(path)
    idx = {n: i for i, n in enumerate(ds.class_names)}
    out = _split_classes(ds, {idx[n] for n in CIFAR_FS_VAL}, {idx[n] for n in CIFAR_FS_TEST}, split)
    out.info.update(source="cifar_fs", split=split)
    return out


def load_fc100(path: str | Path, split: str = "test") -> LabeledDataset:
    """FC100: CIFAR-100 split by superclass, 60/20/20 classes (Oreshkin et al. 2018)."""
    ds = load_cifar100(path)
    assert ds.groups is not None and ds.group_names is not None
    gidx = {n: i for i, n in enumerate(ds.group_names)}

    def classes_of(supers: tuple[str, ...]) -> set[int]:
        wanted = {gidx[s] for s in supers}
        return {c for c in range(ds.num_classes) if int(ds.groups[c]) in wanted}

    out = _split_classes(ds, classes_of(FC100_VAL), classes_of(FC100_TEST), split)
    out.info.update(source="fc100", split=split)
    return out
