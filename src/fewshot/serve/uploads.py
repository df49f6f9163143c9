"""Checking uploads before anything is stored: size, image format, pixel count, integrity, text.

Each failure is an :class:`UploadError` carrying the HTTP status a client should get:
413 too large, 415 not an image (whatever its name or content type said), 400 a decompression
bomb, a truncated or corrupt image, or empty text.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_PIXELS = 40_000_000  # 40 megapixels: larger is refused before decoding (decompression bombs)
MAX_TEXT_CHARS = 10_000


class UploadError(ValueError):
    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def check_size(data: bytes, name: str, max_bytes: int = MAX_UPLOAD_BYTES) -> None:
    if len(data) > max_bytes:
        raise UploadError(f"{name}: {len(data):,} bytes is over the upload limit of {max_bytes:,} bytes; send a smaller file", 413)


def decode_image(data: bytes, name: str = "upload", max_pixels: int = MAX_PIXELS) -> Image.Image:
    """The RGB image in ``data`` (EXIF orientation applied), or an :class:`UploadError`."""
    if not data:
        raise UploadError(f"{name}: the file is empty", 400)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except UnidentifiedImageError:
        raise UploadError(f"{name}: not an image in a supported format ({', '.join(IMAGE_FORMATS)})", 415) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UploadError(f"{name}: too many pixels (a decompression bomb?); the limit is {max_pixels:,}", 400) from None
    except Exception as exc:  # a header PIL recognised but could not parse
        raise UploadError(f"{name}: corrupt image ({exc})", 400) from None
    w, h = im.size
    if w * h > max_pixels:
        raise UploadError(f"{name}: {w}x{h} is {w * h:,} pixels, over the limit of {max_pixels:,} (a decompression bomb?); "
                          "send a smaller image", 400)
    if w == 0 or h == 0:
        raise UploadError(f"{name}: the image is empty ({w}x{h})", 400)
    try:
        im.load()
        im = ImageOps.exif_transpose(im)
        return im.convert("RGB")
    except Exception as exc:  # truncated data, bad checksums, broken streams
        raise UploadError(f"{name}: truncated or corrupt image ({exc}); send the whole file", 400) from None


def check_text(text: object, max_chars: int = MAX_TEXT_CHARS) -> str:
    if not isinstance(text, str):
        raise UploadError(f"expected text, got {type(text).__name__}", 400)
    if not text.strip():
        raise UploadError("empty text: give a non-empty sentence", 400)
    if len(text) > max_chars:
        raise UploadError(f"text of {len(text):,} characters is over the limit of {max_chars:,}", 400)
    return text.strip()
