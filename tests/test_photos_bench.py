"""benchmarks/photos.py's shared helpers (no benchmark is run): trunk activations, their cache."""

from __future__ import annotations

import pytest
import torch

from fewshot.nn.efficientnet import EfficientNetLite

from conftest import load_benchmark


@pytest.fixture(scope="module")
def photos():
    return load_benchmark("photos")


def test_trunk_activations_equal_the_unfolded_trunk_and_features(photos):
    torch.manual_seed(0)
    model = EfficientNetLite("efficientnet_lite0").eval()
    with torch.no_grad():  # BatchNorm statistics that are not the identity, so folding matters
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    x = torch.randint(0, 256, (5, 3, 64, 64), dtype=torch.uint8)
    norm = lambda x: (x.float() - 127.5) / 127.5  # noqa: E731
    t = photos.trunk_activations(model, norm, (x[i:i + 2] for i in range(0, 5, 2)), [12, 15])
    assert set(t) == {"trunk12", "trunk15", "features"}
    with torch.no_grad():
        for s in (12, 15):
            assert torch.allclose(t[f"trunk{s}"], model.trunk(norm(x), s), atol=1e-4)
        assert torch.allclose(t["features"], model.features(norm(x)), atol=1e-4)
    bf16 = photos.trunk_activations(model, norm, [x], [15], precision="bfloat16")
    assert bf16["trunk15"].dtype == torch.float32 and bf16["trunk15"].shape == t["trunk15"].shape
    with pytest.raises(ValueError, match="ascending"):
        photos.trunk_activations(model, norm, [x], [15, 12])


def test_cached_safetensors_computes_once(photos, tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"a": torch.arange(6.0).reshape(2, 3).T}  # not contiguous: saved anyway

    path = tmp_path / "sub" / "t.safetensors"
    first, secs = photos.cached_safetensors(path, compute)
    again, none = photos.cached_safetensors(path, compute)
    assert len(calls) == 1 and secs is not None and secs >= 0 and none is None
    assert torch.equal(first["a"], again["a"]) and torch.equal(again["a"], torch.arange(6.0).reshape(2, 3).T)


def test_spread_classes_is_deterministic_and_covers_the_range(photos):
    assert photos.spread_classes(741, 0) == list(range(741))
    picked = photos.spread_classes(741, 20)
    assert len(set(picked)) == 20 and picked[0] == 0 and picked[-1] == 740 and picked == sorted(picked)
    with pytest.raises(SystemExit, match="base-classes"):
        photos.spread_classes(10, 11)
