"""Clamped cubic B-splines with a few control points: the shape of one sub-stroke (Lake et al. 2015).

A clamped spline passes through its first and last control points, so sub-strokes chain end to
start. ``basis(m)`` is the ``[m, ncp]`` design matrix at ``m`` evenly spaced parameter values.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy.interpolate import BSpline

NCP = 5  #: control points per sub-stroke
DEGREE = 3


@lru_cache(maxsize=32)
def basis(m: int, ncp: int = NCP) -> np.ndarray:
    """Design matrix ``[m, ncp]``: curve points = ``basis(m) @ control_points``."""
    inner = np.linspace(0, 1, ncp - DEGREE + 1)[1:-1]
    knots = np.concatenate([np.zeros(DEGREE + 1), inner, np.ones(DEGREE + 1)])
    t = np.linspace(0, 1, m)
    t[-1] = 1 - 1e-12
    b = BSpline.design_matrix(t, knots, DEGREE).toarray()
    b[-1] = 0
    b[-1, -1] = 1.0
    return b


def resample(points: np.ndarray, m: int) -> np.ndarray:
    """``m`` points evenly spaced by arc length along the polyline ``points [n, 2]``."""
    points = np.asarray(points, dtype=np.float64)
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    if s[-1] <= 1e-9:
        return np.repeat(points[:1], m, axis=0)
    u = np.linspace(0, s[-1], m)
    return np.stack([np.interp(u, s, points[:, 0]), np.interp(u, s, points[:, 1])], axis=1)


def fit_spline(points: np.ndarray, ncp: int = NCP, m: int = 30) -> np.ndarray:
    """Least-squares control points ``[ncp, 2]`` of the polyline ``points [n, 2]`` (arc-length parametrised)."""
    target = resample(points, m)
    cp, *_ = np.linalg.lstsq(basis(m, ncp), target, rcond=None)
    return cp


def eval_spline(cp: np.ndarray, m: int = 30) -> np.ndarray:
    """Curve points ``[..., m, 2]`` of control points ``[..., ncp, 2]``."""
    return np.einsum("mk,...kd->...md", basis(m, cp.shape[-2]), cp)


def arc_length(points: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(points, axis=0), axis=1).sum())
