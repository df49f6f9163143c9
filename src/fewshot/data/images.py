"""Image decoding shared by every image loader, and class-per-folder datasets."""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .dataset import LabeledDataset

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class ImageSpec:
    """How raw images become tensors; saved in checkpoints so prediction decodes identically.

    ``invert=True`` maps dark ink on a light page to ink = 1 (the Omniglot convention).
    """

    size: int = 28
    channels: int = 1
    invert: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ImageSpec":
        return cls(**{k: d[k] for k in ("size", "channels", "invert") if k in d})


def decode_image(data: bytes | str | Path, spec: ImageSpec) -> np.ndarray:
    """Decode one image file (path or bytes) into ``uint8 [C, size, size]``."""
    try:
        img = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
        img.load()
    except Exception as exc:  # PIL raises many types for corrupt files
        where = "image bytes" if isinstance(data, bytes) else str(data)
        raise ValueError(f"cannot decode {where}: {exc}; the file is missing or corrupt") from exc
    img = img.convert("L" if spec.channels == 1 else "RGB")
    if img.size != (spec.size, spec.size):
        # BOX averages the covered source pixels: the right filter for 105 -> 28 downsampling.
        img = img.resize((spec.size, spec.size), Image.Resampling.BOX)
    arr = np.asarray(img, dtype=np.uint8)
    if spec.invert:
        arr = 255 - arr
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def load_images(paths: list[Path], spec: ImageSpec) -> torch.Tensor:
    """Decode image files into ``uint8 [N, C, size, size]``."""
    out = np.empty((len(paths), spec.channels, spec.size, spec.size), dtype=np.uint8)
    for i, p in enumerate(paths):
        out[i] = decode_image(p, spec)
    return torch.from_numpy(out)


def load_image_folder(root: str | Path, spec: ImageSpec = ImageSpec(size=84, channels=3)) -> LabeledDataset:
    """A dataset from ``root/<class>/<image>``: one sub-folder per class."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder; expected one sub-folder of images per class")
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    paths, labels, names = [], [], []
    for d in class_dirs:
        files = sorted(f for f in d.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            continue
        names.append(d.name)
        paths += files
        labels += [len(names) - 1] * len(files)
    if not names:
        raise ValueError(f"{root} has no sub-folders with images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return LabeledDataset(
        load_images(paths, spec),
        torch.tensor(labels),
        names,
        info={"source": "folder", "path": str(root), "image": spec.to_dict()},
    )
