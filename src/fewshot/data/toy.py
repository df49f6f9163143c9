"""Data that ships with a dependency, so everything works offline without downloads."""

from __future__ import annotations

import numpy as np
import torch

from .dataset import LabeledDataset


def load_digits_images() -> LabeledDataset:
    """scikit-learn's 8×8 handwritten digits (1,797 images, 10 classes) as ``uint8 [N, 1, 8, 8]``."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    ds = LabeledDataset.from_arrays(torch.from_numpy(x), d.target, info={"source": "sklearn-digits"})
    ds.info["image"] = {"size": 8, "channels": 1, "invert": False}
    return ds
