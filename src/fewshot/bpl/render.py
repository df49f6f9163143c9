"""The image level: ink along the pen path, blurred, through a Bernoulli pixel model.

``render`` is differentiable in the control points, so token variables can be refitted to an
image by gradient steps. Ink: each curve point deposits its arc length into the 105×105 grid
(bilinear), a Gaussian pen of ``ink_sd`` pixels blurs it, ``p = 1 - exp(-gain · ink)``, and
every pixel flips with probability ``noise`` (Lake et al. 2015 use the same ingredients).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from .splines import NCP, basis

SIZE = 105
DOT_INK = 2.5  #: pixels of stroke length a dot's ink is worth
POINTS = 48  #: curve points per sub-stroke when rendering (spacing well under the pen width)


@lru_cache(maxsize=8)
def _blur_matrix(sd: float, size: int) -> torch.Tensor:
    """``[size, size]`` Gaussian blur along one axis (zero padding): ``K @ img @ K.T`` blurs both.
    A matrix product is ~20x faster than ``conv2d`` backward on CPU at this size."""
    x = torch.arange(size, dtype=torch.float32)
    k = torch.exp(-0.5 * ((x[:, None] - x[None]) / sd) ** 2)
    r = max(1, math.ceil(3 * sd))
    k = k * ((x[:, None] - x[None]).abs() <= r)
    return k / k.sum(1, keepdim=True).max()


def render(cps: torch.Tensor, mask: torch.Tensor, ink_sd: float, gain: float, noise: float,
           size: int = SIZE) -> torch.Tensor:
    """Pixel ink probabilities ``[B, size, size]`` of ``B`` characters.

    Args:
        cps: absolute control points ``[B, S, 5, 2]`` as ``(x, row)``; ``S`` sub-strokes (padded).
        mask: ``[B, S]``, 1 for real sub-strokes, 0 for padding.
    """
    b, s = cps.shape[:2]
    bas = torch.as_tensor(basis(POINTS, NCP), dtype=cps.dtype)
    pts = torch.einsum("mk,bskd->bsmd", bas, cps)  # [B, S, M, 2]
    seg = (pts[:, :, 1:] - pts[:, :, :-1]).norm(dim=-1)
    w = torch.cat([seg, torch.zeros_like(seg[..., :1])], -1) * 0.5
    w = w + torch.cat([torch.zeros_like(seg[..., :1]), seg], -1) * 0.5
    # a dot (a sub-stroke shorter than the pen is wide) still leaves a pen-sized blot
    w = (w + (DOT_INK - seg.sum(-1, keepdim=True)).clamp_min(0) / w.shape[-1]) * mask[..., None]
    pts, w = pts.reshape(b, -1, 2), w.reshape(b, -1)
    x0, y0 = pts[..., 0].floor(), pts[..., 1].floor()
    fx, fy = pts[..., 0] - x0, pts[..., 1] - y0
    grid = torch.zeros(b, size * size, dtype=cps.dtype)
    for dx, dy, ww in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        xi, yi = (x0 + dx).long(), (y0 + dy).long()
        ok = (xi >= 0) & (xi < size) & (yi >= 0) & (yi < size)
        idx = (yi.clamp(0, size - 1) * size + xi.clamp(0, size - 1))
        grid = grid.scatter_add(1, idx, ww * w * ok)
    k = _blur_matrix(float(ink_sd), size).to(cps.dtype)
    img = k @ grid.view(b, size, size) @ k.T
    p = 1 - torch.exp(-gain * img)
    return noise / 2 + (1 - noise) * p


def log_likelihood(prob: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Bernoulli log-likelihood ``[B]`` of a binary image ``[size, size]`` (or ``[B, size, size]``)."""
    image = image.to(prob.dtype)
    return (image * prob.log() + (1 - image) * (1 - prob).log()).flatten(-2).sum(-1)


def pack(strokes_list: list[list[np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Characters as lists of per-stroke control points ``[S_i, 5, 2]`` -> padded ``cps [B, S, 5, 2]``,
    ``mask [B, S]`` (sub-strokes of all strokes concatenated; strokes need no boundary for rendering)."""
    flat = [np.concatenate(s, 0) if s else np.zeros((0, NCP, 2)) for s in strokes_list]
    s_max = max(1, max(len(f) for f in flat))
    cps = np.zeros((len(flat), s_max, NCP, 2))
    mask = np.zeros((len(flat), s_max))
    for i, f in enumerate(flat):
        cps[i, : len(f)] = f
        mask[i, : len(f)] = 1
    return torch.as_tensor(cps, dtype=torch.float32), torch.as_tensor(mask, dtype=torch.float32)
