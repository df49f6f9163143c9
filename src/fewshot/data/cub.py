"""CUB-200-2011 (Wah et al. 2011) in its official layout, with the few-shot class split of
Chen et al. 2019 ("A Closer Look at Few-shot Classification"): of the 200 classes in order,
even-numbered ones train (100), ``i % 4 == 1`` validate (50), ``i % 4 == 3`` test (50).

Layout: ``<root>/images.txt`` (``<image id> <relative path>``), ``image_class_labels.txt``
(``<image id> <class id>``), ``classes.txt`` (``<class id> <name>``), images under ``<root>/images/``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .filelist import ImageFiles

SPLITS = ("train", "val", "test", "all")


def _read_pairs(path: Path) -> dict[int, str]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: CUB-200-2011 needs images.txt, image_class_labels.txt and classes.txt in {path.parent}")
    out: dict[int, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or not parts[0].isdigit():
            raise ValueError(f"{path}:{n}: expected '<id> <value>', got {line!r}")
        out[int(parts[0])] = parts[1].strip()
    return out


def cub_files(root: str | Path, split: str = "test") -> ImageFiles:
    """The images of one split of CUB-200-2011 (not decoded)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    root = Path(root)
    if (root / "CUB_200_2011").is_dir() and not (root / "images.txt").exists():
        root = root / "CUB_200_2011"
    images, labels, classes = (_read_pairs(root / f) for f in ("images.txt", "image_class_labels.txt", "classes.txt"))
    class_ids = sorted(classes)
    if class_ids != list(range(1, len(class_ids) + 1)):
        raise ValueError(f"{root / 'classes.txt'}: class ids must be 1..{len(class_ids)}")
    if set(images) != set(labels):
        raise ValueError("images.txt and image_class_labels.txt list different image ids")
    wanted = {"train": lambda i: i % 2 == 0, "val": lambda i: i % 4 == 1, "test": lambda i: i % 4 == 3,
              "all": lambda i: True}[split]
    keep = [c for c in class_ids if wanted(c - 1)]
    remap = {c: k for k, c in enumerate(keep)}
    paths, ys = [], []
    for img_id in sorted(images):
        c = int(labels[img_id])
        if c not in classes:
            raise ValueError(f"image {img_id} has class {c}, which classes.txt does not list")
        if c in remap:
            paths.append(root / "images" / images[img_id])
            ys.append(remap[c])
    files = ImageFiles(paths, torch.tensor(ys, dtype=torch.long), [classes[c] for c in keep],
                       info={"source": "cub", "split": split, "path": str(root)})
    files.check_exist()
    return files
