"""Generators of tiny files in the exact official layouts (Omniglot, Lake's runs, IDX)."""

from __future__ import annotations

import gzip
import struct
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image


def glyph(rng: np.random.Generator, template: np.ndarray, jitter: int = 3) -> Image.Image:
    """A 1-bit 105×105 'character': dark ink (0) on a white page (1), shifted up to ``jitter`` px."""
    ink = np.roll(template, shift=tuple(rng.integers(-jitter, jitter + 1, size=2)), axis=(0, 1))
    page = np.where(ink, 0, 255).astype(np.uint8)
    return Image.fromarray(page).convert("1")


def make_omniglot(root: Path, set_name: str = "images_background", alphabets: dict[str, int] | None = None,
                  drawers: int = 6, seed: int = 0, zipped: bool = False) -> Path:
    """Write ``<root>/<set>/<Alphabet>/characterNN/<id>_<drawer>.png`` (and ``<set>.zip`` if zipped)."""
    alphabets = alphabets or {"Alpha": 3, "Beta": 4}
    rng = np.random.default_rng(seed)
    folder = root / set_name
    item = 1
    for alphabet, n_chars in alphabets.items():
        for c in range(1, n_chars + 1):
            template = np.zeros((105, 105), dtype=bool)
            for _ in range(4):  # a few random strokes
                r, col = rng.integers(20, 85, size=2)
                template[r:r + 4, col - 15:col + 15] = True if rng.random() < 0.5 else template[r:r + 4, col - 15:col + 15]
                template[r - 15:r + 15, col:col + 4] = True
            d = folder / alphabet / f"character{c:02d}"
            d.mkdir(parents=True, exist_ok=True)
            for drawer in range(1, drawers + 1):
                glyph(rng, template).save(d / f"{item:04d}_{drawer:02d}.png")
            item += 1
    if not zipped:
        return folder
    archive = root / f"{set_name}.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in sorted(folder.rglob("*.png")):
            z.write(p, p.relative_to(root).as_posix())
    return archive


def make_lake_runs(root: Path, runs: int = 2, classes: int = 20, seed: int = 0, zipped: bool = False) -> Path:
    """``runNN/training/classNN.png``, ``runNN/test/itemNN.png``, ``runNN/class_labels.txt``.

    Test item k shows exactly the template of training class ``perm[k]``."""
    rng = np.random.default_rng(seed)
    folder = root / "all_runs"
    for r in range(1, runs + 1):
        run = folder / f"run{r:02d}"
        (run / "training").mkdir(parents=True, exist_ok=True)
        (run / "test").mkdir(parents=True, exist_ok=True)
        templates = [rng.random((105, 105)) < 0.08 for _ in range(classes)]
        perm = rng.permutation(classes)
        lines = []
        for j in range(classes):
            glyph(rng, templates[j], jitter=0).save(run / "training" / f"class{j + 1:02d}.png")
        for k in range(classes):
            glyph(rng, templates[perm[k]], jitter=0).save(run / "test" / f"item{k + 1:02d}.png")
            lines.append(f"run{r:02d}/test/item{k + 1:02d}.png run{r:02d}/training/class{perm[k] + 1:02d}.png")
        (run / "class_labels.txt").write_text("\n".join(lines) + "\n")
    if not zipped:
        return folder
    archive = root / "all_runs.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(folder).as_posix())
    return archive


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write a uint8 array as an IDX file (gzipped when the name ends in .gz)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path
