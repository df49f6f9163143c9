"""Every method of the metric family through `fewshot train` / `fewshot eval` (incl. Lake runs), deterministically."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import write_png
from fewshot.cli import main
from fewshot.engine.checkpoint import checkpoint_weights
from fewshot.methods import canonical_name

METHODS = [("knn", []), ("1nn", []), ("nearest_prototype", []), ("siamese", []),
           ("siamese", ["-p", "objective=triplet"]), ("matching", ["-p", "fce=true"]), ("relation", [])]


def _train(tmp_path, name, params, out):
    args = ["train", "--threads", "1", "--method", name, *params, "--dataset", "digits", "--way", "3", "--shot", "1", "--query", "2",
            "--episodes", "3", "--val-fraction", "0.3", "--val-every", "3", "--val-tasks", "3", "--device", "cpu", "--quiet", "--no-plots",
            "--out", str(tmp_path / out), "--json"]
    return CliRunner().invoke(main, args)


@pytest.fixture(scope="module")
def lake_dir(tmp_path_factory):
    """Two tiny runs in the all_runs layout (3 classes each, images drawn as in Omniglot)."""
    root = tmp_path_factory.mktemp("lake")
    rng = np.random.default_rng(0)
    for r in (1, 2):
        lines = []
        for c in range(1, 4):
            img = np.where(rng.random((8, 8)) > 0.5, 255, 0).astype(np.uint8)
            write_png(root / f"run{r:02d}/training/class{c:02d}.png", img)
            write_png(root / f"run{r:02d}/test/item{c:02d}.png", img)
            lines.append(f"run{r:02d}/test/item{c:02d}.png run{r:02d}/training/class{c:02d}.png")
        (root / f"run{r:02d}/class_labels.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("name,params", METHODS, ids=[m[0] + "".join(m[1][1:]) for m in METHODS])
def test_train_then_eval_and_lake(tmp_path, lake_dir, name, params):
    res = _train(tmp_path, name, params, "run")
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["eval", "--threads", "1", str(tmp_path / "run"), "--dataset", "digits", "--way", "3", "--shot", "1",
                                    "--tasks", "4", "--device", "cpu", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output.strip().splitlines()[-1])
    assert out["method"] == canonical_name(name) and 0 <= out["accuracy"] <= 1 and out["tasks"] == 4
    res = CliRunner().invoke(main, ["eval", "--threads", "1", str(tmp_path / "run"), "--lake-runs", str(lake_dir), "--device", "cpu", "--json"])
    assert res.exit_code == 0, res.output
    lake = json.loads(res.output.strip().splitlines()[-1])
    assert lake["trials"] == 6 and len(lake["per_run"]) == 2
    if name in ("knn", "1nn", "one_nn", "nearest_prototype"):
        assert lake["error"] == 0.0  # test items equal their training image: raw-pixel 1-NN is exact


@pytest.mark.parametrize("name,params", [("siamese", ["-p", "objective=contrastive"]), ("matching", ["-p", "fce=true"]), ("relation", [])])
def test_training_is_deterministic_given_the_seed(tmp_path, name, params):
    for out in ("a", "b"):
        res = _train(tmp_path, name, params, out)
        assert res.exit_code == 0, res.output
    a, b = checkpoint_weights(tmp_path / "a"), checkpoint_weights(tmp_path / "b")
    assert a.keys() == b.keys()
    assert all((a[k] == b[k]).all() for k in a)
