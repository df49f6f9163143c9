"""Batch normalisation with the statistics of the current batch only (the MAML family's
transductive BatchNorm), written with plain tensor operations."""

from __future__ import annotations

import torch
from torch import nn


class BatchStatNorm(nn.modules.batchnorm._BatchNorm):
    """``(x - mean) / sqrt(var + eps) * weight + bias`` over every dimension but the channels (dim 1),
    always with the statistics of the batch at hand (no running statistics, training or not).

    The same function as ``F.batch_norm(training=True)`` with no running statistics, but made of
    ordinary operations, so that its second derivatives stay right under :func:`torch.func.vmap`
    (``F.batch_norm``'s double backward gives wrong meta-gradients there: second-order MAML over a
    vectorised meta-batch). Parameter names match ``nn.BatchNorm*d``: checkpoints are unchanged.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True):
        super().__init__(num_features, eps=eps, affine=affine, track_running_stats=False)

    @classmethod
    def replacing(cls, bn: nn.modules.batchnorm._BatchNorm) -> "BatchStatNorm":
        """A BatchStatNorm sharing ``bn``'s weight and bias (the same Parameter objects)."""
        new = cls(bn.num_features, bn.eps, bn.affine)
        if bn.affine:
            new.weight, new.bias = bn.weight, bn.bias
        return new

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.ndim < 2:
            raise ValueError(f"BatchStatNorm expects [B, C, ...] inputs, got shape {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        dims = [0, *range(2, x.ndim)]
        var, mean = torch.var_mean(x, dims, correction=0, keepdim=True)
        y = (x - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            shape = (1, -1) + (1,) * (x.ndim - 2)
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y
