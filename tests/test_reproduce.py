"""benchmarks/reproduce.py's bookkeeping (no benchmark is run): evaluation overrides of cached runs, the report."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from fewshot.engine.build import build_run
from fewshot.engine.trainer import TrainConfig
from fewshot.tasks.episodes import TaskSet

from conftest import load_benchmark, make_blobs_dataset


@pytest.fixture(scope="module")
def reproduce():
    return load_benchmark("reproduce")


@pytest.fixture(scope="module")
def cached_maml(tmp_path_factory):
    """A cached run as reproduce.py leaves it, trained when MAML's test-time default was 3 steps of 0.4."""
    out = tmp_path_factory.mktemp("reproduce") / "maml"
    train, test = make_blobs_dataset(num_classes=12, per_class=10).split_classes(0.34, seed=0)
    cfg = TrainConfig(steps=2, way=4, shot=1, query=2, val_tasks=0, checkpoint_every=2, device="cpu", progress=False)
    build_run("maml", train, cfg, out / "run", backbone=("mlp", {"in_features": 64, "sizes": [16]}),
              params={"test_inner_steps": 3, "test_inner_lr": 0.4}).fit()
    return out, test, {(3, 1): TaskSet.generate(test, 3, 1, 2, 4, seed=0)}


def test_a_cached_run_is_evaluated_with_the_current_test_time_defaults(reproduce, cached_maml, monkeypatch):
    out, test, tasksets = cached_maml
    (out / "eval.json").write_text(json.dumps({"tasks": 4, "3w1s": [1.0, 0.0]}))  # computed with the stored settings
    ev = reproduce.evaluate_one("maml", out, test, 4, tasksets)
    assert ev["overrides"] == {"test_inner_steps": 10, "test_inner_lr": 0.1} and ev["3w1s"] != [1.0, 0.0]
    assert ev["eval_options"] == {"scale_test_lr": False, "test_inner_lr": 0.1, "test_inner_steps": 10}
    assert json.loads((out / "eval.json").read_text()) == ev
    older = {**ev, "eval_options": {"test_inner_lr": 0.1, "test_inner_steps": 10}, "3w1s": [1.0, 0.0]}
    (out / "eval.json").write_text(json.dumps(older))  # before scale_test_lr existed: same overrides, other options
    redone = reproduce.evaluate_one("maml", out, test, 4, tasksets)
    assert redone["3w1s"] == ev["3w1s"] and redone["eval_options"] == ev["eval_options"]
    monkeypatch.setattr(reproduce, "EVAL_OPTIONS", {"maml": {"test_inner_steps": 3}})  # another setting: recomputed
    again = reproduce.evaluate_one("maml", out, test, 4, tasksets)
    assert again["overrides"] == {"test_inner_lr": 0.1}
    monkeypatch.setattr("fewshot.engine.evaluate.evaluate", lambda *a, **k: pytest.fail("the cache was not used"))
    assert reproduce.evaluate_one("maml", out, test, 4, tasksets) == again


def test_the_report_names_the_overrides_and_keeps_the_notes(reproduce, tmp_path, monkeypatch):
    notes = tmp_path / "reproduce_3min_notes.md"  # a budget other than the protocol's has its own page
    notes.write_text("## Notes on this run\n\n- written by hand.\n")
    monkeypatch.setattr(reproduce, "RESULTS", tmp_path)
    tr = {"steps": 5, "planned_steps": 9, "stopped": "max_cpu_seconds=270 spent", "cpu_s": 271.0, "curve": [[5, 271.0, 0.9]],
          "load_start": [1, 1, 1], "load_end": [1, 1, 1]}
    ev = {"tasks": 4, "overrides": {"test_inner_steps": 10}, "5w1s": [90.0, 1.0]}
    args = SimpleNamespace(argv=["--eval-only"], tasks=4, budget_cpu_min=3, threads=1, val_tasks=5,
                           methods=["maml", "protonet"])
    text = reproduce.report(args, [("maml", tr, ev)])
    assert "Command: `python benchmarks/reproduce.py`\n" in text  # the page's command trains and evaluates: no --eval-only
    assert "| maml (eval: test_inner_steps=10) | 5 of 9 (stopped: CPU cap) | 271 | 4 | 90.0 ± 1.0 |" in text
    assert "(eval: ...): evaluated with these options instead of the ones stored in the checkpoint" in text
    assert "Not run at this budget (no record): protonet." in text
    assert text.endswith("\n\n## Notes on this run\n\n- written by hand.\n")
    assert (tmp_path / "reproduce_3min.md").read_text() == text
    assert reproduce.report(args, [("maml", tr, ev)]) == text  # regenerating keeps the notes, once

    # the protocol's budget writes reproduce.md, which points to the shorter run's page, and leaves that page alone
    protocol = reproduce.report(SimpleNamespace(**{**vars(args), "budget_cpu_min": 30}), [("maml", tr, ev)])
    assert (tmp_path / "reproduce.md").read_text() == protocol
    assert "Other budgets: `reproduce_3min.md`." in protocol and "written by hand" not in protocol
    assert (tmp_path / "reproduce_3min.md").read_text() == text


def test_report_only_builds_the_table_from_the_records_and_plots_the_rows_with_a_curve(reproduce, tmp_path, monkeypatch):
    monkeypatch.setattr(reproduce, "RESULTS", tmp_path)
    monkeypatch.setattr(reproduce, "RECORDS", tmp_path / "reproduce")
    records = tmp_path / "reproduce" / "budget3min_seed0"
    records.mkdir(parents=True)
    load = {"load_start": [1.0, 1.0, 1.0], "load_end": [2.0, 2.0, 2.0]}
    # a record as main writes it, and one reconstructed from an earlier table (no curve, no eval options)
    reproduce.save_record(records / "protonet.json", {"steps": 40, "planned_steps": 40, "stopped": None, "cpu_s": 170.2,
                                                      "curve": [[20, 80.0, 0.9], [40, 170.0, 0.95]], **load},
                          {"tasks": 10, "overrides": {}, "eval_options": {}, "5w1s": [95.0, 1.0], "20w5s": [90.0, 2.0]})
    (records / "maml.json").write_text(json.dumps({"train": {"steps": 787, "stopped": None, "cpu_s": 195, **load},
                                                   "eval": {"tasks": 100, "overrides": {"test_inner_steps": 10}, "5w1s": [93.2, 1.4]},
                                                   "source": "reconstructed from reproduce.md"}))
    cached = tmp_path / "runs" / "budget3min_seed0" / "matching"  # a run cached before records were written
    cached.mkdir(parents=True)
    (cached / "train.json").write_text(json.dumps({"steps": 30, "stopped": None, "cpu_s": 160.0, "curve": [[30, 160.0, 0.8]], **load}))
    (cached / "eval.json").write_text(json.dumps({"tasks": 10, "overrides": {}, "5w1s": [85.0, 3.0]}))
    argv = ["reproduce.py", "--report-only", "--budget-cpu-min", "3", "--threads", "1", "--out", str(tmp_path / "runs"),
            "--methods", "protonet,maml,matching,siamese"]
    monkeypatch.setattr("sys.argv", argv)
    reproduce.main()
    text = (tmp_path / "reproduce_3min.md").read_text()
    assert "| protonet | 40 | 170 | 10 | 95.0 ± 1.0 | – | – | 90.0 ± 2.0 |" in text
    assert "| maml (eval: test_inner_steps=10) | 787 | 195 | 100 | 93.2 ± 1.4 | – | – | – |" in text
    assert "| matching | 30 | 160 | 10 | 85.0 ± 3.0 |" in text
    assert json.loads((records / "matching.json").read_text())["eval"]["5w1s"] == [85.0, 3.0]
    assert "Not run at this budget (no record): siamese." in text
    assert "Not in it (their records, reconstructed from an earlier table, have no learning curve): maml." in text
    assert (tmp_path / "reproduce_3min_5w1s_vs_cpu.png").exists()

    # only reconstructed records: the plot drawn from the runs is kept, not replaced by an empty one
    (tmp_path / "reproduce_3min_5w1s_vs_cpu.png").write_bytes(b"the runs' plot")
    monkeypatch.setattr("sys.argv", [*argv[:-1], "maml"])
    reproduce.main()
    assert (tmp_path / "reproduce_3min_5w1s_vs_cpu.png").read_bytes() == b"the runs' plot"
    assert "the plot was not redrawn" in (tmp_path / "reproduce_3min.md").read_text()
