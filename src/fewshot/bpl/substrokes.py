"""From pen trajectories to sub-strokes: splits at pauses (data) or corners (parsed skeletons),
and the normalised shape + scale of one sub-stroke (Lake et al. 2015, "motor primitives")."""

from __future__ import annotations

import numpy as np

from .splines import arc_length, fit_spline

MIN_PIECE = 6.0  #: pixels: no sub-stroke shorter than this is split off


def pause_splits(stroke: np.ndarray, ratio: float = 0.35, window: int = 2) -> list[np.ndarray]:
    """Split a drawn stroke ``[n, 3] (x, row, t)`` at pen-velocity minima slower than ``ratio`` ×
    the stroke's median speed; returns ``[k, 2]`` pieces that share their joining point."""
    xy, t = stroke[:, :2], stroke[:, 2]
    n = len(xy)
    if n < 2 * window + 3 or arc_length(xy) < 2 * MIN_PIECE:
        return [xy]
    seg = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(xy, axis=0), axis=1))])
    lo, hi = np.clip(np.arange(n) - window, 0, n - 1), np.clip(np.arange(n) + window, 0, n - 1)
    speed = (seg[hi] - seg[lo]) / (t[hi] - t[lo] + 1.0)
    thresh = ratio * np.median(speed)
    cuts, last = [], 0.0
    for i in range(1, n - 1):
        if speed[i] < thresh and speed[i] <= speed[i - 1] and speed[i] <= speed[i + 1]:
            if seg[i] - last >= MIN_PIECE and seg[-1] - seg[i] >= MIN_PIECE:
                cuts.append(i)
                last = seg[i]
    return split_at(xy, cuts)


def split_at(xy: np.ndarray, cuts: list[int]) -> list[np.ndarray]:
    bounds = [0, *cuts, len(xy) - 1]
    return [xy[a: b + 1] for a, b in zip(bounds[:-1], bounds[1:])]


def corner_candidates(xy: np.ndarray, max_corners: int = 3, min_angle: float = 0.6, span: float = 4.0) -> list[int]:
    """Indices of the sharpest turns (turning angle over ±``span`` px above ``min_angle`` rad)."""
    n = len(xy)
    if n < 5:
        return []
    seg = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(xy, axis=0), axis=1))])
    a = np.searchsorted(seg, seg - span).clip(0, n - 1)
    b = np.searchsorted(seg, seg + span).clip(0, n - 1)
    v1, v2 = xy - xy[a], xy[b] - xy
    n1, n2 = np.linalg.norm(v1, axis=1), np.linalg.norm(v2, axis=1)
    cos = (v1 * v2).sum(1) / np.maximum(n1 * n2, 1e-9)
    ang = np.where((n1 > 1) & (n2 > 1), np.arccos(np.clip(cos, -1, 1)), 0.0)
    ok = (seg >= MIN_PIECE) & (seg <= seg[-1] - MIN_PIECE) & (ang > min_angle)
    peaks = [i for i in range(1, n - 1) if ok[i] and ang[i] >= ang[i - 1] and ang[i] >= ang[i + 1]]
    peaks.sort(key=lambda i: -ang[i])
    chosen: list[int] = []
    for i in peaks:
        if all(abs(seg[i] - seg[j]) >= MIN_PIECE for j in chosen):
            chosen.append(i)
        if len(chosen) == max_corners:
            break
    return sorted(chosen)


def normalise(piece: np.ndarray) -> tuple[np.ndarray, float]:
    """Shape control points ``[5, 2]`` (start at the origin, unit extent) and the scale in pixels."""
    shape = piece - piece[0]
    scale = float(max(np.ptp(shape[:, 0]), np.ptp(shape[:, 1]), 1.0))
    cp = fit_spline(shape / scale)
    return cp - cp[0], scale
