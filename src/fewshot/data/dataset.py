"""An in-memory labelled dataset: the one container every loader returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Sequence

import numpy as np
import torch


@dataclass
class LabeledDataset:
    """Items, their class ids, and optional class groups, all as tensors in memory.

    Attributes:
        x: items ``[N, ...]``; images are ``[N, C, H, W]`` and may be ``uint8`` (0..255,
            converted to float in ``[0, 1]`` by :meth:`items`) to keep memory small.
        y: class id of each item ``[N]`` (int64, ``0..num_classes-1``).
        class_names: name of each class.
        groups: group id of each class ``[num_classes]`` (e.g. the Omniglot alphabet), or None.
        group_names: name of each group.
        info: free-form metadata (source, preprocessing) recorded into checkpoints.
        item_meta: per-item integer metadata, e.g. ``{"drawer": tensor[N]}``.
    """

    x: torch.Tensor
    y: torch.Tensor
    class_names: list[str]
    groups: torch.Tensor | None = None
    group_names: list[str] | None = None
    info: dict = field(default_factory=dict)
    item_meta: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.y = torch.as_tensor(self.y, dtype=torch.long)
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"x has {self.x.shape[0]} items but y has {self.y.shape[0]} labels")
        if self.y.numel() and (self.y.min() < 0 or self.y.max() >= len(self.class_names)):
            raise ValueError(
                f"labels must lie in 0..{len(self.class_names) - 1} (one per class name); "
                f"got range {int(self.y.min())}..{int(self.y.max())}"
            )
        if self.groups is not None:
            self.groups = torch.as_tensor(self.groups, dtype=torch.long)
            if self.groups.shape[0] != len(self.class_names):
                raise ValueError("groups must give one group id per class")
        self._by_class: list[np.ndarray] | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_arrays(
        cls,
        x: np.ndarray | torch.Tensor,
        y: Sequence | np.ndarray | torch.Tensor,
        class_names: Sequence[str] | None = None,
        info: dict | None = None,
    ) -> "LabeledDataset":
        """Build from plain arrays; labels of any hashable kind are mapped to 0..C-1."""
        x_t = torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x
        y_arr = np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y)
        if y_arr.ndim != 1 or y_arr.shape[0] != x_t.shape[0]:
            raise ValueError(f"y must be 1-D with one label per item of x; got shapes {tuple(x_t.shape)} and {y_arr.shape}")
        uniq, y_idx = np.unique(y_arr, return_inverse=True)
        names = list(class_names) if class_names is not None else [str(u) for u in uniq]
        if len(names) != len(uniq):
            raise ValueError(f"{len(names)} class names given for {len(uniq)} distinct labels")
        if x_t.dtype == torch.float64:
            x_t = x_t.float()
        return cls(x_t, torch.from_numpy(y_idx.astype(np.int64)), names, info=dict(info or {}))

    # ------------------------------------------------------------------ views
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def item_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def items(self, index: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Items at ``index`` as float32 (uint8 images scaled to ``[0, 1]``)."""
        idx = torch.as_tensor(index, dtype=torch.long)
        out = self.x[idx]
        if out.dtype == torch.uint8:
            return out.float().div_(255.0)
        return out.float() if not out.is_floating_point() else out

    def indices_by_class(self) -> list[np.ndarray]:
        """For each class, the item indices (sorted), computed once."""
        if self._by_class is None:
            y = self.y.numpy()
            order = np.argsort(y, kind="stable")
            counts = np.bincount(y, minlength=self.num_classes)
            self._by_class = np.split(order, np.cumsum(counts)[:-1])
        return self._by_class

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.y.numpy(), minlength=self.num_classes)

    def subset_classes(self, classes: Sequence[int]) -> "LabeledDataset":
        """A new dataset with only ``classes`` (relabelled 0..len-1 in the given order)."""
        classes = [int(c) for c in classes]
        remap = torch.full((self.num_classes,), -1, dtype=torch.long)
        remap[torch.tensor(classes, dtype=torch.long)] = torch.arange(len(classes))
        keep = remap[self.y] >= 0
        groups, group_names = None, self.group_names
        if self.groups is not None:
            old_groups = self.groups[torch.tensor(classes, dtype=torch.long)]
            used = sorted(set(old_groups.tolist()))
            gmap = {g: i for i, g in enumerate(used)}
            groups = torch.tensor([gmap[int(g)] for g in old_groups], dtype=torch.long)
            group_names = [self.group_names[g] for g in used] if self.group_names else None
        return LabeledDataset(
            self.x[keep],
            remap[self.y[keep]],
            [self.class_names[c] for c in classes],
            groups,
            group_names,
            dict(self.info),
            {k: v[keep] for k, v in self.item_meta.items()},
        )

    def select_groups(self, names: Sequence[str], exclude: bool = False) -> "LabeledDataset":
        """Keep (or, with ``exclude``, drop) the classes of the named groups."""
        if self.groups is None or self.group_names is None:
            raise ValueError("this dataset has no groups (e.g. alphabets) to select from")
        unknown = [n for n in names if n not in self.group_names]
        if unknown:
            raise ValueError(f"unknown group(s) {unknown}; available: {', '.join(self.group_names)}")
        wanted = {self.group_names.index(n) for n in names}
        classes = [c for c in range(self.num_classes) if (int(self.groups[c]) in wanted) != exclude]
        return self.subset_classes(classes)

    def split_classes(self, fraction: float, seed: int = 0) -> tuple["LabeledDataset", "LabeledDataset"]:
        """Split by class into (rest, held_out) with ``fraction`` of the classes held out."""
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"fraction must lie strictly between 0 and 1, got {fraction}")
        rng = np.random.default_rng(seed)
        perm = rng.permutation(self.num_classes)
        n_out = max(1, int(round(fraction * self.num_classes)))
        held, rest = sorted(perm[:n_out].tolist()), sorted(perm[n_out:].tolist())
        return self.subset_classes(rest), self.subset_classes(held)


def concat_datasets(parts: Sequence[LabeledDataset]) -> LabeledDataset:
    """Concatenate datasets whose classes are distinct (class ids are offset)."""
    if len(parts) == 1:
        return parts[0]
    shapes = {p.item_shape for p in parts}
    if len(shapes) != 1:
        raise ValueError(f"cannot combine datasets with different item shapes {shapes}")
    xs, ys, names, groups, gnames, meta_keys = [], [], [], [], [], set.intersection(*(set(p.item_meta) for p in parts))
    offset, goffset, have_groups = 0, 0, all(p.groups is not None for p in parts)
    for p in parts:
        xs.append(p.x)
        ys.append(p.y + offset)
        names += p.class_names
        offset += p.num_classes
        if have_groups:
            groups.append(p.groups + goffset)
            gnames += p.group_names or [str(i) for i in range(int(p.groups.max()) + 1)]
            goffset += len(p.group_names or [])
    return LabeledDataset(
        torch.cat(xs),
        torch.cat(ys),
        names,
        torch.cat(groups) if have_groups else None,
        gnames if have_groups else None,
        dict(parts[0].info),
        {k: torch.cat([p.item_meta[k] for p in parts]) for k in meta_keys},
    )


def with_rotations(ds: LabeledDataset, quarter_turns: Sequence[int] = (1, 2, 3)) -> LabeledDataset:
    """Add rotated copies of every class as new classes (the standard Omniglot ×4 trick).

    Class ``c`` rotated by ``k`` quarter turns becomes a new class named ``"<name>@rot<90k>"`` in
    the same group. Images must be ``[N, C, H, W]`` with ``H == W``.
    """
    if ds.x.ndim != 4 or ds.x.shape[-1] != ds.x.shape[-2]:
        raise ValueError(f"rotations need square images [N, C, H, W]; got shape {tuple(ds.x.shape)}")
    xs, ys, names = [ds.x], [ds.y], list(ds.class_names)
    groups = [ds.groups] if ds.groups is not None else None
    for i, k in enumerate(quarter_turns, start=1):
        xs.append(torch.rot90(ds.x, k, dims=(-2, -1)))
        ys.append(ds.y + i * ds.num_classes)
        names += [f"{n}@rot{90 * k}" for n in ds.class_names]
        if groups is not None:
            groups.append(ds.groups)
    return LabeledDataset(
        torch.cat(xs).contiguous(),
        torch.cat(ys),
        names,
        torch.cat(groups) if groups is not None else None,
        ds.group_names,
        {**ds.info, "rotations": [0] + [90 * k for k in quarter_turns]},
        {k: v.repeat(len(quarter_turns) + 1) for k, v in ds.item_meta.items()},
    )
