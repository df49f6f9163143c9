"""Image datasets that stay on disk as files: the layout loaders return these, the pretrained
path embeds them directly (:meth:`fewshot.engine.features.ImageEmbedder.embed_files`) and the
from-scratch path decodes them with :meth:`ImageFiles.load`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .dataset import LabeledDataset
from .images import ImageSpec, load_images


@dataclass
class ImageFiles:
    """``paths [N]`` with class ids ``labels [N]`` (``0..C-1``) and ``class_names [C]``.

    ``groups [C]`` / ``group_names`` optionally group classes (e.g. tieredImageNet's categories).
    """

    paths: list[Path]
    labels: torch.Tensor
    class_names: list[str]
    groups: torch.Tensor | None = None
    group_names: list[str] | None = None
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = torch.as_tensor(self.labels, dtype=torch.long)
        if len(self.paths) != len(self.labels):
            raise ValueError(f"{len(self.paths)} paths but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.paths)

    def check_exist(self) -> None:
        """Raise ``FileNotFoundError`` naming the first missing file (and how many are missing)."""
        missing = [p for p in self.paths if not Path(p).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} of {len(self.paths)} listed images are missing, e.g. {missing[0]}; "
                "is the images/ folder complete and in the layout the split files expect?"
            )

    def load(self, spec: ImageSpec = ImageSpec(size=84, channels=3)) -> LabeledDataset:
        """Decode every image at ``spec`` into an in-memory dataset."""
        return LabeledDataset(load_images(list(self.paths), spec), self.labels, self.class_names, self.groups,
                              self.group_names, {**self.info, "image": spec.to_dict()})


def files_from_names(paths: Sequence[Path], names: Sequence[str], info: dict | None = None) -> ImageFiles:
    """Files with a class *name* each -> ``ImageFiles`` (classes numbered in first-seen order)."""
    order: dict[str, int] = {}
    labels = [order.setdefault(n, len(order)) for n in names]
    return ImageFiles(list(paths), torch.tensor(labels, dtype=torch.long), list(order), info=dict(info or {}))
