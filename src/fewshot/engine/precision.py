"""Mixed precision for training: the backbone's forward pass under ``torch.autocast``.

Only the backbone runs in the low-precision dtype (its convolutions and matrix products, forward
and backward); its output is cast back to float32, so heads, distances (whose ``|q|² − 2q·k + |k|²``
would cancel catastrophically in bfloat16), losses and the optimiser state stay float32, and the
weights and checkpoints are unchanged.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

#: ``TrainConfig.precision`` -> the autocast dtype of the backbone (None: no autocast)
PRECISIONS: dict[str, torch.dtype | None] = {"float32": None, "bfloat16": torch.bfloat16}


def cpu_has_native_bf16() -> bool:
    """Whether this CPU lists AVX512-BF16 or AMX-BF16 (Linux ``/proc/cpuinfo``; False elsewhere).

    Without them bf16 autocast on CPU is emulated and slower than float32 (``ImageEmbedder``'s
    ``precision="auto"`` and the service's sentence encoder use it)."""
    from pathlib import Path

    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_dtype(precision: str) -> torch.dtype | None:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose {' or '.join(PRECISIONS)}")
    return PRECISIONS[precision]


def _to_float32(out):
    if isinstance(out, torch.Tensor):
        return out.float() if out.dtype in (torch.bfloat16, torch.float16) else out
    if isinstance(out, (tuple, list)):
        return type(out)(_to_float32(o) for o in out)
    return out


class BackboneAutocast:
    """A reusable context: within it, ``backbone``'s forward runs under ``torch.autocast(dtype)`` (on
    the device of its first input) and returns float32; the backward pass runs outside it, in the
    dtypes of the forward, as autocast intends. ``float32`` (or no backbone): nothing changes.
    The same wrapped forward serves every entry, so a compiled backbone is not re-traced."""

    def __init__(self, backbone: nn.Module | None, precision: str):
        self.backbone, self.dtype = backbone, autocast_dtype(precision)
        if backbone is None or self.dtype is None:
            return
        forward, dtype = backbone.forward, self.dtype

        @functools.wraps(forward)
        def autocast_forward(x: torch.Tensor, *args, **kwargs):
            with torch.autocast(x.device.type, dtype=dtype):
                out = forward(x, *args, **kwargs)
            return _to_float32(out)

        self.forward = autocast_forward

    def __enter__(self) -> "BackboneAutocast":
        if self.backbone is not None and self.dtype is not None:
            self.own = self.backbone.__dict__.get("forward")  # an instance forward already set, to put back
            self.backbone.forward = self.forward  # an instance attribute: not in the state dict
        return self

    def __exit__(self, *exc) -> None:
        if self.backbone is not None and self.dtype is not None:
            if self.own is None:
                del self.backbone.forward
            else:
                self.backbone.forward = self.own
