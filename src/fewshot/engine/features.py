"""Image embeddings from a pretrained backbone, with a decode-once feature cache.

``ImageEmbedder("efficientnet_lite0").embed_files(paths)`` -> ``[N, 1280]`` features, batched,
channels-last, in inference mode, with BatchNorm folded into the convolutions (same features to
float rounding; 0-50% faster in noisy CPU measurements) and, on CPUs with native bfloat16
instructions, under bf16 autocast (2-3x the images per CPU-second; features within about 1e-2, the
same accuracy on MPEG-7: benchmarks/results/photos.md). Features of files are cached as safetensors under
``<cache_dir>/features/<model key>/`` keyed by the SHA-256 of the file's bytes, so a second run
over the same photos neither decodes nor runs the network.

``image_embedder("efficientnet_lite0+efficientnet_lite1")`` concatenates several networks'
features (:class:`ConcatEmbedder`; each member cached under its own key).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file

from ..data.photos import MAX_PIXELS, load_photo, to_network_input, to_rgb
from ..data.sources import cache_dir as default_cache_dir
from ..nn.efficientnet import CONFIGS, EfficientNetLite, fold_batchnorm, pretrained_efficientnet_lite
from .precision import autocast_dtype, cpu_has_native_bf16

if TYPE_CHECKING:
    from ..data.dataset import LabeledDataset

#: Input normalisations, per channel (mean, std) on the 0..255 scale. The EfficientNet-Lite
#: weights were trained in TensorFlow with (127, 128), i.e. pixels mapped to [-1, 1].
NORMALIZATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "tf": ((127.0, 127.0, 127.0), (128.0, 128.0, 128.0)),
    "imagenet": ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375)),
}

#: Bump when preprocessing changes, so stale cached features are never reused.
_CACHE_VERSION = 1


class ImageEmbedder:
    """Embed images with a pretrained backbone: ``[N]`` images -> features ``[N, dim]``.

    Args:
        backbone: a pretrained network name (``efficientnet_lite0``, ``_lite1``, ``_lite2``).
        model: use this network (e.g. a fine-tuned copy) instead of the shipped weights; it must
            have a ``features(x) -> [B, dim]`` method. Its features are cached only under ``tag``.
        tag: names a custom ``model`` in the cache key (``None``: no caching for custom models).
        normalization: ``"tf"`` (what the weights were trained with) or ``"imagenet"``.
        crop: fraction of the shorter side kept by the centre crop (see ``to_network_input``).
        batch_size: images per forward pass (8 and 16 mostly measured faster per CPU-second than 32 or 64).
        precision: ``"auto"`` (bfloat16 autocast on CPUs with native bf16 instructions, else
            float32), ``"float32"`` or ``"bfloat16"``. bf16 features differ by about 1e-2 and gave
            the same accuracy (benchmarks/results/photos.md); they are cached apart from float32 ones.
        cache: cache features of files on disk (``cache_dir``, default ``~/.cache/fewshot``).
        progress: show a progress bar (``None``: when stderr is a terminal).
        max_pixels: decompression-bomb limit passed to :func:`load_photo`.
    """

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        *,
        model: torch.nn.Module | None = None,
        tag: str | None = None,
        normalization: str = "tf",
        crop: float = 1.0,
        batch_size: int = 16,
        precision: str = "auto",
        cache: bool = True,
        cache_dir: str | Path | None = None,
        progress: bool | None = None,
        max_pixels: int = MAX_PIXELS,
    ) -> None:
        if backbone not in CONFIGS:
            raise ValueError(f"unknown pretrained backbone {backbone!r}; choose one of {sorted(CONFIGS)}")
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"unknown normalization {normalization!r}; choose one of {sorted(NORMALIZATIONS)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        if precision != "auto":
            autocast_dtype(precision)  # ValueError naming the choices
        self.backbone = backbone
        self.model = (model if model is not None else pretrained_efficientnet_lite(backbone)).eval()
        self.model = self.model.to(memory_format=torch.channels_last)
        # The shipped weights never change here, so extraction runs a BatchNorm-folded copy; a custom
        # model (e.g. one being fine-tuned) is run as it is, so later changes to it are seen.
        self._net = fold_batchnorm(self.model) if model is None else self.model
        if precision == "auto":
            precision = "bfloat16" if cpu_has_native_bf16() else "float32"
        self.precision = precision
        self.resolution = CONFIGS[backbone].resolution
        self.normalization = normalization
        self.crop = crop
        self.batch_size = batch_size
        self.progress = progress
        self.max_pixels = max_pixels
        self.dim = int(getattr(self.model, "feature_dim", EfficientNetLite.feature_dim))
        mean, std = NORMALIZATIONS[normalization]
        self._mean = torch.tensor(mean).view(1, 3, 1, 1)
        self._std = torch.tensor(std).view(1, 3, 1, 1)
        suffix = "" if model is None else f"+{tag}" if tag else "+custom"
        self.name = f"{backbone}{suffix}"
        key = {"v": _CACHE_VERSION, "name": self.name, "res": self.resolution, "norm": normalization, "crop": crop}
        digest = lambda k: f"{self.name}-{hashlib.sha1(json.dumps(k, sort_keys=True).encode()).hexdigest()[:12]}"  # noqa: E731
        self.base_key = digest(key)  # float32, before BatchNorm folding: trunk activations' cache (trunk_files)
        if precision != "float32":  # float32 keys stay as before BatchNorm folding (same features to rounding)
            key["precision"] = precision
        self.cache_key = digest(key)
        use_cache = cache and (model is None or tag is not None)
        self._cache = Path(cache_dir or default_cache_dir()) / "features" / self.cache_key if use_cache else None

    # ------------------------------------------------------------------ tensors
    def preprocess(self, images: Sequence) -> torch.Tensor:
        """PIL images -> ``uint8 [N, 3, R, R]`` at the network's resolution."""
        return torch.stack([to_network_input(im, self.resolution, self.crop) for im in images]) if images else \
            torch.empty(0, 3, self.resolution, self.resolution, dtype=torch.uint8)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``uint8 [N, 3, R, R]`` -> normalised float, channels-last."""
        x = (x.float() - self._mean) / self._std
        return x.contiguous(memory_format=torch.channels_last)

    def embed_tensor(self, x: torch.Tensor) -> torch.Tensor:
        """``uint8 [N, 3, R, R]`` -> features ``[N, dim]`` (batched, inference mode)."""
        out = []
        device = next(self._net.parameters()).device
        with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=self.precision == "bfloat16"):
            for i in range(0, x.shape[0], self.batch_size):
                out.append(self._net.features(self.normalize(x[i:i + self.batch_size]).to(device)).float())
        return torch.cat(out) if out else torch.empty(0, self.dim)

    def embed_images(self, images: Sequence) -> torch.Tensor:
        """PIL images (any mode; made RGB) -> features ``[N, dim]``."""
        rgb = [to_rgb(im) for im in images]
        return torch.cat([self.embed_tensor(self.preprocess(rgb[i:i + self.batch_size]))
                          for i in range(0, len(rgb), self.batch_size)]) if rgb else torch.empty(0, self.dim)

    # ------------------------------------------------------------------ files, cached
    def embed_files(self, paths: Sequence[str | Path]) -> torch.Tensor:
        """Image files -> features ``[N, dim]``; cached by file content, decoded at most once."""
        return self._cached(paths, self._cache, (self.dim,), self.embed_tensor)

    def trunk_files(self, paths: Sequence[str | Path], upto: int) -> torch.Tensor:
        """Image files -> the frozen trunk's activations ``model.trunk(x, upto)`` ``[N, C, h, w]``.

        What fine-tuning the last blocks starts from (:func:`fewshot.methods.pmf.finetune_on_activations`):
        float32, the un-folded ``model``, so they equal the trunk run inside fine-tuning. Cached by
        file content like the features (under their own key), so a photo in several support sets
        runs the trunk once.
        """
        if not 0 <= upto <= len(self.model.blocks):
            raise ValueError(f"upto must be in 0..{len(self.model.blocks)}; got {upto}")
        cache = None if self._cache is None else self._cache.with_name(f"{self.base_key}-trunk{upto}")

        def run(x: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return torch.cat([self.model.trunk(self.normalize(x[i:i + self.batch_size]), upto)
                                  for i in range(0, x.shape[0], self.batch_size)])

        return self._cached(paths, cache, None, run)  # the key names the block: no shape to check

    def _cached(self, paths: Sequence[str | Path], cache: Path | None, shape: tuple[int, ...] | None,
                compute) -> torch.Tensor:
        """``compute(uint8 images) -> [B, *shape]`` of each file, cached under ``cache`` by file content
        (a cached entry of another ``shape`` is recomputed; ``None``: not checked)."""
        out: list[torch.Tensor | None] = [None] * len(paths)
        todo: list[tuple[int, str, Path]] = []
        for i, p in enumerate(paths):
            digest = hashlib.sha256(Path(p).read_bytes()).hexdigest()
            cached = self._load(cache, digest, shape)
            if cached is not None:
                out[i] = cached
            else:
                todo.append((i, digest, Path(p)))
        bar = self._bar(len(todo))
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            images = [load_photo(path, self.max_pixels) for _, _, path in chunk]
            result = compute(self.preprocess(images))
            for (i, digest, _), f in zip(chunk, result):
                out[i] = f.contiguous().clone()
                self._store(cache, digest, out[i])
            if bar is not None:
                bar.update(len(chunk))
        if bar is not None:
            bar.close()
        return torch.stack(out) if out else torch.empty(0, *(shape or ()))  # type: ignore[arg-type]

    def _bar(self, total: int):
        show = self.progress if self.progress is not None else (sys.stderr.isatty() and total > self.batch_size)
        if not show or total == 0:
            return None
        from tqdm import tqdm

        return tqdm(total=total, desc=f"embedding ({self.name})", unit="img")

    @staticmethod
    def _path(cache: Path, digest: str) -> Path:
        return cache / digest[:2] / f"{digest}.safetensors"

    def _load(self, cache: Path | None, digest: str, shape: tuple[int, ...] | None) -> torch.Tensor | None:
        if cache is None:
            return None
        path = self._path(cache, digest)
        if not path.exists():
            return None
        try:
            f = load_file(str(path))["features"]
        except Exception:  # a truncated cache entry is recomputed, never trusted
            path.unlink(missing_ok=True)
            return None
        return f if shape is None or f.shape == shape else None

    def _store(self, cache: Path | None, digest: str, f: torch.Tensor) -> None:
        if cache is None:
            return
        path = self._path(cache, digest)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            save_file({"features": f.contiguous()}, str(tmp))
            tmp.replace(path)
        except OSError:
            pass  # a read-only cache only costs speed


#: Joins member backbones in an ensemble name: ``efficientnet_lite0+efficientnet_lite1``.
ENSEMBLE_SEPARATOR = "+"


class ConcatEmbedder:
    """Several pretrained backbones as one: per image, each member's features are power-transformed
    (``x ** 0.5``) and L2-normalised, then concatenated -> ``[N, sum of dims]``.

    The per-member transform measured best of the combinations tried (raw concatenation, per-member
    L2, per-member power transform + L2) on the 35 MPEG-7 tuning classes, for both the centroid and
    the soft k-means head (docs/photos.md); it also weighs every member equally. Members keep their
    own feature caches, so an ensemble reuses features already extracted by any member.

    Args:
        backbones: member names (at least two, no repeats), e.g. ``["efficientnet_lite0", "efficientnet_lite1"]``.
        **kwargs: passed to every member's :class:`ImageEmbedder` (``precision``, ``cache_dir``, ...).
    """

    def __init__(self, backbones: Sequence[str], **kwargs) -> None:
        if len(backbones) < 2 or len(set(backbones)) != len(backbones):
            raise ValueError(f"an ensemble needs two or more different backbones; got {list(backbones)}")
        if "model" in kwargs:
            raise ValueError("model= applies to a single backbone, not an ensemble")
        self.members = [ImageEmbedder(b, **kwargs) for b in backbones]
        self.name = ENSEMBLE_SEPARATOR.join(m.name for m in self.members)
        self.dim = sum(m.dim for m in self.members)
        self.batch_size = self.members[0].batch_size
        self.precision = self.members[0].precision

    def combine(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Each member's features ``[N, dim_i]`` (non-negative) -> the ensemble's ``[N, sum dim_i]``."""
        from ..methods.frozen import power_transform

        return torch.cat([power_transform(f) for f in features], dim=1)

    def embed_images(self, images: Sequence) -> torch.Tensor:
        """PIL images (any mode) -> features ``[N, dim]``."""
        return self.combine([m.embed_images(images) for m in self.members])

    def embed_files(self, paths: Sequence[str | Path]) -> torch.Tensor:
        """Image files -> features ``[N, dim]``; each member's features cached by file content."""
        return self.combine([m.embed_files(paths) for m in self.members])


def image_embedder(backbone: str, **kwargs) -> "ImageEmbedder | ConcatEmbedder":
    """The embedder named ``backbone``: one pretrained network (``efficientnet_lite0``) or an
    ensemble of several joined by ``+`` (``efficientnet_lite0+efficientnet_lite1``, see
    :class:`ConcatEmbedder`). ``kwargs`` go to each :class:`ImageEmbedder`."""
    members = backbone.split(ENSEMBLE_SEPARATOR)
    if len(members) == 1:
        return ImageEmbedder(backbone, **kwargs)
    if not all(members):
        raise ValueError(f"empty member in backbone {backbone!r}; write e.g. efficientnet_lite0+efficientnet_lite1")
    return ConcatEmbedder(members, **kwargs)


def folder_files(root: str | Path) -> tuple[list[Path], torch.Tensor, list[str]]:
    """Image files of a class-per-folder tree ``root/<class>/<image>``: paths, labels ``[N]``, class names."""
    from ..data.images import IMAGE_SUFFIXES

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder; expected one sub-folder of images per class")
    paths, labels, names = [], [], []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(f for f in d.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            names.append(d.name)
            paths += files
            labels += [len(names) - 1] * len(files)
    if not names:
        raise ValueError(f"{root} has no sub-folders with images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return paths, torch.tensor(labels, dtype=torch.long), names


def embed_dataset(embedder: "ImageEmbedder | ConcatEmbedder", data: "LabeledDataset") -> "LabeledDataset":
    """A dataset of images (``uint8 [N, C, H, W]``) -> the same dataset with features ``[N, dim]``.

    Data stored with ink = 255 (``info["image"]["invert"]``, e.g. Omniglot) is shown to the network
    as drawn: dark ink on a light page.
    """
    from ..data.dataset import LabeledDataset

    x = embed_pixels(embedder, data.x, invert=bool(data.info.get("image", {}).get("invert", False)))
    return LabeledDataset(x, data.y, data.class_names, data.groups, data.group_names,
                          {**data.info, "features": embedder.name}, data.item_meta)


def embed_pixels(embedder: "ImageEmbedder | ConcatEmbedder", x: torch.Tensor, invert: bool = False) -> torch.Tensor:
    """Images ``[N, C, H, W]`` (``uint8``, or floats in ``[0, 1]``; C = 1 or 3) -> features ``[N, dim]``;
    ``invert``: stored with ink = 255, shown to the network as drawn."""
    from PIL import Image

    feats = []
    for i in range(0, len(x), embedder.batch_size):
        b = x[i:i + embedder.batch_size]
        if b.dtype != torch.uint8:
            b = (b.float().clamp(0, 1) * 255).round().to(torch.uint8)
        if invert:
            b = 255 - b
        arrays = [a[0].numpy() if a.shape[0] == 1 else a.permute(1, 2, 0).numpy() for a in b]
        feats.append(embedder.embed_images([Image.fromarray(a) for a in arrays]))
    return torch.cat(feats) if feats else torch.empty(0, embedder.dim)


def embed_folder(embedder: "ImageEmbedder | ConcatEmbedder", root: str | Path) -> "LabeledDataset":
    """``root/<class>/<image>`` -> a dataset of features ``[N, dim]`` (cached by file content)."""
    from ..data.dataset import LabeledDataset

    paths, labels, names = folder_files(root)
    return LabeledDataset(embedder.embed_files(paths), labels, names,
                          info={"source": "folder", "path": str(root), "features": embedder.name})
