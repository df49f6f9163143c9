"""Specification of evaluation: confidence intervals, task sets, Lake's protocol."""

from __future__ import annotations

import math

import pytest
import torch

from fewshot.nn.backbones import Identity
from fewshot.data import load_lake_runs
from fewshot.tasks.episodes import TaskSet, lake_episodes
from fewshot.engine.evaluate import evaluate
from fewshot.methods import ProtoNet
from fewshot.utils import mean_ci95

from conftest import make_blobs_dataset
from fixtures import make_lake_runs


def test_mean_ci95_is_196_standard_errors():
    mean, ci = mean_ci95([0.0, 1.0, 1.0, 0.0])
    assert mean == 0.5 and ci == pytest.approx(1.96 * math.sqrt(1 / 3) / 2)
    assert mean_ci95([0.7]) == (0.7, 0.0)
    with pytest.raises(ValueError):
        mean_ci95([])


def test_raw_pixel_prototypes_solve_well_separated_blobs():
    data = make_blobs_dataset(noise=0.05)
    res = evaluate(ProtoNet(Identity()), TaskSet.generate(data, 5, 1, 3, tasks=20, seed=0).episodes(data), confusion=True)
    assert res.accuracy == 1.0 and res.ci95 == 0.0 and res.tasks == 20 and (res.way, res.shot) == (5, 1)
    assert res.error == 0.0 and res.trials == 20 * 15
    conf = torch.tensor(res.confusion)
    assert conf.sum() == 20 * 15 and conf.trace() == conf.sum() and conf.shape[0] <= data.num_classes


def test_error_pools_all_trials_and_accuracy_averages_tasks():
    data = make_blobs_dataset(noise=1.5, seed=3)  # hard: some tasks err
    res = evaluate(ProtoNet(Identity()), TaskSet.generate(data, 5, 1, 3, tasks=30, seed=0).episodes(data))
    assert res.error == pytest.approx(100 * (1 - res.accuracy))  # equal-sized tasks: the two agree
    assert 0 < res.error < 100 and res.ci95 > 0
    with pytest.raises(ValueError, match="no episodes"):
        evaluate(ProtoNet(Identity()), [])


def test_lake_protocol_error_rate(tmp_path):
    runs = load_lake_runs(make_lake_runs(tmp_path, runs=3))
    res = evaluate(ProtoNet(Identity()), lake_episodes(runs))  # identical test/training images: no errors
    assert res.error == 0.0 and res.trials == 60 and res.per_task == [1.0] * 3 and (res.way, res.shot) == (20, 1)
    runs[0].query_labels = (runs[0].query_labels + 1) % 20  # scramble one run's answers: all wrong now
    res = evaluate(ProtoNet(Identity()), lake_episodes(runs))
    assert res.error == pytest.approx(100 / 3) and res.per_task == [0.0, 1.0, 1.0]


def test_lake_runs_and_task_sets_are_the_same_episodes(tmp_path):
    """A Lake run is a 20-way 1-shot episode: evaluating it equals evaluating that episode by hand."""
    run = load_lake_runs(make_lake_runs(tmp_path, runs=1))[0]
    (ep,) = list(lake_episodes([run]))
    assert ep.support_x.shape == run.support.shape and ep.support_x.max() <= 1.0 and ep.way == 20
    assert torch.equal(ep.support_y, torch.arange(20)) and torch.equal(ep.query_y, run.query_labels)
