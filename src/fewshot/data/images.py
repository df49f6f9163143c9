"""Image decoding shared by every image loader, and class-per-folder datasets."""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .dataset import LabeledDataset

#: names that announce an image (listing is by content; these only decide "corrupt" vs "not an image")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm", ".pnm"}


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


def pixel_mean(x: torch.Tensor) -> float:
    """Mean intensity of images in ``[0, 1]`` (``uint8`` read as 0..255)."""
    return float(x.float().mean()) / (255.0 if x.dtype == torch.uint8 else 1.0) if x.numel() else 0.0


def check_polarity(x: torch.Tensor, trained_mean: float | None, where: str) -> None:
    """Refuse images whose brightness is the negative of the training images' (``trained_mean``,
    recorded in the run as ``data.pixel_mean``): e.g. white-on-black MNIST given to a model trained
    on Omniglot's inverted pages would silently score near chance."""
    if trained_mean is None or not x.numel():
        return
    mean = pixel_mean(x)
    if (trained_mean < 0.3 and mean > 0.7) or (trained_mean > 0.7 and mean < 0.3):
        raise ValueError(
            f"{where} decode to mean intensity {mean:.2f} but the run's training images had {trained_mean:.2f}: "
            "they look like negatives of what the model learned (light strokes on dark vs dark on light). "
            "Choose the decoding explicitly with --invert or --no-invert"
        )


def convert_mode(img: Image.Image, channels: int = 3, where: str = "image") -> Image.Image:
    """Any PIL mode -> ``L`` (``channels=1``) or ``RGB`` (3) without losing the picture.

    - 16/32-bit integer greyscale (``I;16*``, ``I``) is rescaled from 0..65535 and float (``F``)
      from 0..1 (values outside those ranges are refused, not clipped);
    - transparency (``RGBA``, ``LA``, ``PA``, palette or ``tRNS`` transparency) is composited on a
      background that contrasts with the opaque content: white, or black when the opaque pixels
      are light, so ink drawn only in the alpha channel stays visible;
    - 1-bit, palette, CMYK, YCbCr, LAB... convert as PIL does.
    ``where`` names the image in errors.
    """
    mode = img.mode
    if mode in ("P", "L", "RGB", "1", "I;16", "I") and "transparency" in img.info:
        img, mode = img.convert("RGBA" if mode != "I;16" else "LA"), "RGBA" if mode != "I;16" else "LA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float64) / 255.0
        alpha = rgba[..., 3:]
        lum = rgba[..., :3].mean(-1, keepdims=True)
        light = alpha.sum() > 0 and float((lum * alpha).sum() / alpha.sum()) > 0.5
        out = rgba[..., :3] * alpha + (0.0 if light else 1.0) * (1 - alpha)
        img = Image.fromarray(np.round(out * 255).astype(np.uint8), "RGB")
    elif mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(img).astype(np.float64)
        full = 1.0 if mode == "F" else 65535.0
        if arr.size and (arr.min() < 0 or arr.max() > full):
            raise ValueError(f"{where}: {mode} pixel values span {arr.min():g}..{arr.max():g}, outside the "
                             f"0..{full:g} range that is rescaled to 8 bits; convert it to 8-bit first")
        img = Image.fromarray(np.round(arr * (255.0 / full)).astype(np.uint8), "L")
    return img.convert("L" if channels == 1 else "RGB")


def decode_image(data: bytes | str | Path, spec: ImageSpec, where: str | None = None) -> np.ndarray:
    """Decode one image file (path or bytes; ``where`` names it in errors) into ``uint8 [C, size, size]``."""
    where = where or ("image bytes" if isinstance(data, bytes) else str(data))
    try:
        img = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
        img.load()
    except Exception as exc:  # PIL raises many types for corrupt files
        raise ValueError(f"cannot decode {where}: {exc}; the file is missing or corrupt") from exc
    img = convert_mode(img, spec.channels, where)
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


def image_folder_files(root: str | Path) -> tuple[list[Path], list[int], list[str], list[str]]:
    """The images of a class-per-folder tree ``root/<class>/<file>``, recognised by content (every
    format Pillow reads: PNG, JPEG, PGM/PPM/PBM, BMP, TIFF, WebP, GIF...), not by file name.

    Returns ``(paths, labels, class names, skipped)``; ``skipped`` lists ``"path: reason"`` for
    every file that is not an image (hidden files, notes, ...). A file named like an image
    (``.png``...) that Pillow cannot read is kept: decoding it reports it as corrupt.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder; expected one sub-folder of images per class")
    paths, labels, names, skipped = [], [], [], []
    for d in sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")):
        files = []
        for f in sorted(p for p in d.iterdir() if p.is_file()):
            reason = _not_an_image(f)
            if reason:
                skipped.append(f"{f}: {reason}")
            else:
                files.append(f)
        if files:
            names.append(d.name)
            paths += files
            labels += [len(names) - 1] * len(files)
    if not names:
        found = f"; skipped: {'; '.join(skipped[:5])}" if skipped else ""
        raise ValueError(f"{root} has no sub-folders with images (one sub-folder per class, any format Pillow "
                         f"reads){found}")
    return paths, labels, names, skipped


def _not_an_image(path: Path) -> str | None:
    if path.name.startswith("."):
        return "hidden file"
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return None
    try:
        with Image.open(path) as img:
            img.size  # the header parsed: an image, whatever its name
        return None
    except Exception:  # PIL raises many types for non-images
        return "not an image Pillow can read"


def load_image_folder(root: str | Path, spec: ImageSpec = ImageSpec(size=84, channels=3),
                      skip_bad: bool = False) -> LabeledDataset:
    """A dataset from ``root/<class>/<image>``: one sub-folder per class (see :func:`image_folder_files`).

    A corrupt image is an error naming it, unless ``skip_bad``: then it is skipped. Every skipped
    file is listed with its reason in ``info["skipped"]`` (and counted in ``info["skipped_count"]``).
    """
    paths, labels, names, skipped = image_folder_files(root)
    arrays, kept = [], []
    for p, y in zip(paths, labels):
        try:
            arrays.append(decode_image(p, spec))
            kept.append(y)
        except ValueError as exc:
            if not skip_bad:
                raise ValueError(f"{exc} (pass --skip-bad / skip_bad=True to skip unreadable images)") from exc
            skipped.append(f"{p}: {exc}")
    present = sorted(set(kept))
    if not present:
        raise ValueError(f"{root}: none of its images could be decoded ({skipped[0] if skipped else ''})")
    remap = {c: i for i, c in enumerate(present)}
    x = torch.from_numpy(np.stack(arrays))
    info = {"source": "folder", "path": str(root), "image": spec.to_dict()}
    if skipped:
        info.update(skipped_count=len(skipped), skipped=skipped[:50])
    return LabeledDataset(x, torch.tensor([remap[y] for y in kept]), [names[c] for c in present], info=info)
