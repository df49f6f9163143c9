"""Specification of evaluation: confidence intervals, task sets, Lake's protocol."""

from __future__ import annotations

import math

import pytest
import torch

from fewshot.nn.backbones import Identity
from fewshot.data import load_lake_runs
from fewshot.tasks.episodes import TaskSet
from fewshot.engine.evaluate import evaluate, evaluate_lake
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
    res = evaluate(ProtoNet(Identity()), data, TaskSet.generate(data, 5, 1, 3, tasks=20, seed=0), confusion=True)
    assert res.accuracy == 1.0 and res.ci95 == 0.0 and res.tasks == 20
    conf = torch.tensor(res.confusion)
    assert conf.sum() == 20 * 15 and conf.trace() == conf.sum()


def test_lake_protocol_error_rate(tmp_path):
    runs = load_lake_runs(make_lake_runs(tmp_path, runs=3))
    res = evaluate_lake(ProtoNet(Identity()), runs)  # identical test/training images: no errors
    assert res.error == 0.0 and res.trials == 60 and res.per_run == [0.0] * 3
    for r in runs:  # scramble one run's answers: its items are now all wrong
        r.query_labels = (r.query_labels + 1) % 20
        break
    assert evaluate_lake(ProtoNet(Identity()), runs).error == pytest.approx(100 / 3)
