"""Figures: a drawing stroke by stroke (order and direction), the drawers of one character,
sampled character types and tokens (Lake et al. 2015, "generating new characters")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from ..data.strokes import Drawing
from .model import BPLModel, CharacterType, control_points
from .render import pack, render


def render_strokes(model: BPLModel, strokes: list[np.ndarray]) -> np.ndarray:
    """Ink probabilities ``[105, 105]`` of absolute control points per stroke ``[S_i, 5, 2]``."""
    cps, mask = pack([strokes])
    with torch.no_grad():
        return render(cps, mask, model.ink_sd, model.ink_gain, model.noise)[0].numpy()


def _draw(ax, drawing: Drawing, numbers: bool = True) -> None:
    if drawing.image is not None:
        ax.imshow(drawing.image, cmap="Greys", vmin=0, vmax=4)
    colours = ["tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:cyan"]
    for i, st in enumerate(drawing.strokes):
        c = colours[i % len(colours)]
        ax.plot(st[:, 0], st[:, 1], color=c, lw=1.5)
        if len(st) > 1:
            j = max(1, len(st) // 2)
            ax.annotate("", xy=st[j, :2], xytext=st[j - 1, :2], arrowprops={"arrowstyle": "->", "color": c, "lw": 1.5})
        ax.plot(*st[0, :2], "o", color=c, ms=4)
        if numbers:
            ax.text(st[0, 0] + 2, st[0, 1] - 2, str(i + 1), color=c, fontsize=9, weight="bold")
    ax.set(xlim=(0, 105), ylim=(105, 0), xticks=[], yticks=[])


def plot_drawing(drawing: Drawing, path: str | Path) -> Path:
    """One drawing, stroke by stroke: panel ``i`` shows strokes ``1..i``; numbers give the order,
    arrows the direction, dots the starts."""
    n = len(drawing.strokes)
    fig = Figure(figsize=(2.2 * (n + 1), 2.4))
    axes = fig.subplots(1, n + 1, squeeze=False)[0]
    for i in range(n):
        part = Drawing(drawing.alphabet, drawing.character, drawing.id, drawing.drawer, drawing.strokes[: i + 1], None)
        _draw(axes[i], part)
        axes[i].set_title(f"stroke {i + 1}", fontsize=9)
    if drawing.image is not None:
        axes[n].imshow(drawing.image, cmap="Greys")
    axes[n].set(xticks=[], yticks=[], title="image")
    fig.suptitle(f"{drawing.label}, drawer {drawing.drawer}", fontsize=10)
    return _save(fig, path)


def plot_drawers(drawings: list[Drawing], path: str | Path, cols: int = 5) -> Path:
    """Every drawer of one character with stroke order and direction."""
    rows = -(-len(drawings) // cols)
    fig = Figure(figsize=(2 * cols, 2 * rows + 0.4))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, d in zip(axes.flat, drawings):
        ax.axis("on")
        _draw(ax, d, numbers=True)
        ax.set_title(f"drawer {d.drawer}", fontsize=8)
    fig.suptitle(drawings[0].label if drawings else "", fontsize=10)
    return _save(fig, path)


def plot_grid(images: list[np.ndarray], path: str | Path, cols: int = 6, title: str = "",
              labels: list[str] | None = None) -> Path:
    """Images ``[105, 105]`` (ink probability or binary) in a grid."""
    rows = -(-len(images) // cols)
    fig = Figure(figsize=(1.6 * cols, 1.6 * rows + 0.4))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (ax, im) in enumerate(zip(axes.flat, images)):
        ax.imshow(im, cmap="Greys", vmin=0, vmax=1)
        if labels:
            ax.set_title(labels[i], fontsize=7)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def sample_type_images(model: BPLModel, n: int, seed: int = 0) -> list[np.ndarray]:
    """Ink maps of ``n`` new character types drawn from the prior."""
    rng = np.random.default_rng(seed)
    return [render_strokes(model, control_points(model.sample_type(rng))) for _ in range(n)]


def sample_token_images(model: BPLModel, ctype: CharacterType, n: int, seed: int = 0) -> list[np.ndarray]:
    """Ink maps of ``n`` new tokens (exemplars) of one type."""
    rng = np.random.default_rng(seed)
    return [render_strokes(model, model.sample_token(ctype, rng)) for _ in range(n)]


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return path
