"""The one functional inner loop of gradient-based meta-learning (MAML family, sinusoid
regression, DAML), and the gradient preprocessing shared by the learned optimisers.

Weights are a dict ``name -> tensor`` ("fast weights") run through an unmodified module with
:func:`torch.func.functional_call`. Gradients come from :func:`torch.func.grad`, which composes
with ordinary autograd (so the result is differentiable w.r.t. the starting weights: second-order
MAML) and with :func:`torch.func.vmap` (so a meta-batch of tasks can adapt in one call).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch.func import grad_and_value

from ..utils import check_finite

Params = dict[str, torch.Tensor]
#: a step size: one float, or one tensor per parameter (Meta-SGD's learned rates)
LR = float | Mapping[str, torch.Tensor]


def sgd_step(params: Params, grads: Mapping[str, torch.Tensor | None], lr: LR) -> Params:
    """``p - lr * g`` for every entry; a parameter without gradient is kept as is."""
    out = {}
    for name, p in params.items():
        g = grads.get(name)
        out[name] = p if g is None else p - (lr[name] if isinstance(lr, Mapping) else lr) * g
    return out


def scale_lr(lr: LR, factor: float) -> LR:
    """``lr`` times ``factor`` (every tensor of a per-parameter ``lr``)."""
    return {n: factor * v for n, v in lr.items()} if isinstance(lr, Mapping) else factor * lr


def inner_loop(loss_fn: Callable[[Params], torch.Tensor], params: Params, steps: int, lr: LR,
               first_order: bool = False, check: bool = True) -> Params:
    """``steps`` plain gradient steps on ``loss_fn(params)``; returns the fast weights.

    The steps stay differentiable w.r.t. ``params`` (second-order meta-gradients) unless
    ``first_order``, which treats each inner gradient as a constant. ``check`` raises on a
    non-finite inner loss; pass ``check=False`` under :func:`torch.func.vmap` (it reads the value).
    """
    for _ in range(steps):
        grads, loss = grad_and_value(loss_fn)(params)
        if check:
            check_finite(loss, "inner loop")
        if first_order:
            grads = {n: g.detach() for n, g in grads.items()}
        params = sgd_step(params, grads, lr)
    return params


def preprocess_gradient(g: torch.Tensor, p: float = 10.0) -> torch.Tensor:
    """Andrychowicz et al.'s (2016) scaling of a gradient (or loss) for an LSTM input,
    ``[...] -> [..., 2]``: ``(log|g| / p, sign g)`` where ``|g| >= e^-p``, else ``(-1, e^p g)``."""
    big = g.abs() >= math.exp(-p)
    log = torch.where(big, g.abs().clamp_min(1e-38).log() / p, torch.full_like(g, -1.0))
    sign = torch.where(big, g.sign(), g * math.exp(p))
    return torch.stack([log, sign], -1)
