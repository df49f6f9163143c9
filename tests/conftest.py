"""Shared fixtures: tiny generated datasets and the optional real data beside the checkout."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from fewshot.data import LabeledDataset

torch.set_num_threads(1)  # tiny models: one thread is fastest, and CI has 2 cores

def load_benchmark(name: str) -> ModuleType:
    """The script ``benchmarks/<name>.py`` imported as a module (its helpers are tested, nothing is run)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"{name}_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: ../shared/data beside the checkout (this machine and CI have it), or $FEWSHOT_DATA.
SHARED_DATA = Path(os.environ.get("FEWSHOT_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


@pytest.fixture
def shared_data() -> Path:
    """The real data folder; tests using it skip (with the reason) where it is absent."""
    if not (SHARED_DATA / "omniglot").is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (set FEWSHOT_DATA or place ../shared/data)")
    return SHARED_DATA


@pytest.fixture
def isolated_data_sources(monkeypatch, tmp_path):
    """Only the folder a test passes is searched: no $FEWSHOT_DATA (the Makefile and CI set it), an empty cache."""
    monkeypatch.delenv("FEWSHOT_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


def make_blobs_dataset(num_classes: int = 12, per_class: int = 10, size: int = 8, groups: int = 3,
                       seed: int = 0, noise: float = 0.15, informative_rows: int | None = None) -> LabeledDataset:
    """Images ``uint8 [N, 1, size, size]`` whose class is a random template plus noise: learnable
    few-shot classes in milliseconds. Classes are spread round-robin over ``groups`` groups.

    ``informative_rows=r``: only the first ``r`` rows carry the class; the others are fresh uniform
    noise in every image. Random templates share nothing a network could learn on some classes and
    reuse on others; ignoring the noise rows is such a thing, so training helps held-out classes."""
    g = torch.Generator().manual_seed(seed)
    templates = torch.rand(num_classes, 1, size, size, generator=g)
    x = templates.repeat_interleave(per_class, 0) + noise * torch.randn(num_classes * per_class, 1, size, size, generator=g)
    if informative_rows is not None:
        x[:, :, informative_rows:] = torch.rand(x[:, :, informative_rows:].shape, generator=g)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    y = torch.arange(num_classes).repeat_interleave(per_class)
    return LabeledDataset(
        x, y, [f"g{c % groups}/c{c}" for c in range(num_classes)],
        torch.arange(num_classes) % groups, [f"g{i}" for i in range(groups)],
        info={"source": "blobs", "image": {"size": size, "channels": 1, "invert": False}},
    )


@pytest.fixture
def blobs() -> LabeledDataset:
    return make_blobs_dataset()


def write_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
