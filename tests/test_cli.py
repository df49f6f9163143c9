"""The CLI contract other tools rely on: train / eval (--json, --lake-runs) / predict / data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from fewshot.cli import main

from fixtures import make_lake_runs, make_omniglot


@pytest.fixture(scope="module")
def omniglot_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_omniglot(root / "omniglot", alphabets={"Alpha": 6, "Beta": 6, "Gamma": 5}, drawers=6, zipped=True)
    make_lake_runs(root, runs=2, zipped=True)
    return root


@pytest.fixture(scope="module")
def run_dir(omniglot_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "proto"
    res = invoke(["train", "--threads", "1", "--method", "protonet", "--dataset", "omniglot", "--split", "background",
                  "--data-dir", str(omniglot_dir), "--way", "5", "--shot", "1", "--query", "2", "--episodes", "6",
                  "--val-every", "3", "--val-tasks", "4", "--val-fraction", "0.3", "--seed", "0", "--out", str(out),
                  "--quiet", "--device", "cpu", "--json"])
    assert json.loads(res.output.strip().splitlines()[-1])["step"] == 6
    return out


def invoke(args, code=0):
    res = CliRunner().invoke(main, args, catch_exceptions=False, env={"XDG_CACHE_HOME": "/tmp/fewshot-test-cache"})
    assert res.exit_code == code, res.output
    return res


def test_train_writes_checkpoints_logs_and_curves(run_dir):
    names = {p.name for p in run_dir.iterdir()}
    assert {"best.json", "last.json", "metrics.jsonl", "curves.png"} <= names
    assert {json.loads((run_dir / f"{tag}.json").read_text())["files"]["weights"] for tag in ("best", "last")} <= names


def test_eval_prints_one_json_object_with_accuracy_ci_and_tasks(run_dir, omniglot_dir, tmp_path):
    args = ["eval", "--threads", "1", str(run_dir), "--dataset", "omniglot", "--split", "background", "--data-dir", str(omniglot_dir),
            "--way", "5", "--shot", "1", "--within", "alphabet", "--tasks", "7", "--seed", "3", "--json"]
    out = json.loads(invoke(args + ["--plot-episode", str(tmp_path / "ep.png")]).output)
    assert {"accuracy", "ci95", "tasks"} <= set(out) and out["tasks"] == 7 and 0.0 <= out["accuracy"] <= 1.0
    assert (tmp_path / "ep.png").stat().st_size > 0
    again = json.loads(invoke(args).output)
    assert again["accuracy"] == out["accuracy"]  # same seed, same tasks, same number


def test_eval_with_a_saved_task_file_repeats_exactly(run_dir, omniglot_dir, tmp_path):
    args = ["eval", "--threads", "1", str(run_dir), "--split", "background", "--data-dir", str(omniglot_dir), "--way", "3",
            "--tasks", "5", "--task-file", str(tmp_path / "tasks.json"), "--json"]
    first = json.loads(invoke(args).output)
    assert (tmp_path / "tasks.json").exists()
    assert json.loads(invoke(args + ["--seed", "99"]).output)["accuracy"] == first["accuracy"]


@pytest.mark.parametrize("name", ["all_runs.zip", "all_runs"])
def test_eval_lake_runs_reports_error_over_all_trials(run_dir, omniglot_dir, tmp_path, name):
    path = omniglot_dir / name
    if not path.exists():  # the extracted form
        import zipfile

        zipfile.ZipFile(omniglot_dir / "all_runs.zip").extractall(tmp_path / "all_runs")
        path = tmp_path / "all_runs"
    out = json.loads(invoke(["eval", "--threads", "1", str(run_dir), "--lake-runs", str(path), "--json"]).output)
    assert out["trials"] == 40 and 0.0 <= out["error"] <= 100.0


def test_predict_enrolls_support_folders(run_dir, tmp_path):
    from fixtures import glyph

    rng = np.random.default_rng(0)
    templates = {"ann": rng.random((105, 105)) < 0.1, "bob": rng.random((105, 105)) < 0.1}
    for name, tpl in templates.items():
        (tmp_path / "support" / name).mkdir(parents=True)
        glyph(rng, tpl, jitter=0).save(tmp_path / "support" / name / "1.png")
    glyph(rng, templates["bob"], jitter=0).save(tmp_path / "q.png")
    out = json.loads(invoke(["predict", "--threads", "1", str(run_dir), "--support", str(tmp_path / "support"), "--query",
                             str(tmp_path / "q.png"), "--json"]).output)
    pred = out["predictions"][0]
    assert pred["prediction"] == "bob" and abs(sum(pred["probabilities"].values()) - 1) < 1e-5
    strict = json.loads(invoke(["predict", "--threads", "1", str(run_dir), "--support", str(tmp_path / "support"), "--query",
                                str(tmp_path / "q.png"), "--reject-by", "probability", "--threshold", "1", "--json"]).output)
    assert strict["predictions"][0]["prediction"] == "unknown"
    cosine = json.loads(invoke(["predict", "--threads", "1", str(run_dir), "--support", str(tmp_path / "support"), "--query",
                                str(tmp_path / "q.png"), "-p", "distance=cosine", "--json"]).output)
    assert cosine["overrides"] == {"distance": "cosine"} and out["overrides"] == {}
    assert cosine["predictions"][0]["probabilities"] != pred["probabilities"]  # the override was used


def test_resume_continues_and_refusal_without_it(run_dir, omniglot_dir):
    base = ["train", "--threads", "1", "--dataset", "omniglot", "--data-dir", str(omniglot_dir), "--way", "5", "--shot", "1",
            "--query", "2", "--episodes", "8", "--val-fraction", "0.3", "--val-every", "3", "--val-tasks", "4",
            "--out", str(run_dir), "--quiet", "--json"]
    assert "--resume" in invoke(base, code=1).output
    assert "train_config.steps 6 (now 8)" in invoke(base + ["--resume"], code=1).output  # a longer run is a change
    assert json.loads(invoke(base + ["--resume", "--override"]).output.strip().splitlines()[-1])["step"] == 8


def test_missing_data_is_a_clear_error(tmp_path):
    res = invoke(["train", "--threads", "1", "--dataset", "omniglot", "--split", "evaluation", "--data-dir", str(tmp_path), "--out",
                  str(tmp_path / "r")], code=1)
    assert "images_evaluation.zip was not found" in res.output


@pytest.mark.parametrize("cmd", [[], ["train"], ["eval"], ["predict"], ["data"], ["data", "info"], ["data", "fetch"], ["demo"], ["methods"]])
def test_every_command_has_help(cmd):
    assert "Usage" in invoke(cmd + ["--help"]).output


def test_methods_lists_protonet():
    assert "protonet" in invoke(["methods"]).output


def test_train_on_digits_validates_on_two_way_tasks(tmp_path):
    """10 classes: 10% would hold out one class (1-way tasks, always right); at least 2 are held out."""
    out = tmp_path / "digits"
    invoke(["train", "--threads", "1", "--method", "protonet", "--dataset", "digits", "--way", "5", "--shot", "1", "--query", "3",
            "--episodes", "4", "--val-every", "2", "--val-tasks", "30", "--out", str(out), "--quiet", "--no-plots",
            "--device", "cpu"])
    info = json.loads((out / "best.json").read_text())
    assert info["validation"]["way"] == 2 and info["validation"]["num_classes"] == 2
    vals = [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "val_accuracy" in r]
    assert [r["step"] for r in vals] == [2, 4]
    assert all(r["val_accuracy"] < 1.0 and r["val_ci95"] > 0 for r in vals)



def test_train_precision_bfloat16_is_recorded_and_resumes(tmp_path):
    out = tmp_path / "bf16"
    base = ["train", "--threads", "1", "--method", "protonet", "--dataset", "digits", "--way", "5", "--shot", "1", "--query", "3",
            "--val-tasks", "0", "--out", str(out), "--quiet", "--no-plots", "--device", "cpu", "--precision", "bfloat16"]
    invoke(base + ["--episodes", "2"])
    assert json.loads((out / "last.json").read_text())["train_config"]["precision"] == "bfloat16"
    res = invoke(base[:-1] + ["float32", "--episodes", "2", "--resume"], code=1)
    assert "train_config.precision" in res.output  # a changed precision needs --override
    invoke(base + ["--episodes", "4", "--resume", "--override"])
    assert json.loads((out / "last.json").read_text())["state"]["step"] == 4
