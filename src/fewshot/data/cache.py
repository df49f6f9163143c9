"""Decode-once caches of datasets as safetensors + JSON (never pickle)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .dataset import LabeledDataset
from .sources import cache_dir


def _key(parts: dict) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def save_dataset(ds: LabeledDataset, path: Path) -> None:
    tensors = {"x": ds.x.contiguous(), "y": ds.y}
    if ds.groups is not None:
        tensors["groups"] = ds.groups
    tensors.update({f"meta.{k}": v for k, v in ds.item_meta.items()})
    meta = {"class_names": ds.class_names, "group_names": ds.group_names, "info": ds.info}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"fewshot": json.dumps(meta)})
    tmp.replace(path)


def load_dataset(path: Path) -> LabeledDataset:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["fewshot"])
    t = load_file(str(path))
    return LabeledDataset(
        t["x"],
        t["y"],
        meta["class_names"],
        t.get("groups"),
        meta["group_names"],
        meta["info"],
        {k[5:]: v for k, v in t.items() if k.startswith("meta.")},
    )


def cached(parts: dict, build: Callable[[], LabeledDataset], enabled: bool = True) -> LabeledDataset:
    """Return the dataset cached under ``parts`` (a JSON-able identity), building it on a miss."""
    if not enabled:
        return build()
    path = cache_dir() / "decoded" / f"{_key(parts)}.safetensors"
    if path.exists():
        try:
            return load_dataset(path)
        except Exception:  # a truncated cache file is rebuilt, never trusted
            path.unlink(missing_ok=True)
    ds = build()
    try:
        save_dataset(ds, path)
    except OSError:
        pass  # a read-only cache dir only costs speed
    return ds
