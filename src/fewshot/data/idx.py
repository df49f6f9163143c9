"""MNIST-family IDX files (``*-idx3-ubyte[.gz]`` images, ``*-idx1-ubyte[.gz]`` labels)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from .dataset import LabeledDataset
from .sources import find_file, RemoteFile, missing_data_error

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a NumPy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        return parse_idx(f.read(), path)


def parse_idx(data: bytes, path: str | Path = "<bytes>") -> np.ndarray:
    """The array in the (uncompressed) bytes of an IDX file; ``path`` names it in errors."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number); expected e.g. t10k-images-idx3-ubyte[.gz]")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(_DTYPES[data[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    body = data[4 + 4 * ndim:]
    if len(body) != expected:
        raise ValueError(f"{path} is truncated or corrupt: {len(body)} data bytes for shape {dims} (expected {expected})")
    return np.frombuffer(body, dtype=dtype).reshape(dims)


def load_idx_pair(images: str | Path, labels: str | Path, info: dict | None = None) -> LabeledDataset:
    """An image/label IDX pair as a dataset: ``x uint8 [N, 1, H, W]``, classes named by label."""
    x = read_idx(images)
    y = read_idx(labels)
    if x.ndim != 3 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(f"IDX pair mismatch: images {x.shape}, labels {y.shape}; expected [N, H, W] and [N]")
    ds = LabeledDataset.from_arrays(torch.from_numpy(np.ascontiguousarray(x[:, None]).astype(np.uint8)), y, info=info)
    ds.info.setdefault("image", {"size": int(x.shape[1]), "channels": 1, "invert": False})
    return ds


MNIST_TEST = RemoteFile("t10k-images-idx3-ubyte.gz", "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-images-idx3-ubyte.gz", None, "mnist")


def load_mnist(data_dir: str | None = None, split: str = "t10k") -> LabeledDataset:
    """MNIST (``split`` = ``t10k`` or ``train``) from IDX files found in the data folders."""
    img = RemoteFile(f"{split}-images-idx3-ubyte.gz", MNIST_TEST.url, None, "mnist")
    path = find_file(img, data_dir, extracted=f"{split}-images-idx3-ubyte")
    if path is None:
        raise missing_data_error(img, data_dir, "MNIST")
    lab_name = path.name.replace("images-idx3", "labels-idx1")
    return load_idx_pair(path, path.with_name(lab_name), info={"source": "mnist", "split": split})
