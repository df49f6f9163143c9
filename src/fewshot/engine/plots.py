"""Figures saved as PNG: training curves, episode grids, 2-D embeddings."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..tasks.episodes import Episode
from ..utils import subplots


def plot_training_curves(records: Sequence[dict], path: str | Path) -> Path:
    """Loss and train/validation accuracy against step, from the trainer's log records."""
    path = Path(path)
    fig, (ax_l, ax_a) = subplots(1, 2, figsize=(10, 3.6))
    tr = [r for r in records if "loss" in r]
    va = [r for r in records if "val_accuracy" in r]
    if tr:
        ax_l.plot([r["step"] for r in tr], [r["loss"] for r in tr], label="train loss")
        ax_a.plot([r["step"] for r in tr], [r["accuracy"] for r in tr], label="train (query) accuracy")
    if va:
        steps, acc = [r["step"] for r in va], np.array([r["val_accuracy"] for r in va])
        ci = np.array([r.get("val_ci95", 0.0) for r in va])
        ax_a.errorbar(steps, acc, yerr=ci, marker="o", capsize=3, label="validation accuracy ± 95% CI")
    ax_l.set(xlabel="step", ylabel="loss", title="loss")
    ax_a.set(xlabel="step", ylabel="accuracy", title="accuracy", ylim=(0, 1.01))
    for ax in (ax_l, ax_a):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def _show(ax, img: torch.Tensor) -> None:
    img = img.detach().float().cpu()
    if img.ndim == 3 and img.shape[0] == 1:
        ax.imshow(img[0].numpy(), cmap="gray_r", vmin=0, vmax=1)
    elif img.ndim == 3:
        ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy())
    else:
        ax.imshow(img.reshape(1, -1).numpy(), aspect="auto", cmap="viridis")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_episode(episode: Episode, predicted: torch.Tensor | None, path: str | Path, max_query: int = 4) -> Path:
    """One row per class: its support images, then up to ``max_query`` queries titled
    ``pred/true``; wrong predictions are framed in red."""
    path = Path(path)
    way = episode.way
    shot = episode.support_x.shape[0] // way
    qy = episode.query_y.cpu()
    cols = shot + max_query
    fig, axes = subplots(way, cols, figsize=(1.1 * cols, 1.1 * way), squeeze=False)
    for c in range(way):
        for s in range(shot):
            ax = axes[c, s]
            _show(ax, episode.support_x[c * shot + s])
            if s == 0:
                ax.set_ylabel(f"class {c}", fontsize=7)
            if c == 0:
                ax.set_title("support", fontsize=7)
        q_idx = torch.nonzero(qy == c).flatten()[:max_query]
        for j in range(max_query):
            ax = axes[c, shot + j]
            if j >= len(q_idx):
                ax.axis("off")
                continue
            i = int(q_idx[j])
            _show(ax, episode.query_x[i])
            if predicted is not None:
                p = int(predicted[i])
                ok = p == c
                ax.set_title(f"{p}/{c}", fontsize=7, color="green" if ok else "red")
                if not ok:
                    for sp in ax.spines.values():
                        sp.set_edgecolor("red")
                        sp.set_linewidth(2.5)
    fig.suptitle("support | queries (title: predicted/true; red = wrong)", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def plot_embeddings(embeddings: torch.Tensor | np.ndarray, labels: Sequence[int] | np.ndarray, path: str | Path,
                    title: str = "embeddings") -> Path:
    """Scatter ``[N, 2]`` embeddings (higher dimensions are reduced with PCA), coloured by label."""
    path = Path(path)
    z = np.asarray(embeddings.detach().cpu() if isinstance(embeddings, torch.Tensor) else embeddings, dtype=np.float64)
    if z.shape[1] > 2:
        from sklearn.decomposition import PCA

        z = PCA(n_components=2).fit_transform(z)
        title += " (PCA)"
    labels = np.asarray(labels)
    fig, ax = subplots(figsize=(6, 5))
    sc = ax.scatter(z[:, 0], z[:, 1], c=labels, cmap="tab10" if labels.max() < 10 else "tab20", s=6, alpha=0.8)
    if labels.max() < 20:
        ax.legend(*sc.legend_elements(), fontsize=7, loc="best", markerscale=0.8)
    ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
