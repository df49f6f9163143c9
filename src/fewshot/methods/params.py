"""Method options from their constructor annotations: coercion, validation, ``config()``.

A method's options are the parameters of its ``__init__`` (all but ``backbone``), each annotated
(``bool``, ``int``, ``float``, ``str``, ``Literal[...]``, ``X | None``, ``tuple[int, ...]``) and stored
unchanged on the attribute of the same name, scikit-learn style. :func:`coerce_params` turns values
that arrive as strings (``-p KEY=VALUE``) or JSON values (checkpoints) into those types, or fails
with a ``ValueError`` that names the parameter, the value and what is accepted.
"""

from __future__ import annotations

import inspect
import json
import math
import types
import typing
from typing import Any, Literal, Union

TRUE = ("true", "1", "yes")
FALSE = ("false", "0", "no")
NULL = ("none", "null")
SKIP = ("self", "backbone")


def signature_params(cls: type) -> dict[str, inspect.Parameter]:
    """The options of ``cls``: its ``__init__`` parameters except ``self`` and ``backbone``."""
    params = inspect.signature(cls.__init__).parameters
    bad = [p.name for p in params.values() if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    if bad:
        raise TypeError(f"{cls.__name__}.__init__ takes *args/**kwargs ({', '.join(bad)}): list every option explicitly")
    return {n: p for n, p in params.items() if n not in SKIP}


def param_types(cls: type) -> dict[str, Any]:
    """``name -> annotation`` of every option (a missing annotation is a bug in the method)."""
    hints = typing.get_type_hints(cls.__init__)
    out = {}
    for name in signature_params(cls):
        if name not in hints:
            raise TypeError(f"{cls.__name__}.__init__ parameter {name!r} has no type annotation")
        out[name] = hints[name]
    return out


def describe(tp: Any) -> str:
    """Human-readable type: ``int``, ``'mse' | 'ce'``, ``float | None``."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(v) for v in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(describe(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "None"
    if origin is tuple:
        args = typing.get_args(tp)
        return f"tuple[{describe(args[0])}, ...]" if len(args) == 2 and args[1] is Ellipsis else \
            f"tuple[{', '.join(describe(a) for a in args)}]"
    return getattr(tp, "__name__", str(tp))


def coerce_value(name: str, tp: Any, value: Any, allow_nonfinite: bool = False) -> Any:
    """``value`` (a string from the command line or a JSON value) as type ``tp``; ``ValueError`` if it is not one."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        members = typing.get_args(tp)
        optional = type(None) in members
        if value is None and optional:
            return None
        literal_strings = {v for m in members if typing.get_origin(m) is Literal for v in typing.get_args(m)}
        if optional and isinstance(value, str) and value.lower() in NULL and value not in literal_strings:
            return None
        errors = []
        for member in members:
            if member is type(None):
                continue
            try:
                return coerce_value(name, member, value, allow_nonfinite)
            except ValueError as exc:
                errors.append(str(exc))
        if len(errors) == 1:
            raise ValueError(errors[0] + (" or None" if optional else ""))
        raise ValueError(f"{name}={value!r} is not a {describe(tp)}")
    if origin is Literal:
        choices = typing.get_args(tp)
        for choice in choices:
            if value == choice or (isinstance(value, str) and not isinstance(choice, str) and value == str(choice)):
                return choice
        raise ValueError(f"{name}={value!r} is not one of the valid values: {', '.join(repr(c) for c in choices)}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in TRUE + FALSE:
            return value.strip().lower() in TRUE
        raise ValueError(f"{name}={value!r} is not a bool: use true/false (also True/False, 1/0, yes/no)")
    if tp is int:
        if isinstance(value, bool):
            raise ValueError(f"{name}={value!r} is not an int")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise ValueError(f"{name}={value!r} is not an int (a whole number such as 3)")
    if tp is float:
        if isinstance(value, bool):
            raise ValueError(f"{name}={value!r} is not a float")
        if isinstance(value, (int, float)):
            out = float(value)
        elif isinstance(value, str):
            try:
                out = float(value.strip())
            except ValueError:
                raise ValueError(f"{name}={value!r} is not a float (e.g. 0.5 or 1e-3)") from None
        else:
            raise ValueError(f"{name}={value!r} is not a float (e.g. 0.5 or 1e-3)")
        if not math.isfinite(out) and not allow_nonfinite:
            raise ValueError(f"{name}={value!r} is not finite; give a finite number")
        return out
    if tp is str:
        if isinstance(value, str):
            return value
        raise ValueError(f"{name}={value!r} is not a string")
    if origin is tuple:
        args = typing.get_args(tp)
        items = value
        if isinstance(value, str):
            text = value.strip()
            try:
                items = json.loads(text) if text.startswith("[") else [v for v in text.split(",") if v.strip()]
            except ValueError:
                raise ValueError(f"{name}={value!r} is not a {describe(tp)} (e.g. 64,32 or [64, 32])") from None
        if not isinstance(items, (list, tuple)):
            raise ValueError(f"{name}={value!r} is not a {describe(tp)} (e.g. 64,32 or [64, 32])")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce_value(f"{name}[{i}]", args[0], v, allow_nonfinite) for i, v in enumerate(items))
        if len(items) != len(args):
            raise ValueError(f"{name}={value!r} needs {len(args)} values ({describe(tp)})")
        return tuple(coerce_value(f"{name}[{i}]", a, v, allow_nonfinite) for i, (a, v) in enumerate(zip(args, items)))
    raise TypeError(f"option {name!r} has an unsupported annotation {tp!r}")


def coerce_params(cls: type, raw: dict[str, Any], saved: bool = False) -> dict[str, Any]:
    """Options for ``cls(**options)`` from strings or JSON values, by ``cls.__init__``'s annotations.

    Old option names (``cls.renamed_params``, e.g. ``labels -> way``) are accepted so that
    checkpoints of earlier versions load; with ``saved=True`` (a checkpoint's config) options that
    were removed (``cls.removed_params``) are left out, otherwise they are refused with their hint. Unknown names, wrong types and invalid choices raise
    ``ValueError`` naming the valid keys or values.
    """
    types_ = param_types(cls)
    renamed: dict[str, str] = getattr(cls, "renamed_params", {})
    removed: dict[str, str] = getattr(cls, "removed_params", {})
    nonfinite = getattr(cls, "nonfinite_params", frozenset())
    label = getattr(cls, "name", cls.__name__)
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.strip().replace("-", "_")
        if name not in types_ and name in renamed:
            name = renamed[name]
        if name not in types_ and name in removed:
            if saved:
                continue
            raise ValueError(f"option {key!r} of method {label!r} was removed: {removed[name]}")
        if name not in types_:
            raise ValueError(f"unknown option {key!r} for method {label!r}; valid options: {', '.join(types_) or 'none'}")
        if name in out:
            raise ValueError(f"option {name!r} given twice for method {label!r} (once as {key!r})")
        out[name] = coerce_value(name, types_[name], value, name in nonfinite)
    return out


def options_of(cls: type) -> list[tuple[str, str, Any]]:
    """``(name, type description, default)`` of every option of ``cls`` (for ``fewshot methods``)."""
    types_ = param_types(cls)
    return [(n, describe(types_[n]), p.default) for n, p in signature_params(cls).items()]


def config_of(method: Any) -> dict[str, Any]:
    """JSON-able options of a constructed method, read back from the attributes of the same names
    (a learnable scalar parameter, e.g. a logit ``scale``, gives its current value)."""
    out = {}
    for name in signature_params(type(method)):
        if not hasattr(method, name):
            raise AttributeError(f"{type(method).__name__} must store its option {name!r} as self.{name}")
        value = getattr(method, name)
        if hasattr(value, "ndim") and getattr(value, "ndim") == 0:  # a 0-dim tensor
            value = float(value.detach())
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, (type(None), bool, int, float, str, list)):
            raise TypeError(f"{type(method).__name__}.{name} is a {type(value).__name__}, not a JSON value: "
                            "options must be plain values (build modules from them inside __init__)")
        out[name] = value
    return out
