"""Checkpoints as safetensors (tensors) + JSON (everything else); never pickle.

A checkpoint ``<tag>`` (``best``, ``last``) in a run directory is the manifest ``<tag>.json`` (the
spec to rebuild the method, data preprocessing, training state, and the names of its tensor files)
plus ``<tag>.<id>.safetensors`` (model weights) and, for resumable tags,
``<tag>.<id>.optim.safetensors`` (optimiser tensors and RNG state). ``<id>`` names the step and the
write; every file carries tag, step and id in its metadata, checked on load. The manifest is
renamed into place last, so a crash leaves the previous checkpoint or the new one, never a mix.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ..nn.backbones import build_backbone
from ..methods.base import FewShotMethod
from ..methods.params import coerce_params, signature_params
from ..methods.registry import build_method, method_class


FORMAT = "fewshot-checkpoint-v2"


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
    config = spec["config"] if "config" in spec else spec.get("method_config", {})
    try:
        if not isinstance(config, dict):
            raise ValueError(f"its config is a {type(config).__name__}, not an object of options")
        if backbone is None and bb:
            if not isinstance(bb, dict) or not isinstance(bb.get("kwargs", {}), dict):
                raise ValueError(f"its backbone entry {bb!r} is not {{\"name\": ..., \"kwargs\": {{...}}}}")
            backbone = build_backbone(bb.get("name"), **bb.get("kwargs", {}))
        return build_method(spec["method"], backbone, saved=True, **config)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"cannot rebuild the saved method: {exc}; was the checkpoint JSON edited? Restore it or retrain") from exc


def with_overrides(spec: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``spec`` with its method options replaced by ``overrides`` (strings as from ``-p``, or JSON
    values), checked like ``-p``: an unknown or removed option or a bad value is a ``ValueError``.
    The returned spec's ``"overrides"`` holds the coerced values."""
    cls = method_class(spec["method"])
    given = coerce_params(cls, dict(overrides))
    config = spec["config"] if "config" in spec else spec.get("method_config", {})
    if not isinstance(config, dict):
        raise ValueError(f"the checkpoint's config is a {type(config).__name__}, not an object of options; "
                         "was the checkpoint JSON edited? Restore it or retrain")
    saved = coerce_params(cls, config, saved=True)  # current option names
    out = {k: v for k, v in spec.items() if k != "method_config"}
    out["config"], out["overrides"] = {**saved, **given}, given
    return out


def eval_overrides(spec: dict[str, Any], wanted: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The overrides that evaluate the saved method of ``spec`` with the current defaults of its
    evaluation-only options (its class's ``eval_params``), updated by ``wanted`` (any options, as
    for :func:`load_checkpoint`): only those that differ from what the checkpoint rebuilds with (an
    option missing from an older checkpoint already takes its current default). Coerced values."""
    cls = method_class(spec["method"])
    defaults = {n: p.default for n, p in signature_params(cls).items()}
    saved = {**defaults, **with_overrides(spec, {})["config"]}
    target = {**{n: defaults[n] for n in cls.eval_params}, **coerce_params(cls, dict(wanted or {}))}
    return {k: v for k, v in target.items() if v != saved.get(k)}


def _shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _changes_shapes(info: dict[str, Any], overrides: dict[str, Any], backbone: nn.Module | None,
                    saved: dict[str, tuple[int, ...]]) -> bool:
    """Whether ``overrides`` alone change the shapes of the state tensors (False if they cannot be built alone)."""
    try:
        return _shapes(build_from_spec(with_overrides(info, overrides), backbone)) != saved
    except ValueError:
        return False


def _check_overrides(info: dict[str, Any], overrides: dict[str, Any], method: FewShotMethod,
                     backbone: nn.Module | None, tensors: dict[str, torch.Tensor]) -> None:
    """Refuse overrides that change the trained parameters: options whose value is itself a weight
    (e.g. a learned ``scale``: the checkpoint would silently overwrite it) and options that change
    the set or shapes of the state tensors (``fce``, a width). ``ValueError`` naming them."""
    held = [k for k in overrides if isinstance(getattr(method, k, None), torch.Tensor)]
    if held:
        raise ValueError(f"option {', '.join(held)} of {method.name} is a trained weight (its value is loaded from the "
                         "checkpoint), so overriding it would change the trained parameters; retrain with -p to change it")
    removed = set(getattr(method, "removed_state", ()))
    saved = {k: tuple(v.shape) for k, v in tensors.items() if k not in removed}
    if _shapes(method) == saved:
        return
    culprits = [k for k in overrides if _changes_shapes(info, {k: overrides[k]}, backbone, saved)]
    names = ", ".join(f"{k}={overrides[k]!r}" for k in (culprits or overrides))
    raise ValueError(f"option {names} changes the trained parameters of {method.name} (its weights would differ in "
                     "number or shape from the checkpoint's): only options that keep the trained weights can be "
                     "overridden at evaluation; retrain with -p to change it")


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


def check_finite_state(method: nn.Module, step: int) -> None:
    """Refuse to save a diverged model: every floating parameter and buffer must be finite."""
    bad = [k for k, v in method.state_dict().items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise FloatingPointError(
            f"step {step}: the run diverged: {', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''} hold NaN or infinite "
            "values, so nothing was saved (the last good checkpoint is kept). Lower the learning rate (--lr), enable "
            "gradient clipping (--grad-clip), or check the inputs for NaNs"
        )


# Every filesystem step of a checkpoint write goes through these four functions (the
# fault-injection test interrupts each one in turn).
def _write_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    save_file(tensors, str(path), metadata=metadata)
    _fsync(path)


def _write_text(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _replace(src: Path, dst: Path) -> None:
    os.replace(src, dst)
    _fsync(dst.parent)


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    run_dir: str | Path,
    tag: str,
    method: FewShotMethod,
    spec: dict[str, Any],
    state: dict[str, Any] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> None:
    """Write checkpoint ``tag`` (e.g. ``last``, ``best``) into ``run_dir``, atomically as a whole.

    The tensors go to new files named after the step and a fresh id (``<tag>.<id>.safetensors``,
    ``<tag>.<id>.optim.safetensors``), each carrying ``tag``, ``step`` and ``id`` in its metadata;
    the manifest ``<tag>.json`` naming them is renamed into place last, and only then are the
    previous files removed. A crash at any point leaves either the old or the new checkpoint whole.
    Parameters and buffers must be finite (:func:`check_finite_state`), else nothing is written.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    step = int((state or {}).get("step", 0))
    check_finite_state(method, step)
    ckpt_id = f"step{step}-{secrets.token_hex(4)}"
    meta = {"tag": tag, "step": str(step), "id": ckpt_id}
    files = {"weights": f"{tag}.{ckpt_id}.safetensors"}
    tensors = {"weights": _state_tensors(method)}
    info: dict[str, Any] = {"format": FORMAT, "tag": tag, "id": ckpt_id, **spec, "state": state or {}}
    if optimizer is not None:
        opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
        opt_tensors["rng.torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                opt_tensors[f"rng.cuda.{i}"] = s
        info["optimizer"] = opt_meta
        files["optimizer"] = f"{tag}.{ckpt_id}.optim.safetensors"
        tensors["optimizer"] = opt_tensors
    info["files"] = files
    previous = _referenced_files(run_dir, tag)
    for key, name in files.items():
        _write_tensors(tensors[key], run_dir / name, meta)
    json_tmp = run_dir / f"{tag}.json.tmp"
    _write_text(json_tmp, json.dumps(info, indent=1))
    _replace(json_tmp, run_dir / f"{tag}.json")
    for name in previous | _stale_files(run_dir, tag):
        if name not in files.values():
            _remove(run_dir / name)


def _referenced_files(run_dir: Path, tag: str) -> set[str]:
    try:
        files = json.loads((run_dir / f"{tag}.json").read_text()).get("files")
    except (OSError, ValueError, AttributeError):
        return set()
    return set(files.values()) if isinstance(files, dict) else set()


def _stale_files(run_dir: Path, tag: str) -> set[str]:
    """Files of ``tag`` a crash left behind: unreferenced step files, temporaries, the old layout."""
    keep = _referenced_files(run_dir, tag)
    names = {p.name for p in run_dir.glob(f"{tag}.*") if p.name != f"{tag}.json"}
    return {n for n in names if n not in keep}


def read_checkpoint_info(run_dir: str | Path, tag: str) -> dict[str, Any]:
    path = Path(run_dir) / f"{tag}.json"
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint '{tag}' in {run_dir} ({path.name} is missing); train first or pick another --checkpoint")
    try:
        info = json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path} is corrupt ({exc}); delete it and resume from another checkpoint") from exc
    if not isinstance(info, dict) or not isinstance(info.get("method"), str):
        raise ValueError(f"{path} is not a fewshot checkpoint (expected a JSON object with a \"method\" name); "
                         "it was edited or damaged: restore it or retrain")
    return info


def _load_tensors(run_dir: Path, tag: str, info: dict[str, Any], key: str, device: str | torch.device = "cpu"
                  ) -> dict[str, torch.Tensor]:
    """The tensors of file ``key`` (``weights`` or ``optimizer``) of checkpoint ``tag``, checked to
    belong to the same write as its JSON (same step and id in the file's metadata)."""
    files = info.get("files")
    legacy = {"weights": f"{tag}.safetensors", "optimizer": f"{tag}.optim.safetensors"}
    name = files.get(key) if isinstance(files, dict) else legacy[key]
    path = run_dir / str(name)
    if name is None or not path.exists():
        raise ValueError(f"checkpoint '{tag}' in {run_dir}: its {key} file {name} is missing; the run folder was "
                         "damaged (restore the file, or retrain)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path), device=str(device))
    except Exception as exc:
        raise ValueError(f"{path} is corrupt or truncated ({exc}); restore it, resume from another checkpoint or retrain") from exc
    step = str(info.get("state", {}).get("step", 0))
    if meta.get("step", step) != step or ("id" in info and meta.get("id") != info["id"]):
        raise ValueError(f"torn checkpoint '{tag}' in {run_dir}: {path.name} was written at step {meta.get('step')} "
                         f"(id {meta.get('id')}) but {tag}.json describes step {step} (id {info.get('id')}); the files "
                         "come from two different saves. Refusing to mix them: resume from another checkpoint or retrain")
    return tensors


def load_checkpoint(run_dir: str | Path, tag: str = "best", map_location: str | torch.device = "cpu",
                    backbone: nn.Module | None = None, overrides: Mapping[str, Any] | None = None
                    ) -> tuple[FewShotMethod, dict]:
    """Rebuild the method saved as ``tag`` in ``run_dir`` (falls back from ``best`` to ``last``), in
    eval mode: fitting a support set and predicting never update BatchNorm statistics.

    A run trained with a custom backbone (no registered name in its JSON) needs that module
    passed as ``backbone``; its weights are then loaded from the checkpoint.

    ``overrides`` (option -> value, strings as from ``-p`` or JSON values) rebuild the method with
    those options instead of the saved ones before the weights are loaded: evaluation-time settings
    such as MAML's ``test_inner_steps`` or ProtoNet's ``distance``. An option that would change the
    trained parameters (a width, ``fce``, a learned ``scale``) or an unknown one is a ``ValueError``.
    The returned info then has ``config`` with the overrides applied and ``overrides`` (the
    coerced values).
    """
    run_dir = Path(run_dir)
    if tag == "best" and not (run_dir / "best.json").exists() and (run_dir / "last.json").exists():
        tag = "last"
    info = read_checkpoint_info(run_dir, tag)
    tensors = _load_tensors(run_dir, tag, info, "weights", map_location)
    if overrides:
        spec = with_overrides(info, overrides)
        try:
            method = build_from_spec(spec, backbone)
        except ValueError as exc:  # the constructor refused an overridden value (not an edited JSON)
            names = ", ".join(f"{k}={v!r}" for k, v in spec["overrides"].items())
            raise ValueError(f"cannot evaluate {info['method']} with {names}: {exc.__cause__ or exc}") from exc
        _check_overrides(info, spec["overrides"], method, backbone, tensors)
        info = spec
    else:
        method = build_from_spec(info, backbone)
    _load_state(method, tensors, run_dir / f"{tag}.json")
    return method.eval(), info


def checkpoint_weights(run_dir: str | Path, tag: str = "last", map_location: str | torch.device = "cpu"
                       ) -> dict[str, torch.Tensor]:
    """The state-dict tensors of checkpoint ``tag`` (its file is named in ``<tag>.json``), checked
    to belong to the same save as the manifest."""
    run_dir = Path(run_dir)
    return _load_tensors(run_dir, tag, read_checkpoint_info(run_dir, tag), "weights", map_location)


def _load_state(method: nn.Module, tensors: dict[str, torch.Tensor], source: Path) -> None:
    removed = set(getattr(method, "removed_state", ()))
    tensors = {k: v for k, v in tensors.items() if k not in removed}  # state of earlier versions
    try:
        missing, unexpected = method.load_state_dict(tensors, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise ValueError(f"the weights of {source} do not fit the method it describes ({str(exc).splitlines()[-1].strip()}); "
                         "was the JSON edited? Restore it or retrain") from exc
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
    weights = _load_tensors(run_dir, tag, info, "weights", device)
    if optimizer is None:  # a zero-step run (nothing to train): weights only
        _load_state(method, weights, run_dir / f"{tag}.json")
        return info["state"]
    if "optimizer" not in info:
        raise ValueError(f"checkpoint '{tag}' in {run_dir} has no optimiser state (a run without trainable parameters "
                         "cannot be continued by one with); retrain into a new --out")
    opt_tensors = _load_tensors(run_dir, tag, info, "optimizer")
    _load_state(method, weights, run_dir / f"{tag}.json")
    try:
        optimizer.load_state_dict(_unflatten_optimizer(opt_tensors, info["optimizer"]))
    except (KeyError, ValueError, TypeError, RuntimeError) as exc:
        raise ValueError(f"the optimiser state in {run_dir} does not fit this run's optimiser "
                         f"({type(optimizer).__name__}: {exc}); resume with the run's own settings") from exc
    torch.set_rng_state(opt_tensors["rng.torch"])
    if torch.cuda.is_available():
        cuda_states = [opt_tensors[k] for k in sorted(k for k in opt_tensors if k.startswith("rng.cuda."))]
        if cuda_states:
            torch.cuda.set_rng_state_all(cuda_states)
    return info["state"]
