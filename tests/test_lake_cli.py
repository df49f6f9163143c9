"""Lake et al.'s 20 one-shot runs for every trained image method: ``fewshot eval RUN --lake-runs
all_runs.zip --json`` (issue 13: "works for every trained run").

Each registered method trains a one-step run on the generated Omniglot fixture at 16 px (what is
checked is the path from a run directory to Lake's score, not the score), then is scored on two
generated runs in the exact ``all_runs.zip`` layout.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from fewshot.cli import main
from fewshot.methods.registry import METHODS

from fixtures import make_lake_runs, make_omniglot

#: method -> the option sets to train it with (each its own case)
CASES: dict[str, list[list[str]]] = {
    "protonet": [[]],
    "matching": [["-p", "fce=false"], ["-p", "fce=true"]],
    "relation": [["-p", "objective=ce"], ["-p", "objective=mse"]],
    "siamese": [[], ["-p", "objective=triplet"]],
    "knn": [[]], "one_nn": [[]], "nearest_prototype": [[]], "soft_kmeans": [[]],
    "maml": [[]], "fomaml": [[]], "anil": [[]], "meta_sgd": [[]], "reptile": [[]], "lstm_meta": [[]],
    # the sequence models classify a query after the labelled support was fed to them: Lake's 1-shot
    # score is their accuracy on a class's second instance, the number Santoro et al. report
    "mann": [[]], "lstm_seq": [[]], "metanet": [[]],
    "baseline": [[]], "baseline_pp": [[]], "finetune": [[]], "simpleshot": [[]], "discriminative_kshot": [[]],
}
#: method -> where else it is checked, and why
ELSEWHERE = {"bpl": "test_lake_runs_score_a_bpl_run: parse-and-refit takes ~0.1 CPU-s per (query, class) pair "
                    "even at its smallest options, so 3-way runs"}
ARGS = [(name, params) for name, sets in CASES.items() for params in sets]
FAST = ["--device", "cpu", "--threads", "1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("lake")
    make_omniglot(root / "omniglot", alphabets={"Alpha": 6, "Beta": 6, "Gamma": 5}, drawers=3, zipped=True)
    make_lake_runs(root, runs=2, zipped=True)
    return root


def invoke(args: list[str], code: int = 0):
    res = CliRunner().invoke(main, args, env={"XDG_CACHE_HOME": "/tmp/fewshot-test-cache"})
    assert res.exit_code == code, res.output
    assert code == 0 or isinstance(res.exception, SystemExit), res.exception  # an error message, no traceback
    return res


def train(data, out, method: str, *extra: str):
    """A one-step run: 20-way heads (``fewshot train``'s default way), 16-px images."""
    invoke(["train", "--method", method, "--data-dir", str(data), "--image-size", "16", "--shot", "1", "--query", "1",
            "--episodes", "1", "--batch-size", "8", "--val-fraction", "0", "--seed", "0", "--quiet", "--no-plots",
            "--out", str(out), *FAST, *extra])
    return out


def lake(run, data, *extra: str, code: int = 0, runs: str = "all_runs.zip"):
    res = invoke(["eval", str(run), "--lake-runs", str(data / runs), "--json", *FAST, *extra], code)
    return json.loads(res.output) if code == 0 else res.output


def check_score(out: dict, way: int = 20) -> None:
    assert out["protocol"] == "lake-20-runs" and out["trials"] == 2 * way and out["tasks"] == 2 and out["way"] == way
    assert len(out["per_run"]) == 2 and all(0.0 <= e <= 100.0 for e in out["per_run"])
    assert 0.0 <= out["error"] <= 100.0 and out["error"] == pytest.approx(np.mean(out["per_run"]), abs=1e-4)


def test_every_registered_method_has_a_case_or_a_reason():
    assert set(CASES) | set(ELSEWHERE) == set(METHODS) and not set(CASES) & set(ELSEWHERE)


@pytest.mark.parametrize("name,params", ARGS, ids=[n + "".join("-" + p for p in ps[1::2]) for n, ps in ARGS])
def test_lake_runs_score_every_trained_method(data, tmp_path, name, params):
    out = lake(train(data, tmp_path / "run", name, *params), data)
    check_score(out)
    assert out["method"] == name


def test_lake_runs_are_decoded_at_the_runs_size_channels_and_polarity(data, tmp_path):
    """A run trained on 105-px originals sees Lake's pages at 105 px (its MLP takes no other size); one
    trained on light RGB pictures sees them in RGB, and as drawn (dark on light) only when asked."""
    big = tmp_path / "big"
    invoke(["train", "--backbone", "mlp", "--data-dir", str(data), "--image-size", "105", "--way", "5", "--query", "1",
            "--episodes", "0", "--val-fraction", "0", "--quiet", "--no-plots", "--out", str(big), *FAST])
    check_score(lake(big, data))
    assert "drop --image-size to decode at 105 px" in lake(big, data, "--image-size", "28", code=1)
    rgb = tmp_path / "rgb"
    rng = np.random.default_rng(0)
    for c in range(3):
        (rgb / f"c{c}").mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(200, 256, (16, 16, 3), np.uint8)).save(rgb / f"c{c}" / f"{i}.png")
    invoke(["train", "--dataset", f"folder:{rgb}", "--image-size", "16", "--way", "2", "--query", "1", "--episodes", "0",
            "--val-fraction", "0", "--quiet", "--no-plots", "--out", str(tmp_path / "rgb_run"), *FAST])
    assert "--invert or --no-invert" in lake(tmp_path / "rgb_run", data, code=1)
    check_score(lake(tmp_path / "rgb_run", data, "--no-invert"))


def test_lake_runs_refuse_a_head_with_fewer_classes(data, tmp_path):
    run = train(data, tmp_path / "maml5", "maml", "--way", "5")  # a 5-way head cannot answer Lake's 20-way runs
    msg = lake(run, data, code=1)
    assert "20-way 1-shot" in msg and "way=20" in msg


def test_lake_runs_score_a_bpl_run(data, tmp_path):
    """BPL has nothing to train, but a zero-step run of it is a run: it is scored as any other."""
    make_lake_runs(tmp_path, runs=2, classes=3)
    run = tmp_path / "bpl"
    invoke(["train", "--method", "bpl", "-p", "strokes=generic", "-p", "parses=2", "-p", "walks=3", "-p", "steps=2",
            "-p", "workers=1", "--data-dir", str(data), "--way", "3", "--query", "1", "--episodes", "0",
            "--val-fraction", "0", "--quiet", "--no-plots", "--out", str(run), *FAST])
    out = lake(run, tmp_path, runs="all_runs")
    check_score(out, way=3)
    assert out["method"] == "bpl"
