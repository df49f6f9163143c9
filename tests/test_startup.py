"""Start-up: the CLI's help and method list import no torch, and the static method table matches
the registry. (The time itself is measured in benchmarks/throughput.py, not asserted here.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fewshot.cli.method_table import METHOD_ROWS, registry_rows

SRC = str(Path(__file__).resolve().parents[1] / "src")


def test_method_table_matches_registry():
    assert METHOD_ROWS == registry_rows(), (
        "src/fewshot/cli/method_table.py is stale: regenerate it with `python -m fewshot.cli.method_table` "
        "and paste the output over METHOD_ROWS")


@pytest.mark.parametrize("args", [["--help"], ["methods"], ["train", "--help"], ["eval", "--help"]])
def test_cli_help_imports_no_torch(args):
    code = ("import sys\nfrom fewshot.cli import main\ntry:\n    main(%r)\nexcept SystemExit:\n    pass\n"
            "print('heavy:', sorted(m for m in ('torch', 'matplotlib', 'sentence_transformers', 'numpy') if m in sys.modules))"
            % (args,))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": SRC},
                         check=True).stdout
    assert out.strip().splitlines()[-1] == "heavy: []", out


def test_pretrained_resolutions_match_the_networks():
    from fewshot.cli.pretrained import PRETRAINED_RESOLUTION
    from fewshot.nn.efficientnet import CONFIGS

    assert PRETRAINED_RESOLUTION == {name: cfg.resolution for name, cfg in CONFIGS.items()}
