"""Photo decoding: EXIF, every mode to RGB, and clear errors for what is not a complete image."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from fewshot.data.photos import load_photo, to_network_input


def _bytes(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def test_rgb_roundtrip_and_path(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    (tmp_path / "a.png").write_bytes(_bytes(Image.fromarray(arr)))
    for src in (tmp_path / "a.png", str(tmp_path / "a.png"), (tmp_path / "a.png").read_bytes()):
        img = load_photo(src)
        assert img.mode == "RGB" and np.array_equal(np.asarray(img), arr)


def test_exif_orientation_is_applied():
    arr = np.zeros((4, 8, 3), dtype=np.uint8)
    arr[:, :4] = 255  # left half white
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    out = load_photo(_bytes(img, "JPEG", exif=exif.tobytes(), quality=100))
    assert out.size == (4, 8)  # width and height swapped
    top = np.asarray(out)[:4].mean()
    assert top > 200  # the white half is on top after a clockwise turn


def test_alpha_is_composited_on_white():
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red; the rest fully transparent black
    out = np.asarray(load_photo(_bytes(Image.fromarray(rgba, "RGBA"))))
    assert tuple(out[0, 0]) == (255, 0, 0) and tuple(out[1, 1]) == (255, 255, 255)
    la = Image.fromarray(np.zeros((2, 2), np.uint8), "L")
    la.putalpha(0)
    assert np.asarray(load_photo(_bytes(la))).min() == 255


def test_palette_with_transparency_and_one_bit_and_grey():
    p = Image.new("P", (3, 3), 0)
    p.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    p.putpixel((1, 1), 1)
    p.info["transparency"] = 0
    out = np.asarray(load_photo(_bytes(p, "GIF", transparency=0)))
    assert tuple(out[1, 1]) == (10, 200, 30) and tuple(out[0, 0]) == (255, 255, 255)
    one = Image.fromarray(np.array([[True, False]])).convert("1")
    assert np.asarray(load_photo(_bytes(one)))[0].tolist() == [[255] * 3, [0] * 3]
    grey = Image.fromarray(np.array([[7, 200]], np.uint8), "L")
    assert np.asarray(load_photo(_bytes(grey)))[0, :, 0].tolist() == [7, 200]


def test_sixteen_bit_is_rescaled_not_clipped():
    arr = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    img = Image.fromarray(arr)  # mode I;16
    out = np.asarray(load_photo(_bytes(img)))
    assert out[0, :, 0].tolist() == [0, 100, 255]


def test_not_an_image_corrupt_truncated(tmp_path):
    with pytest.raises(ValueError, match="not an image"):
        load_photo(b"hello, world")
    good = _bytes(Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)), "JPEG")
    with pytest.raises(ValueError, match="truncated"):
        load_photo(good[: len(good) // 2])
    (tmp_path / "x.jpg").write_bytes(b"\xff\xd8\xff" + b"\0" * 50)
    with pytest.raises(ValueError, match="x.jpg"):
        load_photo(tmp_path / "x.jpg")


def test_decompression_bomb_rejected_from_header():
    big = _bytes(Image.new("1", (5000, 5000)))  # 25 MP, a few KB compressed
    with pytest.raises(ValueError, match="exceeds the limit"):
        load_photo(big, max_pixels=10_000_000)
    assert load_photo(big, max_pixels=30_000_000).size == (5000, 5000)


def test_to_network_input_centre_crop():
    arr = np.zeros((100, 200, 3), dtype=np.uint8)
    arr[:, 50:150] = 255  # the central square is white, the sides black
    x = to_network_input(Image.fromarray(arr), 32)
    assert x.shape == (3, 32, 32) and x.dtype.is_floating_point is False
    assert x.float().mean() > 250  # only the white centre survives the crop
    assert to_network_input(Image.fromarray(arr), 32, crop=0.5).shape == (3, 32, 32)
    with pytest.raises(ValueError, match="crop"):
        to_network_input(Image.fromarray(arr), 32, crop=0)
