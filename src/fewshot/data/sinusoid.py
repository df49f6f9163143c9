"""The sinusoid regression task family of the MAML paper (Finn et al. 2017, section 5.1).

A task is ``y = A sin(x - phase)`` with ``A ~ U[0.1, 5]``, ``phase ~ U[0, pi]``; inputs
``x ~ U[-5, 5]``. Everything is generated from a seed, so a fixed held-out task set is a seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class SinusoidBatch:
    """``tasks`` sinusoids with their points. Shapes: ``amplitude, phase [T]``;
    ``support_x, support_y [T, K, 1]``; ``query_x, query_y [T, Q, 1]``."""

    amplitude: torch.Tensor
    phase: torch.Tensor
    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor

    def __len__(self) -> int:
        return int(self.amplitude.numel())

    def task_params(self) -> torch.Tensor:
        """``[T, 2]`` (amplitude, phase): what an oracle is told."""
        return torch.stack([self.amplitude, self.phase], -1)


class SinusoidTasks:
    """Sampler of sinusoid tasks.

    Args:
        amplitude: range of ``A``; phase: range of the phase; x_range: range of the inputs.
        phases: a finite set of phases drawn uniformly instead of the ``phase`` range (the book
            variant of the toy: ``(0, pi)``).
    """

    def __init__(self, amplitude: tuple[float, float] = (0.1, 5.0), phase: tuple[float, float] = (0.0, math.pi),
                 x_range: tuple[float, float] = (-5.0, 5.0), phases: tuple[float, ...] | None = None):
        if phases is not None and len(phases) == 0:
            raise ValueError("phases must list at least one phase (or be None for the phase range)")
        self.amplitude, self.phase, self.x_range, self.phases = amplitude, phase, x_range, phases

    @classmethod
    def book(cls) -> "SinusoidTasks":
        """The book's variant: phase in {0, pi}, x in [-2 pi, 2 pi], A ~ U[0.1, 5]."""
        return cls(x_range=(-2 * math.pi, 2 * math.pi), phases=(0.0, math.pi))

    @staticmethod
    def curve(amplitude: torch.Tensor, phase: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``A sin(x - phase)`` with ``amplitude, phase [T]`` broadcast over ``x [T, N, 1]``."""
        return amplitude[:, None, None] * torch.sin(x - phase[:, None, None])

    def sample(self, tasks: int, shot: int, query: int, seed: int | None = None,
               generator: torch.Generator | None = None, query_grid: bool = False) -> SinusoidBatch:
        """``tasks`` tasks with ``shot`` support and ``query`` query points each (``query_grid``:
        evenly spaced query inputs over the whole range instead of random ones)."""
        if shot < 1 or tasks < 1:
            raise ValueError(f"need at least one task and one support point, got tasks={tasks}, shot={shot}")
        if generator is None:
            generator = torch.Generator().manual_seed(0 if seed is None else seed)
        lo, hi = self.x_range

        def uniform(shape, a, b):
            return a + (b - a) * torch.rand(shape, generator=generator)

        amp = uniform((tasks,), *self.amplitude)
        if self.phases is None:
            phase = uniform((tasks,), *self.phase)
        else:
            phase = torch.tensor(self.phases)[torch.randint(len(self.phases), (tasks,), generator=generator)]
        sx = uniform((tasks, shot, 1), lo, hi)
        qx = torch.linspace(lo, hi, query).expand(tasks, query)[..., None].clone() if query_grid else uniform((tasks, query, 1), lo, hi)
        return SinusoidBatch(amp, phase, sx, self.curve(amp, phase, sx), qx, self.curve(amp, phase, qx))
