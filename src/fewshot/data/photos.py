"""Photos as a pretrained network needs them: decoded safely, upright, RGB, square, at its resolution.

:func:`load_photo` turns any file a camera, phone or scanner writes into an upright RGB image;
:func:`to_network_input` resizes and centre-crops it to the network's resolution as ``uint8
[3, R, R]`` (normalisation happens in the network wrapper, where the weights' statistics live).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from .images import convert_mode

#: Default pixel limit (width x height) before decoding: 64 megapixels, larger than any phone photo.
MAX_PIXELS = 64_000_000


def load_photo(source: str | Path | bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Decode an image file (path or bytes) into an upright RGB ``PIL.Image``.

    - EXIF orientation is applied (phone photos are stored sideways with a rotation tag).
    - Every mode becomes RGB: 16/32-bit greyscale is rescaled from its full range (not clipped),
      1-bit and palette images are expanded, transparency is composited on a contrasting background
      (:func:`fewshot.data.images.convert_mode`), CMYK/YCbCr/LAB are converted; multi-frame files (GIF, TIFF) give their first frame.
    - Raises ``ValueError`` naming the file for anything that is not a complete image: unknown
      formats, corrupt or truncated data, and images over ``max_pixels`` (decompression bombs),
      which are rejected from the header before any pixel is decoded.
    """
    where = "image bytes" if isinstance(source, (bytes, bytearray, memoryview)) else str(source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(bytes(source)) if where == "image bytes" else source)
            w, h = img.size
            if w * h > max_pixels:
                raise ValueError(
                    f"{where}: {w}x{h} = {w * h:,} pixels exceeds the limit of {max_pixels:,} "
                    "(a decompression bomb or a huge scan); downscale it or raise max_pixels"
                )
            img.load()
            img = ImageOps.exif_transpose(img)
    except ValueError:
        raise
    except FileNotFoundError:
        raise
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, struct.error, ...)
        raise ValueError(f"cannot decode {where}: {exc}; it is not an image, or it is corrupt or truncated") from exc
    return to_rgb(img, where)


def to_rgb(img: Image.Image, where: str = "image") -> Image.Image:
    """Any PIL mode -> RGB (see :func:`load_photo`); ``where`` names the image in errors."""
    return convert_mode(img, 3, where)


def to_network_input(img: Image.Image, resolution: int, crop: float = 1.0) -> torch.Tensor:
    """Resize so the shorter side is ``resolution / crop``, centre-crop ``resolution`` square.

    ``crop=0.875`` is the ImageNet evaluation protocol (resize 256, crop 224); ``crop=1.0`` keeps
    the whole shorter side. Returns ``uint8 [3, resolution, resolution]``.
    """
    if not 0 < crop <= 1:
        raise ValueError(f"crop must be in (0, 1]; got {crop}")
    w, h = img.size
    short = resolution / crop
    scale = short / min(w, h)
    nw, nh = max(resolution, round(w * scale)), max(resolution, round(h * scale))
    img = img.resize((nw, nh), Image.Resampling.BICUBIC, reducing_gap=None)
    left, top = (nw - resolution) // 2, (nh - resolution) // 2
    img = img.crop((left, top, left + resolution, top + resolution))
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).copy())
