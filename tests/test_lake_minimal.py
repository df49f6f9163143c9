"""benchmarks/lake_minimal.py's bookkeeping (no benchmark is run): the committed records and the table built from them."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from conftest import load_benchmark


@pytest.fixture(scope="module")
def lake():
    return load_benchmark("lake_minimal")


def run_record(setting: str, config: str, seed: int, within_acc: float, cpu: float = 700.4) -> dict:
    """A record as ``run_one`` writes it (commands shortened)."""
    ev = {name: {"acc": acc, "ci95": 0.007, "cpu_s": 30.0, "cmd": f"fewshot eval ({name})"}
          for name, acc in [("20w1s within alphabet", within_acc), ("20w1s", 0.88), ("5w1s", 0.961)]}
    return {"setting": setting, "config": config, "seed": seed, "train_cmd": "fewshot train ...", "train_cpu_s": cpu,
            "train_wall_s": 900.0, "threads": 2, "eval": ev, "load": [[1.0, 1.1, 1.2], [2.0, 2.1, 2.2]], "date": "2026-12-03 10:00 UTC"}


def test_the_table_is_built_from_the_records_reconstructed_ones_included(lake, tmp_path, monkeypatch):
    monkeypatch.setattr(lake, "RESULTS", tmp_path)  # no notes file
    records = tmp_path / "lake_minimal"
    records.mkdir()
    (records / "augment-s1.json").write_text(json.dumps(run_record("minimal", "augment", 1, 0.8)))
    (records / "original-defaults-s0.json").write_text(json.dumps(run_record("original", "defaults", 0, 0.84)))
    # a record rebuilt from an earlier table: only the numbers the table showed
    reconstructed = {"setting": "minimal", "config": "defaults", "seed": 0, "train_cpu_s": 744, "threads": 2,
                     "eval": {"20w1s within alphabet": {"acc": 0.7657, "ci95": 0.0077}, "20w1s": {"acc": 0.8654},
                              "5w1s": {"acc": 0.9573}},
                     "load": [[1.4, None, None], [5.9, None, None]], "source": "reconstructed from lake_minimal.md"}
    (records / "defaults-s0.json").write_text(json.dumps(reconstructed))
    (records / "ensemble-augment-0_1-copies1.json").write_text(json.dumps(
        {"config": "augment", "seeds": [0, 1], "copies": 1, "cpu_s": 12.3, "threads": 2, "load": [[4.1, None, None], [5.4, None, None]],
         "single_error": [20.63, 20.0], "ensemble_error": 16.98, "ensemble_ci95": 0.63, "setting": "minimal"}))
    (records / "ensemble-augment-0-copies1-ttacharacters.json").write_text(json.dumps(
        {"config": "augment", "seeds": [0], "copies": 1, "tta": "characters", "cpu_s": 99.0, "threads": 1,
         "load": [[1.0, None, None], [1.2, None, None]], "single_error": [14.0], "ensemble_error": 14.0, "ensemble_ci95": 0.56,
         "setting": "minimal"}))
    for name, setting in (("ensemble-original-augment-0-copies1.json", "original"), ("ensemble-within-0-copies1.json", "minimal")):
        (records / name).write_text(json.dumps(  # by file name, the minimal one would come after the original one
            {"config": name.split("-")[-3], "seeds": [0], "copies": 1, "cpu_s": 5.0, "threads": 2,
             "load": [[1.0, None, None], [1.1, None, None]], "single_error": [15.0], "ensemble_error": 15.0,
             "ensemble_ci95": 0.6, "setting": setting}))
    text = lake.report(records)
    rows = [line for line in text.splitlines() if "`" in line and line.startswith(("| minimal", "| original"))]  # runs, not ensembles
    assert rows == [  # setting, then CONFIGS order, then seed
        "| minimal | defaults | 0 | `-` | 744 | 2 | 1.4 → 5.9 | 23.43 ± 0.77 | 86.54 | 95.73 |",
        "| minimal | augment | 1 | `--augment characters` | 700 | 2 | 1.0 → 2.0 | 20.00 ± 0.70 | 88.00 | 96.10 |",
        "| original | defaults | 0 | `-` | 700 | 2 | 1.0 → 2.0 | 16.00 ± 0.70 | 88.00 | 96.10 |"]
    assert "| minimal: augment | 1 | 20.00 | 20.00 | 20.00 |" in text
    assert "| minimal | augment | 0,1 | 1 | - | 20.63, 20.00 | 16.98 ± 0.63 | 12 | 2 | 4.1 → 5.4 |" in text  # before --tta
    assert "| minimal | augment | 0 | 1 | characters | 14.00 | 14.00 ± 0.56 | 99 | 1 | 1.0 → 1.2 |" in text
    ensembles = [line for line in text.split("## Ensembles")[1].splitlines() if line.startswith(("| minimal |", "| original |"))]
    assert [line.split(" | ")[:2] for line in ensembles] == [  # by setting, then file name
        ["| minimal", "augment"], ["| minimal", "augment"], ["| minimal", "within"], ["| original", "augment"]]


def test_cached_runs_are_recorded_and_a_recorded_run_is_not_run_again(lake, tmp_path, monkeypatch):
    monkeypatch.setattr(lake, "RECORDS", tmp_path / "records")
    cache = tmp_path / "cache"
    (cache / "augment-s0").mkdir(parents=True)
    (cache / "augment-s0" / "lake_minimal.json").write_text(json.dumps(run_record("minimal", "augment", 0, 0.8)))
    (cache / "ensemble-augment-0-copies1.json").write_text(json.dumps({"config": "augment"}))
    lake.record_runs(cache)
    assert sorted(p.name for p in (tmp_path / "records").iterdir()) == ["augment-s0.json", "ensemble-augment-0-copies1.json"]
    assert (tmp_path / "records" / "augment-s0.json").read_text() == (cache / "augment-s0" / "lake_minimal.json").read_text()

    monkeypatch.setattr(lake, "_run", lambda cmd: pytest.fail(f"ran {cmd}"))
    args = SimpleNamespace(out=str(tmp_path / "fresh-machine"), setting="minimal")
    assert lake.run_one("augment", 0, args)["eval"]["20w1s within alphabet"]["acc"] == 0.8  # the record, no training
    with pytest.raises(SystemExit, match="train it first"):  # an ensemble needs the checkpoints the record lacks
        lake.ensemble_one("augment", [0], 1, SimpleNamespace(**vars(args), threads=1, tasks=2, data_dir=str(tmp_path), tta=None))


def test_the_views_page_marks_the_preset_and_states_the_budget():
    views = load_benchmark("lake_tta_views")
    assert views.PRESET in views.CANDIDATES and "none" in views.CANDIDATES
    rec = {"run": "/x/wide-s2", "val_tasks": 500, "tasks": 1000, "cpu_s": 771.0, "threads": 1, "date": "2026-12-04 08:49 UTC",
           "load": [[2.3, 0, 0], [2.0, 0, 0]], "rows": [{"views": "none", "validation": [19.62, 1.1], "test": [16.07, 0.62]},
                                                       {"views": views.PRESET, "validation": [17.39, 1.06], "test": [14.06, 0.58]}]}
    text = views.report(rec)
    assert f"| {views.PRESET} (the preset) | 17.39 ± 1.06 | 14.06 ± 0.58 |" in text and "| none | 19.62 ± 1.10 | 16.07 ± 0.62 |" in text
    assert "771 CPU-s in all, 1 thread(s), load 2.3 → 2.0" in text
