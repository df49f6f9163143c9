"""Omniglot pen trajectories (Lake, Salakhutdinov & Tenenbaum 2015) from the official stroke archives.

Layout: ``strokes_<set>/<Alphabet>/characterNN/<id>_<drawer>.txt``, zipped or extracted. Each
file is a sequence of strokes: a ``START`` line, then ``x,y,t`` lines (``t`` in milliseconds),
a ``BREAK`` line ending each stroke. The official coordinates have ``y`` pointing up (negative
on the page); :func:`parse_drawing` returns image coordinates ``(x, row) = (x, -y)`` so a
drawing lies on its 105×105 image (same ``id`` and ``drawer`` in ``images_<set>``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .archive import FileTree
from .images import ImageSpec, decode_image
from .omniglot import SPLITS
from .sources import RemoteFile, find_file, missing_data_error

_BASE = "https://github.com/brendenlake/omniglot/raw/master/python/"
STROKE_SPLITS: dict[str, RemoteFile] = {
    name: RemoteFile(f"strokes_{name}.zip", _BASE + f"strokes_{name}.zip", None, "omniglot")
    for name in ("background", "evaluation", "background_small1", "background_small2")
}

_ITEM = re.compile(r"(?:^|/)([^/]+)/(character\d+)/(\d+)_(\d+)\.(txt|png)$")


@dataclass
class Drawing:
    """One drawer's strokes of one character. ``strokes``: list of ``float64 [n_i, 3]`` arrays
    of ``(x, row, t_ms)`` in image coordinates, in drawing order; ``image``: ``uint8 [105, 105]``
    with ink = 1 (None until paired)."""

    alphabet: str
    character: str
    id: int
    drawer: int
    strokes: list[np.ndarray]
    image: np.ndarray | None = field(default=None, repr=False)

    @property
    def key(self) -> tuple[str, str, int, int]:
        return self.alphabet, self.character, self.id, self.drawer

    @property
    def label(self) -> str:
        return f"{self.alphabet}/{self.character}"


def parse_drawing(text: str, where: str = "stroke file") -> list[np.ndarray]:
    """Parse one stroke file (``START``, then strokes of ``x,y,t`` lines each ended by ``BREAK``)
    into a list of ``[n, 3]`` arrays ``(x, row, t)``."""
    lines = [(i, ln.strip()) for i, ln in enumerate(text.splitlines(), 1) if ln.strip()]
    if not lines or lines[0][1] != "START":
        raise ValueError(f"{where}: the first line must be START")
    strokes: list[np.ndarray] = []
    current: list[list[float]] = []
    for lineno, line in lines[1:]:
        if line == "BREAK":
            if not current:
                raise ValueError(f"{where}:{lineno}: empty stroke (BREAK with no points before it)")
            strokes.append(np.asarray(current, dtype=np.float64))
            current = []
        elif line == "START":
            raise ValueError(f"{where}:{lineno}: a second START; one file holds one drawing")
        else:
            try:
                x, y, t = (float(p) for p in line.split(","))
            except ValueError:
                raise ValueError(f"{where}:{lineno}: expected 'x,y,t', got {line!r}") from None
            current.append([x, -y, t])
    if current:
        raise ValueError(f"{where}: the last stroke has no BREAK line; the file is truncated")
    if not strokes:
        raise ValueError(f"{where}: no strokes (expected START, then x,y,t lines, each stroke ended by BREAK)")
    return strokes


def read_stroke_tree(tree: FileTree) -> list[Drawing]:
    """Every drawing in a stroke archive (zip or folder), sorted by alphabet, character, drawer."""
    out = []
    for name in tree.names():
        m = _ITEM.search(name)
        if m and m.group(5) == "txt":
            alphabet, char, id_, drawer, _ = m.groups()
            out.append(Drawing(alphabet, char, int(id_), int(drawer), parse_drawing(tree.read(name).decode(), name)))
    if not out:
        raise ValueError(
            f"{tree.path} holds no Omniglot stroke files: expected <set>/<Alphabet>/characterNN/<id>_<drawer>.txt "
            "as in the official strokes_*.zip archives"
        )
    return sorted(out, key=lambda d: d.key)


def pair_images(drawings: list[Drawing], images: str | Path) -> None:
    """Attach to every drawing its 105×105 image (same alphabet, character, id and drawer)."""
    spec = ImageSpec(size=105, channels=1, invert=True)
    with FileTree(images) as tree:
        index = {}
        for name in tree.names():
            m = _ITEM.search(name)
            if m and m.group(5) == "png":
                index[(m.group(1), m.group(2), int(m.group(3)), int(m.group(4)))] = name
        missing = [d.key for d in drawings if d.key not in index]
        if missing:
            raise ValueError(
                f"{images} lacks the images of {len(missing)} of {len(drawings)} drawings (first: {missing[0]}); "
                "pair a strokes_<set> archive with the images_<set> archive of the same set"
            )
        for d in drawings:
            d.image = (decode_image(tree.read(index[d.key]), spec)[0] > 127).astype(np.uint8)


def load_strokes(split: str = "background_small1", data_dir: str | Path | None = None,
                 images: bool = False) -> list[Drawing]:
    """Load a stroke set (``background``, ``evaluation``, ``background_small1``, ``background_small2``)
    from ``strokes_<split>.zip`` or its extracted folder; with ``images``, pair each drawing with
    its image from ``images_<split>`` in the same folder."""
    if split not in STROKE_SPLITS:
        raise ValueError(f"unknown stroke split {split!r}; choose from {', '.join(STROKE_SPLITS)}")
    remote = STROKE_SPLITS[split]
    path = find_file(remote, data_dir, extracted=remote.name[:-4])
    if path is None:
        raise missing_data_error(remote, data_dir, f"Omniglot strokes '{split}'")
    with FileTree(path) as tree:
        drawings = read_stroke_tree(tree)
    if images:
        img = SPLITS[split]
        ipath = find_file(img, data_dir, extracted=img.name[:-4])
        if ipath is None:
            raise missing_data_error(img, data_dir, f"Omniglot images '{split}' (to pair with the strokes)")
        pair_images(drawings, ipath)
    return drawings
