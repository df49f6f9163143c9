"""Checking uploads before anything is stored: size, image format, pixel count, integrity, text.

Each failure is an :class:`UploadError` carrying the HTTP status a client should get:
413 too large, 415 not an image (whatever its name or content type said), 400 a decompression
bomb, a truncated or corrupt image, or empty text.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

from ..data.photos import load_photo

IMAGE_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_PIXELS = 40_000_000  # 40 megapixels: larger is refused from the header, before decoding (decompression bombs)
MAX_TEXT_CHARS = 10_000


class UploadError(ValueError):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def check_size(data: bytes, name: str, max_bytes: int = MAX_UPLOAD_BYTES) -> None:
    if len(data) > max_bytes:
        raise UploadError(f"{name}: {len(data):,} bytes is over the upload limit of {max_bytes:,} bytes; send a smaller file", 413)


def decode_image(data: bytes, name: str = "upload", max_pixels: int = MAX_PIXELS) -> Image.Image:
    """The upright RGB image in ``data`` (:func:`fewshot.data.photos.load_photo`), or an :class:`UploadError`.

    The format is sniffed from the bytes first, so that "not an image" (415) is told apart from a
    damaged or oversized one (400).
    """
    if not data:
        raise UploadError(f"{name}: the file is empty", 400)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)  # reads the header only
    except UnidentifiedImageError:
        raise UploadError(f"{name}: not an image in a supported format ({', '.join(IMAGE_FORMATS)})", 415) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UploadError(f"{name}: too many pixels (a decompression bomb?); the limit is {max_pixels:,}", 400) from None
    except Exception as exc:  # a header PIL recognised but could not parse
        raise UploadError(f"{name}: corrupt image ({exc})", 400) from None
    try:
        return load_photo(data, max_pixels=max_pixels)
    except ValueError as exc:  # over the pixel limit, truncated or corrupt
        raise UploadError(f"{name}: {str(exc).replace('image bytes: ', '')}", 400) from None


def check_text(text: object, max_chars: int = MAX_TEXT_CHARS) -> str:
    if not isinstance(text, str):
        raise UploadError(f"expected text, got {type(text).__name__}", 400)
    if not text.strip():
        raise UploadError("empty text: give a non-empty sentence", 400)
    if len(text) > max_chars:
        raise UploadError(f"text of {len(text):,} characters is over the limit of {max_chars:,}", 400)
    return text.strip()
