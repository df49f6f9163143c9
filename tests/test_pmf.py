"""Adapting the last blocks of EfficientNet-Lite: only the tail changes, and the loss goes down."""

from __future__ import annotations

import torch

from fewshot.methods.pmf import cosine_logits, finetune_on_support, meta_train, tail_parameters
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
    tuned = finetune_on_support(m, support, torch.arange(3), norm, start=15, steps=2, lr=1e-2, copies=2)
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
