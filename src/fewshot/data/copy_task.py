"""The NTM copy task (Graves et al. 2014, §4.1): read a sequence of random bit vectors, then write
it back after a delimiter.

Input ``[2L + 1, B, width + 1]``: steps ``0..L-1`` carry the bits (channel ``width`` = 0), step ``L``
is the delimiter (only channel ``width`` on), steps ``L+1..2L`` are blank while the model answers.
Target ``[L, B, width]``: the bits, compared with the outputs of the last ``L`` steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class CopyBatch:
    """``inputs [2L+1, B, width+1]``, ``targets [L, B, width]`` (float 0/1), ``length`` = L."""

    inputs: torch.Tensor
    targets: torch.Tensor
    length: int

    def outputs_of(self, logits: torch.Tensor) -> torch.Tensor:
        """The answer part ``[L, B, width]`` of a model's per-step outputs ``[2L+1, B, width]``."""
        return logits[self.length + 1:]


def copy_batch(batch: int, length: int, width: int = 8, generator: torch.Generator | None = None) -> CopyBatch:
    """A batch of copy sequences of one ``length`` (bits ~ Bernoulli(0.5))."""
    if length < 1:
        raise ValueError(f"copy sequences need length >= 1, got {length}")
    bits = torch.randint(0, 2, (length, batch, width), generator=generator).float()
    x = torch.zeros(2 * length + 1, batch, width + 1)
    x[:length, :, :width] = bits
    x[length, :, width] = 1.0
    return CopyBatch(x, bits, length)


def sample_copy_batch(batch: int, min_length: int = 1, max_length: int = 20, width: int = 8,
                      generator: torch.Generator | None = None) -> CopyBatch:
    """A batch whose length is drawn uniformly from ``[min_length, max_length]``."""
    length = int(torch.randint(min_length, max_length + 1, (1,), generator=generator))
    return copy_batch(batch, length, width, generator)


def bits_wrong(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-sequence count of wrong bits after thresholding ``sigmoid(logits)`` at 0.5: ``[L, B, W] -> [B]``."""
    return ((logits > 0).float() != targets).float().sum(dim=(0, 2))
