"""Data augmentation as batched tensor ops (no torchvision), deterministic given a seed.

Every transform maps float images ``[B, C, H, W]`` to the same shape and dtype and draws its
randomness from an explicit ``torch.Generator`` (one random draw per image, so a batch is
augmented with independent parameters). Characters: :func:`random_affine` (rotation, shear,
scale, translation) and :func:`elastic` (Simard et al. 2003); photos: :func:`hflip`,
:func:`brightness`, :func:`contrast`, :func:`random_crop`.

:class:`Augmenter` chains transforms; :meth:`Augmenter.expand` enlarges a support set
(K shots -> K·m shots, the originals first). :func:`fewshot.tasks.episodes.augment_episode` augments
an episode for episodic training; :class:`fewshot.methods.augmented.AugmentedSupport` wraps any
method so its ``fit`` sees the enlarged support set.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial

import torch
import torch.nn.functional as F


Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _check_images(x: torch.Tensor) -> None:
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"augmentations take float images [B, C, H, W]; got dtype {x.dtype} shape {tuple(x.shape)} "
                         "(convert uint8 data with dataset.items(idx), which scales to [0, 1])")


def _uniform(b: int, low: float, high: float, g: torch.Generator) -> torch.Tensor:
    # Drawn on the CPU so a seed gives the same numbers on every device.
    return torch.rand(b, generator=g) * (high - low) + low


def random_affine(x: torch.Tensor, generator: torch.Generator, rotation: float = 15.0, shear: float = 10.0,
                  scale: tuple[float, float] = (0.9, 1.1), translate: float = 0.1,
                  padding_mode: str = "zeros") -> torch.Tensor:
    """Random rotation (± ``rotation`` degrees), shear (± ``shear`` degrees), isotropic ``scale``
    and translation (± ``translate`` of the image size). ``[B, C, H, W] -> [B, C, H, W]``.
    ``padding_mode="zeros"`` fills with 0 (the background of ink-on-zero characters)."""
    _check_images(x)
    b = x.shape[0]
    rot = torch.deg2rad(_uniform(b, -rotation, rotation, generator))
    sh = torch.deg2rad(_uniform(b, -shear, shear, generator))
    s = _uniform(b, scale[0], scale[1], generator)
    t = _uniform(2 * b, -translate, translate, generator).view(b, 2) * 2.0  # grid coordinates span [-1, 1]
    return _warp(x, rot, sh, s, t, padding_mode)


def _warp(x: torch.Tensor, rot: torch.Tensor, sh: torch.Tensor, s: torch.Tensor, t: torch.Tensor,
          padding_mode: str) -> torch.Tensor:
    """Resample ``x`` by per-image rotation / shear (radians ``[B]``), scale ``[B]`` and translation
    ``[B, 2]`` (grid units)."""
    cos, sin, tan = torch.cos(rot), torch.sin(rot), torch.tan(sh)
    # Output -> input sampling matrix: inverse scale of rotation ∘ shear.
    a = torch.stack([torch.stack([cos, -sin + cos * tan], 1), torch.stack([sin, cos + sin * tan], 1)], 1) / s[:, None, None]
    theta = torch.cat([a, t[:, :, None]], 2).to(x.device, x.dtype)  # [B, 2, 3]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


def affine(x: torch.Tensor, rotation: float = 0.0, scale: float = 1.0, translate: tuple[float, float] = (0.0, 0.0),
           padding_mode: str = "zeros") -> torch.Tensor:
    """The same affine map for every image: rotation (degrees), isotropic ``scale`` and translation
    (fractions of the image size, x then y), as in :func:`random_affine`. ``[B, C, H, W] -> [B, C, H, W]``."""
    _check_images(x)
    b = x.shape[0]
    rot = torch.full((b,), math.radians(rotation))
    t = torch.tensor(translate, dtype=torch.float32).expand(b, 2) * 2.0
    return _warp(x, rot, torch.zeros(b), torch.full((b,), float(scale)), t, padding_mode)


View = Callable[[torch.Tensor], torch.Tensor]


def _shift(x: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    return affine(x, translate=(dx / x.shape[-1], dy / x.shape[-2]))


def tta_views(name: str) -> list[View]:
    """Fixed views of an image for test-time augmentation (:class:`fewshot.methods.augmented.TestTimeAugmentation`).

    ``characters``: the image shifted by -1, 0 and +1 pixels along x and y (nine views; the best of
    seven view sets on validation alphabets in Lake's minimal setting, ``benchmarks/results/lake_tta_views.md``).
    """
    presets = {"characters": [partial(_shift, dx=dx, dy=dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1)]}
    if name not in presets:
        raise ValueError(f"unknown test-time view preset {name!r}; choose from {', '.join(presets)}")
    return presets[name]


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    k = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / sigma) ** 2)
    return k / k.sum()


def elastic(x: torch.Tensor, generator: torch.Generator, alpha: float = 8.0, sigma: float = 3.0,
            padding_mode: str = "zeros") -> torch.Tensor:
    """Elastic distortion (Simard et al. 2003): a random displacement field smoothed by a Gaussian
    of ``sigma`` pixels, scaled to ``alpha`` pixels. ``[B, C, H, W] -> [B, C, H, W]``."""
    _check_images(x)
    b, _, h, w = x.shape
    field = torch.rand(b, 2, h, w, generator=generator) * 2 - 1
    k = _gaussian_kernel(sigma)
    pad = k.numel() // 2
    field = F.conv2d(F.pad(field.reshape(2 * b, 1, h, w), (pad, pad, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    field = F.conv2d(F.pad(field, (0, 0, pad, pad), mode="replicate"), k.view(1, 1, -1, 1)).view(b, 2, h, w)
    # Normalise the smoothed field to unit RMS so alpha is the typical displacement in pixels.
    field = field / field.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt().clamp_min(1e-8)
    disp = torch.stack([field[:, 0] * alpha * 2 / w, field[:, 1] * alpha * 2 / h], -1)  # [B, H, W, 2] (x, y)
    theta = torch.eye(2, 3).expand(b, 2, 3)
    grid = F.affine_grid(theta, [b, 1, h, w], align_corners=False) + disp
    return F.grid_sample(x, grid.to(x.device, x.dtype), mode="bilinear", padding_mode=padding_mode, align_corners=False)


def hflip(x: torch.Tensor, generator: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Mirror each image left-right with probability ``p``."""
    _check_images(x)
    flip = (torch.rand(x.shape[0], generator=generator) < p).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def brightness(x: torch.Tensor, generator: torch.Generator, delta: float = 0.2) -> torch.Tensor:
    """Add a random offset in ``[-delta, delta]`` per image, clamped to [0, 1]."""
    _check_images(x)
    d = _uniform(x.shape[0], -delta, delta, generator).to(x.device, x.dtype)
    return (x + d[:, None, None, None]).clamp(0, 1)


def contrast(x: torch.Tensor, generator: torch.Generator, factor: float = 0.2) -> torch.Tensor:
    """Scale each image's deviation from its mean by a random factor in ``[1-factor, 1+factor]``."""
    _check_images(x)
    f = _uniform(x.shape[0], 1 - factor, 1 + factor, generator).to(x.device, x.dtype)[:, None, None, None]
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * f + mean).clamp(0, 1)


def random_crop(x: torch.Tensor, generator: torch.Generator, padding: int = 4, padding_mode: str = "constant") -> torch.Tensor:
    """Pad by ``padding`` pixels and crop back to the original size at a random offset per image."""
    _check_images(x)
    b, c, h, w = x.shape
    xp = F.pad(x, (padding,) * 4, mode=padding_mode)
    oy = torch.randint(0, 2 * padding + 1, (b,), generator=generator).to(x.device)
    ox = torch.randint(0, 2 * padding + 1, (b,), generator=generator).to(x.device)
    rows = (oy[:, None] + torch.arange(h, device=x.device))  # [B, H]
    cols = (ox[:, None] + torch.arange(w, device=x.device))  # [B, W]
    idx_r = rows[:, None, :, None].expand(b, c, h, xp.shape[-1])
    out = xp.gather(2, idx_r)
    return out.gather(3, cols[:, None, None, :].expand(b, c, h, w))


class Augmenter:
    """A chain of transforms applied in order, each with probability 1.

    ``Augmenter.characters()`` (affine + elastic) and ``Augmenter.photos()`` (crop, flip,
    brightness, contrast) are the presets; any callables ``(x, generator) -> x`` can be chained.
    """

    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = list(transforms)

    @classmethod
    def characters(cls, rotation: float = 15.0, shear: float = 10.0, scale: tuple[float, float] = (0.9, 1.1),
                   translate: float = 0.1, alpha: float = 1.5, sigma: float = 3.0) -> "Augmenter":
        return cls([partial(random_affine, rotation=rotation, shear=shear, scale=scale, translate=translate),
                    partial(elastic, alpha=alpha, sigma=sigma)])

    @classmethod
    def photos(cls, padding: int = 4, delta: float = 0.2, factor: float = 0.2) -> "Augmenter":
        return cls([partial(random_crop, padding=padding), hflip, partial(brightness, delta=delta),
                    partial(contrast, factor=factor)])

    @classmethod
    def preset(cls, name: str) -> "Augmenter":
        presets = {"characters": cls.characters, "photos": cls.photos}
        if name not in presets:
            raise ValueError(f"unknown augmentation preset {name!r}; choose from {', '.join(presets)}")
        return presets[name]()

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for t in self.transforms:
            x = t(x, generator)
        return x

    def expand(self, support_x: torch.Tensor, support_y: torch.Tensor, copies: int,
               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """K shots -> K·``copies`` shots: the originals followed by ``copies - 1`` augmented versions.
        Returns ``x [N*copies, C, H, W]`` and ``y [N*copies]``."""
        if copies < 1:
            raise ValueError(f"copies must be at least 1 (1 = the original support set only), got {copies}")
        if copies == 1:
            return support_x, support_y
        rep = support_x.repeat(copies - 1, 1, 1, 1)
        x = torch.cat([support_x, self(rep, generator).to(memory_format=torch.contiguous_format)])
        return x, support_y.repeat(copies)
