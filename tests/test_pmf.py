"""Adapting the last blocks of EfficientNet-Lite: only the tail changes, and the loss goes down."""

from __future__ import annotations

import torch

import pytest

from fewshot.data.augment import Augmenter
from fewshot.methods.pmf import (cosine_logits, feature_map_augment, finetune_on_activations, finetune_on_support, meta_train,
                                 photo_augmenter, tail_parameters)
from fewshot.nn.efficientnet import EfficientNetLite


def _model():
    torch.manual_seed(0)
    return EfficientNetLite("efficientnet_lite0").eval()


def test_trunk_tail_split_equals_features():
    m = _model()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        full = m.features(x)
        for k in (0, 9, 15, 16):
            assert torch.allclose(m.tail(m.trunk(x, k), k), full, atol=1e-5)


def test_finetune_changes_only_the_tail():
    m = _model()
    support = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    norm = lambda x: (x.float() - 127) / 128  # noqa: E731
    tuned = finetune_on_support(m, support, torch.arange(3), norm, start=15, steps=2, lr=1e-2, copies=2, augment="pixels")
    changed = {n for (n, a), (_, b) in zip(m.named_parameters(), tuned.named_parameters()) if not torch.equal(a, b)}
    assert changed and all(n.startswith(("blocks.15.", "head_")) for n in changed)
    assert finetune_on_support(m, support, torch.arange(3), norm, steps=0) is not m
    assert len(tail_parameters(m, 16)) == 3  # head conv + BN weight/bias


def test_meta_train_lowers_the_episode_loss():
    m = _model()
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(6).repeat_interleave(6)
    centres = torch.randn(6, 192, 1, 1, generator=g)
    h = centres[labels] + 4 * torch.randn(len(labels), 192, 2, 2, generator=g)
    losses = []
    tuned = meta_train(m, h, labels, start=15, way=3, shot=1, query=2, episodes=30, lr=1e-3,
                       log=lambda i, loss: losses.append(loss))
    assert sum(losses[-10:]) < 0.5 * sum(losses[:10])
    assert not tuned.training and all(not p.requires_grad for p in tuned.parameters())
    assert cosine_logits(torch.ones(2, 3), torch.ones(4, 3)).shape == (2, 4)


def _tuned_logits(model, x, norm, start=15):
    with torch.no_grad():
        feats = model.tail(model.trunk(norm(x), start), start)
    return cosine_logits(feats[3:], feats[:3])


def test_finetuning_from_cached_trunk_activations_equals_running_the_trunk():
    m = _model()
    g = torch.Generator().manual_seed(1)
    support = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8, generator=g)
    queries = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8, generator=g)
    norm = lambda x: (x.float() - 127) / 128  # noqa: E731
    y, kw = torch.arange(3), dict(start=15, steps=3, lr=1e-2, copies=2)
    with torch.no_grad():
        h = m.trunk(norm(support), 15)
    x = torch.cat([support, queries])
    # no augmentation: the trunk run per task on the pixels == its cached activations
    by_pixels = finetune_on_support(m, support, y, norm, augment="pixels", augmenter=Augmenter([]), **kw)
    by_cache = finetune_on_activations(m, h, y, augment=None, **kw)
    torch.testing.assert_close(_tuned_logits(by_cache, x, norm), _tuned_logits(by_pixels, x, norm), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(_tuned_logits(by_cache, x, norm), _tuned_logits(m, x, norm), atol=1e-3)  # it did train
    # pixel augmentation: the same copies' activations passed as views give the same network
    aug = photo_augmenter()(support.float().div(255).repeat(2, 1, 1, 1), torch.Generator().manual_seed(0))
    with torch.no_grad():
        views = m.trunk(norm((aug * 255).round().to(torch.uint8)), 15)
    torch.testing.assert_close(_tuned_logits(finetune_on_activations(m, h, y, views=views, **kw), x, norm),
                               _tuned_logits(finetune_on_support(m, support, y, norm, augment="pixels", **kw), x, norm),
                               rtol=1e-5, atol=1e-5)
    # feature augmentation (the default): the trunk runs on the support only
    torch.testing.assert_close(_tuned_logits(finetune_on_activations(m, h, y, **kw), x, norm),
                               _tuned_logits(finetune_on_support(m, support, y, norm, **kw), x, norm), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="views must be"):
        finetune_on_activations(m, h, y, views=views[:5], **kw)
    with pytest.raises(ValueError, match="augment must be"):
        finetune_on_support(m, support, y, norm, augment="both")
    with pytest.raises(ValueError, match="augment='pixels'"):
        finetune_on_support(m, support, y, norm, augmenter=photo_augmenter())


def test_feature_map_augment_flips_and_shifts_each_map():
    h = torch.randn(64, 2, 5, 5)
    out = feature_map_augment(h, torch.Generator().manual_seed(0), max_shift=0)
    flipped = torch.tensor([torch.equal(o, a.flip(-1)) for o, a in zip(out, h)])
    assert 10 < flipped.sum() < 54 and all(torch.equal(o, a) for o, a, f in zip(out, h, flipped) if not f)
    out = feature_map_augment(h, torch.Generator().manual_seed(0))
    assert out.shape == h.shape and not torch.equal(out, feature_map_augment(h, torch.Generator().manual_seed(1)))
    torch.testing.assert_close(out, feature_map_augment(h, torch.Generator().manual_seed(0)))  # seeded
    # every output is a one-cell-or-less shifted window of the (possibly mirrored) map, edges replicated
    pad = torch.nn.functional.pad
    for o, a in zip(out, h):
        windows = [pad(b[None], (1, 1, 1, 1), mode="replicate")[0, :, y:y + 5, x:x + 5]
                   for b in (a, a.flip(-1)) for y in range(3) for x in range(3)]
        assert any(torch.equal(o, w) for w in windows)
    with pytest.raises(ValueError, match="activations"):
        feature_map_augment(torch.randn(2, 5, 5), torch.Generator())
