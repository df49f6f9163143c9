"""Pictures of the playground: the network itself (activations, weights, target), training
histories, the experiments' histograms, and a GIF of the weights over training."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.patches import Circle

from ..utils import subplots
from .network import BatchedMLP

MAX_UNITS = 24  # wider layers are drawn with their first units only


def _save(fig, path: str | Path, dpi: int = 110) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def draw_network_on(ax, snapshot: dict, activations: Sequence[torch.Tensor], target: torch.Tensor | None = None,
                    value_range: tuple[float, float] = (0.0, 1.0), title: str | None = None) -> None:
    """Draw one network on ``ax``: layers left to right, each neuron a circle filled by its
    activation (white = low, black = high), each connection a line, blue for positive and red for
    negative weights, its width and opacity growing with ``|w|``; biases are written under their
    neurons; output neurons whose ``target`` is given are circled in green (target high) or orange
    (target low), with the target value beside them.

    ``snapshot`` is :meth:`BatchedMLP.snapshot` (weights ``[d_in, d_out]``); ``activations`` one
    ``[d_l]`` vector per layer, input first."""
    lo, hi = value_range
    sizes = [min(len(a), MAX_UNITS) for a in activations]
    xs = np.linspace(0, 1, len(sizes))
    pos = [(xs[l], ((n - 1) / 2 - np.arange(n)) / max(max(sizes) - 1, 1)) for l, n in enumerate(sizes)]  # unit 0 on top
    radius = 0.35 / max(max(sizes), 2)
    weights = snapshot["weights"]
    w_max = max(float(w.abs().max()) for w in weights) or 1.0
    for l, w in enumerate(weights):
        x0, ys0 = pos[l]
        x1, ys1 = pos[l + 1]
        for i in range(sizes[l]):
            for j in range(sizes[l + 1]):
                v = float(w[i, j])
                ax.plot([x0, x1], [ys0[i], ys1[j]], color="tab:blue" if v >= 0 else "tab:red",
                        lw=0.3 + 3.5 * abs(v) / w_max, alpha=0.25 + 0.75 * abs(v) / w_max, zorder=1)
    for l, act in enumerate(activations):
        x0, ys = pos[l]
        bias = snapshot["biases"][l - 1] if l > 0 else None
        for i in range(sizes[l]):
            a = (float(act[i]) - lo) / (hi - lo)
            ax.add_patch(Circle((x0, ys[i]), radius, facecolor=str(1.0 - min(max(a, 0.0), 1.0)), edgecolor="black",
                                lw=1.0, zorder=3))
            if bias is not None:
                ax.text(x0, ys[i] - 1.6 * radius, f"b={float(bias[i]):+.1f}", ha="center", va="top", fontsize=6, zorder=4)
        if len(act) > sizes[l]:
            ax.text(x0, ys[-1] - 3 * radius, f"(+{len(act) - sizes[l]} more)", ha="center", fontsize=6)
    if target is not None:
        x0, ys = pos[-1]
        mid = (lo + hi) / 2
        for i in range(min(len(target), sizes[-1])):
            t = float(target[i])
            ax.add_patch(Circle((x0, ys[i]), radius * 1.45, fill=False, edgecolor="green" if t > mid else "darkorange",
                                lw=2.5, zorder=5))
            ax.text(x0 + 2.0 * radius, ys[i], f"target {t:g}\nout {float(activations[-1][i]):.2f}", va="center",
                    fontsize=7, zorder=5)
    ax.set_xlim(-0.12, 1.25)
    ax.set_ylim(-0.62, 0.62)
    ax.set_aspect("equal")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=8)


def draw_network(net: BatchedMLP, x: torch.Tensor, target: torch.Tensor | None, path: str | Path, index: int = 0,
                 title: str | None = None) -> Path:
    """The network ``index`` of the batch for every input row of ``x [P, d]`` (0/1 coding; one
    panel each), its ``target [P, d_out]`` circled. Saved as PNG."""
    x = torch.as_tensor(x).float()
    snap = net.snapshot(index)
    acts = [a[index].detach().cpu() for a in net.forward(net.config.encode(x).to(net.device))]
    value_range = (-1.0, 1.0) if net.config.activation == "tanh" else (0.0, 1.0)
    enc_t = None if target is None else net.config.encode(torch.as_tensor(target))
    cols = min(len(x), 4)
    rows = (len(x) + cols - 1) // cols
    fig, axes = subplots(rows, cols, figsize=(3.1 * cols, 2.9 * rows), squeeze=False)
    for p in range(rows * cols):
        ax = axes[p // cols, p % cols]
        if p >= len(x):
            ax.axis("off")
            continue
        label = "".join(str(int(v)) for v in x[p].tolist()) if x.shape[1] <= 8 else f"input {p}"
        draw_network_on(ax, snap, [a[p] for a in acts], None if enc_t is None else enc_t[p], value_range, f"input {label}")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_history(iterations: Sequence[int], curves: torch.Tensor | np.ndarray, path: str | Path,
                 labels: Sequence[str] | None = None, threshold: float | None = None,
                 ylabel: str = "summed squared error", title: str = "training history", log_x: bool = False) -> Path:
    """Error against iteration, one line per row of ``curves [K, T]`` (log-scaled y)."""
    curves = np.asarray(curves, dtype=np.float64)
    fig, ax = subplots(figsize=(6.4, 3.8))
    for k, c in enumerate(curves):
        ax.plot(iterations, np.clip(c, 1e-6, None), lw=1.2, label=None if labels is None else labels[k])
    if threshold is not None:
        ax.axhline(threshold, color="black", ls="--", lw=0.8, label=f"threshold {threshold:g}")
    ax.set(xlabel="iteration", ylabel=ylabel, title=title, yscale="log")
    if log_x:  # linear up to the first logged point, logarithmic after it
        ax.set_xscale("symlog", linthresh=max(float(iterations[1]) if len(iterations) > 1 else 1.0, 1.0))
        ax.set_xlim(0, max(iterations))
    ax.grid(alpha=0.3)
    if labels is not None or threshold is not None:
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return _save(fig, path)


def plot_level_histogram(groups: dict[str, np.ndarray], levels: int, path: str | Path, base: int = 5000) -> Path:
    """Grouped bar chart: how many functions were first learnt within budget ``base·2^k``
    (k = 0..levels-1), and how many never ("never"), one bar group per setting."""
    names = list(groups)
    cats = list(range(levels)) + [-1]
    width = 0.8 / max(len(names), 1)
    fig, ax = subplots(figsize=(8, 3.8))
    for i, name in enumerate(names):
        lv = np.asarray(groups[name])
        counts = [(lv == c).sum() for c in cats]
        ax.bar(np.arange(len(cats)) + (i - (len(names) - 1) / 2) * width, counts, width, label=f"{name} (n={len(lv)})")
    ax.set_xticks(np.arange(len(cats)), [f"k={c}\n{base * 2**c // 1000}k" for c in cats[:-1]] + ["never"], fontsize=7)
    ax.set(ylabel="functions", title=f"first budget base·2^k (base={base}) with SSE ≤ threshold")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return _save(fig, path)


def plot_shots_histogram(results: dict[str, np.ndarray], path: str | Path, xlabel: str = "shots (presentations) needed",
                         title: str = "few-shot learning of a new function (successful runs)") -> Path:
    """Overlaid step histograms of ``results[name]`` (values ≥ 0)."""
    fig, ax = subplots(figsize=(6.4, 3.8))
    top = max([int(np.max(v)) for v in results.values() if len(v)] + [1])
    bins = np.arange(0, top + 2) - 0.5 if top <= 60 else 40
    for name, v in results.items():
        ax.hist(v, bins=bins, histtype="step", lw=1.5, label=f"{name} (n={len(v)})")
    ax.set(xlabel=xlabel, ylabel="runs", title=title)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_new_digit(rows: Sequence[dict], old_before: float, path: str | Path) -> Path:
    """Accuracy on the new digit (left) and on the old nine (right) against shots, one line per method."""
    fig, (ax_n, ax_o) = subplots(1, 2, figsize=(10, 3.8), sharex=True)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    for m in methods:
        rs = [r for r in rows if r["method"] == m]
        shots = [r["shot"] for r in rs]
        ls = "--" if "rehearsal" in m else ":" if "incremental" in m else "-"
        for ax, key in ((ax_n, "new"), (ax_o, "old")):
            ax.errorbar(shots, [100 * r[key] for r in rs], yerr=[100 * r[key + "_ci"] for r in rs], marker="o", ms=3,
                        capsize=2, ls=ls, label=m)
    ax_o.axhline(100 * old_before, color="black", lw=0.8, ls="--", label="pre-trained (before teaching)")
    ax_n.set(xlabel="examples of the new digit", ylabel="accuracy on the new digit (%)", xscale="log", ylim=(-2, 102))
    ax_o.set(xlabel="examples of the new digit", ylabel="accuracy on the old nine (%)", xscale="log", ylim=(-2, 102))
    ticks = sorted({r["shot"] for r in rows})
    for ax in (ax_n, ax_o):
        ax.grid(alpha=0.3)
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
    ax_o.legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    return _save(fig, path)


def animate_network(snapshots: Sequence[dict], net: BatchedMLP, x: torch.Tensor, target: torch.Tensor | None,
                    path: str | Path, point: int = 0, labels: Sequence[str] | None = None, duration_ms: int = 250) -> Path:
    """GIF of network 0's weights over training (one frame per snapshot), drawn for input row
    ``point`` of ``x`` with its target circled. Uses Pillow (no extra dependency)."""
    from PIL import Image

    frames = []
    xp = net.config.encode(torch.as_tensor(x)[point:point + 1].float())
    enc_t = None if target is None else net.config.encode(torch.as_tensor(target))[point]
    value_range = (-1.0, 1.0) if net.config.activation == "tanh" else (0.0, 1.0)
    for k, snap in enumerate(snapshots):
        one = BatchedMLP(net.config, [w.unsqueeze(0) for w in snap["weights"]],
                         [None if b is None else b.unsqueeze(0) for b in snap["biases"]])
        acts = [a[0, 0] for a in one.forward(xp)]
        fig, ax = subplots(figsize=(4.2, 3.4))
        bits = "".join(str(int(v)) for v in torch.as_tensor(x)[point].tolist())
        draw_network_on(ax, snap, acts, enc_t, value_range, f"input {bits}" + ("" if labels is None else f" · {labels[k]}"))
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80)
        buf.seek(0)
        frames.append(Image.open(buf).convert("P", palette=Image.ADAPTIVE))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=duration_ms, loop=0)
    return path
