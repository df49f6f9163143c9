"""Omniglot stroke archives: parsing, layout, image pairing (generated fixtures + the real small1 archive)."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from fewshot.data.strokes import load_strokes, pair_images, parse_drawing

TWO_STROKES = "START\n10,-20,0\n30,-20,50\nBREAK\n20,-10,900\n20,-40,950\n20,-50,990\nBREAK\n"


def _png(strokes) -> bytes:
    img = np.full((105, 105), 255, np.uint8)
    for st in strokes:
        for x, r, _ in st:
            img[int(r), int(x)] = 0
    buf = io.BytesIO()
    Image.fromarray(img).convert("1").save(buf, "PNG")
    return buf.getvalue()


def _archives(tmp_path, extracted: bool):
    files = {"Alpha/character01/0001_01.txt": TWO_STROKES, "Alpha/character01/0001_02.txt": TWO_STROKES,
             "Beta/character02/0002_05.txt": "START\n50,-50,0\n51,-52,10\nBREAK\n"}
    for kind in ("strokes", "images"):
        name = f"{kind}_background_small1"
        entries = {}
        for rel, text in files.items():
            if kind == "strokes":
                entries[f"{name}/{rel}"] = text.encode()
            else:
                entries[f"{name}/{rel[:-4]}.png"] = _png(parse_drawing(text))
        if extracted:
            for rel, data in entries.items():
                (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
                (tmp_path / rel).write_bytes(data)
        else:
            with zipfile.ZipFile(tmp_path / f"{name}.zip", "w") as z:
                for rel, data in entries.items():
                    z.writestr(rel, data)
                z.writestr(f"__MACOSX/{name}/._junk.txt", b"\x00")


def test_parse_drawing_flips_y_and_splits_strokes():
    strokes = parse_drawing(TWO_STROKES)
    assert [s.shape for s in strokes] == [(2, 3), (3, 3)]
    np.testing.assert_allclose(strokes[0][0], [10, 20, 0])
    np.testing.assert_allclose(strokes[1][-1], [20, 50, 990])


@pytest.mark.parametrize("text, msg", [("10,1,0\nBREAK\n", "START"), ("START\n1,2,3\n", "truncated"),
                                        ("START\nBREAK\n", "empty stroke"), ("START\n1,2\nBREAK\n", "x,y,t"),
                                        ("START\n", "no strokes")])
def test_parse_drawing_rejects_malformed(text, msg):
    with pytest.raises(ValueError, match=msg):
        parse_drawing(text, "f.txt")


@pytest.mark.parametrize("extracted", [False, True])
def test_load_strokes_official_layout_paired_with_images(tmp_path, extracted):
    _archives(tmp_path, extracted)
    ds = load_strokes("background_small1", tmp_path, images=True)
    assert [d.key for d in ds] == [("Alpha", "character01", 1, 1), ("Alpha", "character01", 1, 2), ("Beta", "character02", 2, 5)]
    d = ds[0]
    assert d.image.shape == (105, 105) and d.image.dtype == np.uint8
    # every stroke point lands on ink of its own image
    for st in d.strokes:
        assert d.image[st[:, 1].astype(int), st[:, 0].astype(int)].all()


def test_pairing_names_the_missing_images(tmp_path):
    _archives(tmp_path, extracted=True)
    ds = load_strokes("background_small1", tmp_path)
    (tmp_path / "images_background_small1/Beta/character02/0002_05.png").unlink()
    with pytest.raises(ValueError, match="lacks the images of 1 of 3"):
        pair_images(ds, tmp_path / "images_background_small1")


def test_missing_archive_and_unknown_split(tmp_path, isolated_data_sources):
    with pytest.raises(FileNotFoundError, match="strokes_background_small2.zip"):
        load_strokes("background_small2", tmp_path)
    with pytest.raises(ValueError, match="unknown stroke split"):
        load_strokes("nope", tmp_path)


@pytest.mark.realdata
def test_real_small1_archive(shared_data):
    if not (shared_data / "omniglot" / "strokes_background_small1.zip").exists():
        pytest.skip("strokes_background_small1.zip not in the shared data")
    ds = load_strokes("background_small1", shared_data / "omniglot", images=True)
    assert len(ds) == 136 * 20
    assert len({d.label for d in ds}) == 136
    # trajectories lie on their own images (coordinates and pairing are right)
    hits = []
    for d in ds[::97]:
        pts = np.concatenate(d.strokes)[:, :2].round().astype(int).clip(0, 104)
        ink = d.image.astype(bool)
        near = ink | np.roll(ink, 1, 0) | np.roll(ink, -1, 0) | np.roll(ink, 1, 1) | np.roll(ink, -1, 1)
        hits.append(near[pts[:, 1], pts[:, 0]].mean())
    assert np.mean(hits) > 0.95
