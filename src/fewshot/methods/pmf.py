"""Adapting a pretrained EfficientNet-Lite: its last blocks, on a support set or on base classes.

Both follow P>M>F (Hu et al. 2022, "Pushing the Limits of Simple Pipelines for Few-Shot Learning"):

* :func:`finetune_on_support` ("F"): per task, train ``blocks[start:]`` and the head so that
  augmented copies of each support image land nearest their class prototype (the prototype of
  the un-augmented support), with a cosine ProtoNet loss. :func:`finetune_on_activations` does
  it from cached trunk activations, augmenting the activation maps (:func:`feature_map_augment`).
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


def feature_map_augment(h: torch.Tensor, generator: torch.Generator, max_shift: int = 1) -> torch.Tensor:
    """Augment trunk activations ``[B, C, h, w]`` instead of pixels: each map is mirrored
    left-right (p = 0.5) and shifted by up to ``max_shift`` cells each way (edges replicated).

    The counterpart of pixel flips and translations (one cell of lite0's 7x7 block-15 input is
    32 px at 224 px) that needs no trunk pass per view. It is an approximation: the trunk's
    filters are not mirror-symmetric, so a mirrored map is not the map of the mirrored photo.
    """
    if h.ndim != 4:
        raise ValueError(f"feature_map_augment takes activations [B, C, h, w]; got shape {tuple(h.shape)}")
    b, _, height, width = h.shape
    flip = torch.rand(b, generator=generator) < 0.5
    h = torch.where(flip[:, None, None, None], h.flip(-1), h)
    if max_shift == 0:
        return h
    padded = F.pad(h, (max_shift,) * 4, mode="replicate")
    dy, dx = (torch.randint(0, 2 * max_shift + 1, (2, b), generator=generator)).tolist()
    return torch.stack([padded[i, :, y:y + height, x:x + width] for i, (y, x) in enumerate(zip(dy, dx))])


def finetune_on_activations(
    model: EfficientNetLite,
    support: torch.Tensor,
    support_y: torch.Tensor,
    start: int = 15,
    steps: int = 10,
    lr: float = 1e-4,
    copies: int = 4,
    scale: float = 10.0,
    views: torch.Tensor | None = None,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = feature_map_augment,
    seed: int = 0,
) -> EfficientNetLite:
    """A copy of ``model`` whose ``blocks[start:]`` + head are fine-tuned from cached trunk activations.

    Only the tail runs per step: the frozen trunk's activations ``support = model.trunk(x, start)``
    ``[S, C, h, w]`` are computed once per image (and can be kept across tasks), not per task or step.

    Args:
        support: trunk activations of the support images; ``support_y [S]`` labels ``0..way-1``.
        views: trunk activations of augmented copies (the pseudo-queries) ``[copies * S, C, h, w]``,
            ordered like ``support.repeat(copies, 1, 1, 1)``; ``None``: ``augment`` makes them from
            ``support`` (:func:`feature_map_augment`; ``augment=None``: un-augmented copies).
        copies, steps, lr, scale: as :func:`finetune_on_support`.
    """
    model = copy.deepcopy(model).eval()
    if steps == 0:
        return model
    g = torch.Generator().manual_seed(seed)
    if views is None:
        views = support.repeat(copies, 1, 1, 1)
        if augment is not None:
            views = augment(views, g)
    if views.shape[0] != copies * support.shape[0] or views.shape[1:] != support.shape[1:]:
        raise ValueError(f"views must be [{copies} * {support.shape[0]}, {', '.join(map(str, support.shape[1:]))}] "
                         f"(copies x support activations); got {tuple(views.shape)}")
    support, views = support.clone(), views.clone()  # inference tensors cannot enter autograd
    way = int(support_y.max()) + 1
    y_views = support_y.repeat(copies)
    params = train_only_tail(model, start)
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        feats = model.tail(torch.cat([support, views]), start)
        protos = class_means(feats[: len(support_y)], support_y, way)
        loss = F.cross_entropy(cosine_logits(feats[len(support_y):], protos, scale), y_views)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def finetune_on_support(
    model: EfficientNetLite,
    support: torch.Tensor,
    support_y: torch.Tensor,
    normalize: Callable[[torch.Tensor], torch.Tensor],
    start: int = 15,
    steps: int = 10,
    lr: float = 1e-4,
    copies: int = 4,
    scale: float = 10.0,
    augment: str = "features",
    augmenter: Augmenter | None = None,
    seed: int = 0,
) -> EfficientNetLite:
    """A copy of ``model`` whose ``blocks[start:]`` + head are fine-tuned on one support set.

    Args:
        support: ``uint8 [S, 3, R, R]`` support images; ``support_y [S]`` labels ``0..way-1``.
        normalize: ``uint8`` images -> network input (e.g. ``ImageEmbedder.normalize``).
        copies: augmented copies per support image (the pseudo-queries).
        steps, lr: Adam steps and learning rate (0 steps: the model unchanged).
        augment: ``"features"``: the trunk runs on the support only and the copies are
            :func:`feature_map_augment` views of its activations; ``"pixels"``: ``augmenter``
            (default :func:`photo_augmenter`) transforms the images and the trunk runs on every
            copy (``copies + 1`` times the trunk cost).
    """
    if augment not in ("features", "pixels"):
        raise ValueError(f"augment must be 'features' or 'pixels'; got {augment!r}")
    if augmenter is not None and augment != "pixels":
        raise ValueError("augmenter= transforms pixels: pass augment='pixels' with it")
    if steps == 0:
        return copy.deepcopy(model).eval()
    with torch.inference_mode():
        h_support = model.trunk(normalize(support), start)
        views = None
        if augment == "pixels":
            g = torch.Generator().manual_seed(seed)
            aug = (augmenter or photo_augmenter())(support.float().div(255).repeat(copies, 1, 1, 1), g)
            views = model.trunk(normalize((aug * 255).round().to(torch.uint8)), start)
    return finetune_on_activations(model, h_support, support_y, start, steps, lr, copies, scale, views=views, seed=seed)


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
