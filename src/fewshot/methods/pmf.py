"""Adapting a pretrained EfficientNet-Lite: its last blocks, on a support set or on base classes.

Both follow P>M>F (Hu et al. 2022, "Pushing the Limits of Simple Pipelines for Few-Shot Learning"):

* :func:`finetune_on_support` ("F"): per task, train ``blocks[start:]`` and the head so that
  augmented copies of each support image land nearest their class prototype (the prototype of
  the un-augmented support), with a cosine ProtoNet loss.
* :func:`meta_train` ("M"): episodic ProtoNet training (Snell et al. 2017) of the same blocks on a
  user's base classes.

The frozen trunk (``blocks[:start]``) runs once per image in inference mode; only the tail gets
gradients, so both are cheap enough for a CPU. BatchNorm stays in eval mode (5 support images
give no usable batch statistics).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F

from ..data.augment import Augmenter, brightness, contrast, hflip, random_affine
from ..nn.distances import class_means
from ..nn.efficientnet import EfficientNetLite


def photo_augmenter() -> Augmenter:
    """Support augmentation for photos: small rotation/scale/shift (border fill), flip, colour."""
    return Augmenter([partial(random_affine, rotation=10.0, shear=0.0, scale=(0.85, 1.15), translate=0.1,
                              padding_mode="border"), hflip, partial(brightness, delta=0.1), partial(contrast, factor=0.2)])


def cosine_logits(query: torch.Tensor, protos: torch.Tensor, scale: float = 10.0) -> torch.Tensor:
    """``scale *`` cosine similarity of ``query [Q, D]`` to ``protos [way, D]`` -> ``[Q, way]``."""
    return scale * F.normalize(query, dim=-1) @ F.normalize(protos, dim=-1).T


def tail_parameters(model: EfficientNetLite, start: int) -> list[torch.nn.Parameter]:
    """Parameters of ``blocks[start:]`` and the head conv/BN (what adaptation trains)."""
    if not 0 <= start <= len(model.blocks):
        raise ValueError(f"start must be in 0..{len(model.blocks)} (blocks to keep frozen); got {start}")
    mods = list(model.blocks[start:]) + [model.head_conv, model.head_bn]
    return [p for m in mods for p in m.parameters()]


def train_only_tail(model: EfficientNetLite, start: int) -> list[torch.nn.Parameter]:
    """Freeze ``model`` except :func:`tail_parameters` (in place); returns those trainable parameters."""
    params = tail_parameters(model, start)
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    return params


def finetune_on_support(
    model: EfficientNetLite,
    support: torch.Tensor,
    support_y: torch.Tensor,
    normalize: Callable[[torch.Tensor], torch.Tensor],
    start: int = 15,
    steps: int = 10,
    lr: float = 1e-4,
    copies: int = 8,
    scale: float = 10.0,
    augmenter: Augmenter | None = None,
    seed: int = 0,
) -> EfficientNetLite:
    """A copy of ``model`` whose ``blocks[start:]`` + head are fine-tuned on one support set.

    Args:
        support: ``uint8 [S, 3, R, R]`` support images; ``support_y [S]`` labels ``0..way-1``.
        normalize: ``uint8`` images -> network input (e.g. ``ImageEmbedder.normalize``).
        copies: augmented copies per support image (the pseudo-queries).
        steps, lr: Adam steps and learning rate (0 steps: the model unchanged).
    """
    model = copy.deepcopy(model).eval()
    if steps == 0:
        return model
    g = torch.Generator().manual_seed(seed)
    augmenter = augmenter or photo_augmenter()
    way = int(support_y.max()) + 1
    with torch.inference_mode():
        x = support.float() / 255
        aug = augmenter(x.repeat(copies, 1, 1, 1), g)
        h_support = model.trunk(normalize((x * 255).round().to(torch.uint8)), start)
        h_aug = model.trunk(normalize((aug * 255).round().to(torch.uint8)), start)
    h_support, h_aug = h_support.clone(), h_aug.clone()  # inference tensors cannot enter autograd
    y_aug = support_y.repeat(copies)
    params = train_only_tail(model, start)
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        feats = model.tail(torch.cat([h_support, h_aug]), start)
        protos = class_means(feats[: len(support_y)], support_y, way)
        loss = F.cross_entropy(cosine_logits(feats[len(support_y):], protos, scale), y_aug)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def meta_train(
    model: EfficientNetLite,
    activations: torch.Tensor,
    labels: torch.Tensor,
    start: int = 12,
    way: int = 5,
    shot: int = 1,
    query: int = 5,
    episodes: int = 300,
    lr: float = 1e-4,
    scale: float = 10.0,
    seed: int = 0,
    log: Callable[[int, float], None] | None = None,
) -> EfficientNetLite:
    """Episodic ProtoNet training of ``blocks[start:]`` + head on base classes.

    Args:
        activations: trunk activations ``model.trunk(x, start)`` of every base image ``[N, C, h, w]``
            (computed once; the trunk stays frozen).
        labels: base-class ids ``[N]``.
    Returns a trained copy of ``model`` (eval mode).
    """
    from ..data import LabeledDataset
    from ..tasks.episodes import EpisodeSampler

    model = copy.deepcopy(model).eval()
    params = train_only_tail(model, start)
    opt = torch.optim.Adam(params, lr=lr)
    names = [str(c) for c in range(int(labels.max()) + 1)]
    sampler = EpisodeSampler(LabeledDataset(torch.arange(len(labels))[:, None], labels, names), way, shot, query, seed=seed)
    for i in range(episodes):
        t = sampler.task(i)
        s_idx, q_idx = torch.tensor(t.support).reshape(-1), torch.tensor(t.query).reshape(-1)
        feats = model.tail(activations[torch.cat([s_idx, q_idx])], start)
        protos = class_means(feats[: len(s_idx)], torch.arange(way).repeat_interleave(shot), way)
        loss = F.cross_entropy(cosine_logits(feats[len(s_idx):], protos, scale), torch.arange(way).repeat_interleave(query))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if log is not None:
            log(i, loss.item())
    for p in model.parameters():
        p.requires_grad_(False)
    return model
