"""The package is layered: a module imports only from its own layer or the layers below it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "fewshot"

#: lower number = lower layer; every sub-package and top-level module must be listed
LAYERS = {
    "__init__": 0, "__main__": 9, "utils": 0,
    "data": 1, "tasks": 2, "nn": 3, "bpl": 3, "methods": 4, "engine": 5,
    "regression": 6, "text": 6, "playground": 6, "serve": 7,
    "cli": 8,
}


def top_level(module_file: Path) -> str:
    rel = module_file.relative_to(SRC)
    return rel.parts[0].removesuffix(".py")


def imported_top_levels(path: Path) -> set[str]:
    """The fewshot sub-packages a file imports from (relative and absolute imports)."""
    tree = ast.parse(path.read_text())
    pkg_parts = list(path.relative_to(SRC).parent.parts)
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg_parts[: len(pkg_parts) - (node.level - 1)]
                parts = base + (node.module.split(".") if node.module else [])
                if not parts:  # `from .. import x` at the package root: x is a sub-package
                    parts = [node.names[0].name]
            elif node.module and node.module.split(".")[0] == "fewshot":
                parts = node.module.split(".")[1:] or [node.names[0].name]
            else:
                continue
            is_module = (SRC / parts[0]).is_dir() or (SRC / f"{parts[0]}.py").is_file()
            out.add(parts[0] if is_module else "__init__")  # a name defined in fewshot/__init__.py
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("fewshot."):
                    out.add(alias.name.split(".")[1])
    return out


FILES = sorted(SRC.rglob("*.py"))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_module_imports_only_from_its_layer_or_below(path: Path):
    own = top_level(path)
    assert own in LAYERS, f"{own} is not in the layer table of tests/test_layers.py: add it"
    for dep in imported_top_levels(path):
        if dep == own:
            continue
        assert dep in LAYERS, f"{path.relative_to(SRC)} imports fewshot.{dep}, which is not in the layer table"
        assert LAYERS[dep] <= LAYERS[own], (
            f"{path.relative_to(SRC)} (layer {own}) imports fewshot.{dep}, a layer above it")
