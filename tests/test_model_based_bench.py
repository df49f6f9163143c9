"""benchmarks/model_based.py mann: a run stopped and resumed from its checkpoint (``--run-dir``)
continues exactly as one that never stopped; a checkpoint of other settings is refused."""

from __future__ import annotations

import argparse

import pytest
import torch
from safetensors.torch import load_file

from conftest import load_benchmark, make_blobs_dataset


@pytest.fixture()
def bench(monkeypatch, tmp_path):
    mod = load_benchmark("model_based")
    data = make_blobs_dataset(num_classes=12, per_class=10, size=8)
    monkeypatch.setattr(mod, "_omniglot", lambda image_size, heldout, rotations: data)
    monkeypatch.setattr(mod, "RESULTS", tmp_path / "results")
    (tmp_path / "results").mkdir()
    return mod


def _args(run_dir, max_iters: int, **over) -> argparse.Namespace:
    a = dict(way=3, instances=2, image_size=8, batch=2, hidden=8, slots=8, width=4, heads=1, lr=1e-3,
             optimizer="rmsprop", eval_every=2, val_episodes=4, test_episodes=4, seed=0, augment="characters",
             augment_per="class", cpu_seconds=1e9, wall_seconds=float("inf"), max_iters=max_iters, suffix="",
             run_dir=run_dir)
    return argparse.Namespace(**{**a, **over})


def _weights(run_dir):
    import json

    info = json.loads((run_dir / "mann" / "last.json").read_text())
    return load_file(str(run_dir / "mann" / info["files"]["weights"])), info["state"]


def test_a_resumed_mann_run_matches_an_uninterrupted_one(bench, tmp_path):
    whole = bench.run_mann_model(_args(tmp_path / "whole", 6), "mann")
    bench.run_mann_model(_args(tmp_path / "parts", 2), "mann")  # stops after its checkpoint at iteration 2
    resumed = bench.run_mann_model(_args(tmp_path / "parts", 6), "mann")
    assert resumed["iterations"] == whole["iterations"] == 6
    a, sa = _weights(tmp_path / "whole")
    b, sb = _weights(tmp_path / "parts")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert sa["aug_gen"] == sb["aug_gen"]
    assert [r["heldout_by_instance"] for r in whole["log"]] == [r["heldout_by_instance"] for r in resumed["log"]]
    assert whole["final_by_instance"] == resumed["final_by_instance"]


def test_resuming_with_other_settings_is_refused(bench, tmp_path):
    bench.run_mann_model(_args(tmp_path / "run", 2), "mann")
    with pytest.raises(SystemExit, match="other settings \\(lr\\)"):
        bench.run_mann_model(_args(tmp_path / "run", 4, lr=1e-2), "mann")


@pytest.mark.parametrize("n_items", [0, 3, 40, 41, 97, 300])
def test_the_report_shows_at_most_40_evaluations_evenly_spaced_with_the_last(bench, n_items):
    items = list(range(n_items))
    shown = bench._spaced(items, 40)
    assert len(shown) == min(n_items, 40) and shown == sorted(set(shown))
    assert not items or shown[-1] == items[-1]
    if n_items > 40:
        gaps = [b - a for a, b in zip(shown, shown[1:])]
        assert max(gaps) - min(gaps) <= 1
