"""A restricted unpickler for data archives that are only distributed as pickles.

CIFAR-100's Python archive and tieredImageNet's label files are pickles. ``pickle.load`` on them
would run whatever code the file names; :func:`load_data_pickle` only rebuilds plain containers
(dict, list, tuple, str, bytes, numbers) and NumPy arrays, and refuses every other global with a
``ValueError`` before anything is called.
"""

from __future__ import annotations

import codecs
import io
import pickle
from typing import Any

import numpy as np

_CORE = getattr(np, "_core", None) or np.core  # NumPy 2 renamed numpy.core to numpy._core

#: The only globals a data pickle may name: how NumPy pickles arrays, dtypes and scalars.
_ALLOWED = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    **{(f"numpy.{core}.multiarray", "_reconstruct"): _CORE.multiarray._reconstruct for core in ("core", "_core")},
    **{(f"numpy.{core}.multiarray", "scalar"): _CORE.multiarray.scalar for core in ("core", "_core")},
    **{(f"numpy.{core}.numeric", "_frombuffer"): _CORE.numeric._frombuffer for core in ("core", "_core")},
}


def _latin1_encode(obj: str, encoding: str = "latin1") -> bytes:
    # Protocol-2 pickles written by Python 3 store bytes as _codecs.encode(str, "latin1");
    # only that codec is allowed (others, e.g. zlib or rot13, are not data).
    if encoding not in ("latin1", "latin-1") or not isinstance(obj, str):
        raise ValueError(f"refusing _codecs.encode with encoding {encoding!r} in a data pickle")
    return codecs.encode(obj, "latin1")


class _DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        raise ValueError(
            f"refusing to unpickle {module}.{name}: a data archive may only hold arrays, lists, dicts, "
            "strings and numbers; this file is not the expected dataset (or has been tampered with)"
        )


def load_data_pickle(data: bytes, encoding: str = "bytes") -> Any:
    """Unpickle ``data`` allowing only containers, scalars and NumPy arrays.

    ``encoding="bytes"`` reads Python 2 pickles (CIFAR) with their str keys as ``bytes``.
    """
    try:
        return _DataUnpickler(io.BytesIO(data), encoding=encoding).load()
    except ValueError:
        raise
    except Exception as exc:  # truncated or not a pickle at all
        raise ValueError(f"not a readable data pickle ({type(exc).__name__}: {exc}); the file is corrupt or truncated") from exc
