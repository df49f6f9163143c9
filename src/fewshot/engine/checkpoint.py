"""Checkpoints as safetensors (tensors) + JSON (everything else); never pickle.

A run directory holds ``<tag>.safetensors`` (model weights), ``<tag>.json`` (the spec to
rebuild the method, data preprocessing, training state) and, for resumable tags,
``<tag>.optim.safetensors`` (optimiser tensors and RNG state). Files are written to temporary
names and renamed, JSON last, so a crash never leaves a half-written checkpoint in place.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..nn.backbones import build_backbone
from ..methods.base import FewShotMethod
from ..methods.registry import build_method


def method_spec(method: FewShotMethod, backbone_spec: tuple[str, dict] | None) -> dict[str, Any]:
    """The JSON that rebuilds ``method``: its registered name, ``config()`` and the backbone spec."""
    return {
        "method": method.name,
        "config": method.config(),
        "backbone": None if backbone_spec is None else {"name": backbone_spec[0], "kwargs": backbone_spec[1]},
    }


def build_from_spec(spec: dict[str, Any], backbone: nn.Module | None = None) -> FewShotMethod:
    """Rebuild a method from its JSON spec; pass ``backbone`` for a custom (unregistered) one.

    The config goes through the same coercion as ``-p`` (a hand-edited wrong value is a clear
    error); earlier method names, option names and the earlier key ``method_config`` are accepted.
    """
    bb = spec.get("backbone")
    if backbone is None and bb:
        backbone = build_backbone(bb["name"], **bb["kwargs"])
    config = spec["config"] if "config" in spec else spec.get("method_config", {})
    try:
        return build_method(spec["method"], backbone, saved=True, **config)
    except ValueError as exc:
        raise ValueError(f"cannot rebuild the saved method: {exc}") from exc


def _state_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    # safetensors refuses shared storage; clone views, keep everything contiguous on CPU.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, meta = {}, {"param_groups": state["param_groups"], "state": {}}
    for pid, st in state["state"].items():
        meta["state"][str(pid)] = {}
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"state.{pid}.{k}"] = v.detach().cpu().contiguous()
                meta["state"][str(pid)][k] = "__tensor__"
            else:
                meta["state"][str(pid)][k] = v
    return tensors, meta


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state = {}
    for pid, st in meta["state"].items():
        state[int(pid)] = {k: tensors[f"state.{pid}.{k}"] if v == "__tensor__" else v for k, v in st.items()}
    return {"state": state, "param_groups": meta["param_groups"]}


def _atomic_save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    return tmp


def save_checkpoint(
    run_dir: str | Path,
    tag: str,
    method: FewShotMethod,
    spec: dict[str, Any],
    state: dict[str, Any] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> None:
    """Write checkpoint ``tag`` (e.g. ``last``, ``best``) into ``run_dir``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    step = str((state or {}).get("step", 0))
    pending = [(_atomic_save_tensors(_state_tensors(method), run_dir / f"{tag}.safetensors", {"step": step}),
                run_dir / f"{tag}.safetensors")]
    info: dict[str, Any] = {"format": "fewshot-checkpoint-v1", "tag": tag, **spec, "state": state or {}}
    if optimizer is not None:
        opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
        opt_tensors["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                opt_tensors[f"rng.cuda.{i}"] = s
        info["optimizer"] = opt_meta
        pending.append((_atomic_save_tensors(opt_tensors, run_dir / f"{tag}.optim.safetensors", {"step": step}),
                        run_dir / f"{tag}.optim.safetensors"))
    json_tmp = run_dir / f"{tag}.json.tmp"
    json_tmp.write_text(json.dumps(info, indent=1))
    for tmp, final in pending:
        os.replace(tmp, final)
    os.replace(json_tmp, run_dir / f"{tag}.json")


def read_checkpoint_info(run_dir: str | Path, tag: str) -> dict[str, Any]:
    path = Path(run_dir) / f"{tag}.json"
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint '{tag}' in {run_dir} ({path.name} is missing); train first or pick another --checkpoint")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path} is corrupt ({exc}); delete it and resume from another checkpoint") from exc


def load_checkpoint(run_dir: str | Path, tag: str = "best", map_location: str | torch.device = "cpu",
                    backbone: nn.Module | None = None) -> tuple[FewShotMethod, dict]:
    """Rebuild the method saved as ``tag`` in ``run_dir`` (falls back from ``best`` to ``last``).

    A run trained with a custom backbone (no registered name in its JSON) needs that module
    passed as ``backbone``; its weights are then loaded from the checkpoint.
    """
    run_dir = Path(run_dir)
    if tag == "best" and not (run_dir / "best.json").exists() and (run_dir / "last.json").exists():
        tag = "last"
    info = read_checkpoint_info(run_dir, tag)
    method = build_from_spec(info, backbone)
    weights = run_dir / f"{tag}.safetensors"
    try:
        tensors = load_file(str(weights), device=str(map_location))
    except Exception as exc:
        raise ValueError(f"{weights} is missing or corrupt ({exc}); resume from another checkpoint or retrain") from exc
    _load_state(method, tensors, weights)
    return method, info


def _load_state(method: nn.Module, tensors: dict[str, torch.Tensor], source: Path) -> None:
    removed = set(getattr(method, "removed_state", ()))
    tensors = {k: v for k, v in tensors.items() if k not in removed}  # state of earlier versions
    missing, unexpected = method.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise ValueError(f"{source} does not match the method's parameters (missing {missing[:5]}, unexpected {unexpected[:5]})")


def restore_training(run_dir: str | Path, tag: str, method: FewShotMethod,
                     optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
    """Load weights, optimiser and RNG state saved as ``tag`` (weights only without ``optimizer``);
    return the saved training state."""
    run_dir = Path(run_dir)
    info = read_checkpoint_info(run_dir, tag)
    p = next(method.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    _load_state(method, load_file(str(run_dir / f"{tag}.safetensors"), device=str(device)), run_dir / f"{tag}.safetensors")
    if optimizer is None:  # a zero-step run (nothing to train): weights only
        return info["state"]
    opt_tensors = load_file(str(run_dir / f"{tag}.optim.safetensors"))
    optimizer.load_state_dict(_unflatten_optimizer(opt_tensors, info["optimizer"]))
    torch.set_rng_state(opt_tensors["rng.torch"])
    if torch.cuda.is_available():
        cuda_states = [opt_tensors[k] for k in sorted(k for k in opt_tensors if k.startswith("rng.cuda."))]
        if cuda_states:
            torch.cuda.set_rng_state_all(cuda_states)
    return info["state"]
