"""Small shared helpers: devices, seeding, confidence intervals."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``auto|cpu|cuda[:N]|mps`` into a ``torch.device``; ``auto`` prefers a GPU."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for but CUDA is not available; use --device cpu or auto")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r} was asked for but there are {torch.cuda.device_count()} CUDA device(s); "
                         "use cuda:0 .. cuda:N-1, cpu or auto")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise ValueError(f"device {device!r} was asked for but Apple's MPS is not available; use --device cpu or auto")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {device!r} is not supported; use auto, cpu, cuda, cuda:N or mps")
    return dev


def default_threads() -> int:
    """Intra-op threads per process that do not oversubscribe the machine: the CPUs this process may
    run on, shared among the processes of a ``torchrun`` launch on this node (``LOCAL_WORLD_SIZE``)."""
    import os

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op threads (None: :func:`default_threads`); returns the number set."""
    n = default_threads() if threads is None else threads
    if n < 1:
        raise ValueError(f"threads must be at least 1, got {n}")
    torch.set_num_threads(n)
    return n


def configure_worker_thread(threads: int | None, nice: int = 0) -> None:
    """For the calling thread only: ``threads`` torch intra-op threads (None: unchanged) and a CPU
    priority lowered by ``nice`` (Linux, where a thread id names one thread and the OpenMP pool it
    starts inherits it; elsewhere ignored)."""
    import os
    import sys
    import threading

    if threads:
        torch.set_num_threads(threads)
    if nice and sys.platform == "linux":
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) + nice)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def mean_ci95(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and half-width of the normal-approximation 95% confidence interval.

    ``ci95 = 1.96 * std / sqrt(n)`` with the sample (ddof=1) standard deviation, the
    convention of the few-shot literature. A single value has an interval of 0.
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        raise ValueError("mean_ci95 needs at least one value")
    if arr.size == 1:
        return float(arr[0]), 0.0
    return float(arr.mean()), float(1.96 * arr.std(ddof=1) / math.sqrt(arr.size))


def check_finite(loss: torch.Tensor, where: str) -> None:
    """Raise a clear error when a loss became NaN or infinite."""
    if not torch.isfinite(loss).all():
        raise FloatingPointError(
            f"{where}: the loss is {loss.item() if loss.numel() == 1 else 'not finite'}; "
            "lower the learning rate, enable gradient clipping (--grad-clip), or check the inputs for NaNs"
        )


def subplots(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] | None = None, **kwargs: Any):
    """``(figure, axes)`` like ``plt.subplots`` but without pyplot: no global backend is chosen and
    no figure stays registered, so plotting has no side effects on the caller's matplotlib."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def process_cpu_seconds() -> float:
    """User + system CPU time of this process so far (the budget unit of the benchmarks)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
