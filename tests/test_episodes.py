"""Specification of episodes, samplers and saved task sets."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st

from fewshot.tasks.episodes import EpisodeSampler, TaskSet, assemble

from conftest import make_blobs_dataset

DATA = make_blobs_dataset(num_classes=12, per_class=10, groups=3)


@settings(max_examples=40, deadline=None)
@given(way=st.integers(1, 12), shot=st.integers(1, 5), query=st.integers(0, 5), seed=st.integers(0, 10**6),
       index=st.integers(0, 10**6))
def test_episode_shapes_labels_and_disjointness(way, shot, query, seed, index):
    ep = EpisodeSampler(DATA, way, shot, query, seed=seed).episode(index)
    assert ep.support_x.shape == (way * shot, 1, 8, 8) and ep.query_x.shape == (way * query, 1, 8, 8)
    assert ep.support_y.tolist() == [c for c in range(way) for _ in range(shot)]
    assert ep.query_y.tolist() == [c for c in range(way) for _ in range(query)]
    assert len(set(ep.classes.tolist())) == way
    assert not set(ep.support_idx.tolist()) & set(ep.query_idx.tolist())
    # every item belongs to the class its episode label points at
    assert torch.equal(DATA.y[ep.support_idx], ep.classes[ep.support_y])
    assert torch.equal(DATA.y[ep.query_idx], ep.classes[ep.query_y])
    assert ep.support_x.dtype == torch.float32 and 0.0 <= float(ep.support_x.min()) <= float(ep.support_x.max()) <= 1.0


@settings(max_examples=25, deadline=None)
@given(way=st.integers(1, 4), seed=st.integers(0, 1000), index=st.integers(0, 1000))
def test_within_group_episodes_stay_in_one_group(way, seed, index):
    ep = EpisodeSampler(DATA, way, 1, 2, within="group", seed=seed).episode(index)
    assert len(set(DATA.groups[ep.classes].tolist())) == 1


def test_episodes_depend_only_on_seed_and_index():
    a = EpisodeSampler(DATA, 5, 2, 3, seed=7)
    b = EpisodeSampler(DATA, 5, 2, 3, seed=7)
    assert a.task(41) == b.task(41) and a.task(41) != a.task(42)
    assert a.task(41) != EpisodeSampler(DATA, 5, 2, 3, seed=8).task(41)


@pytest.mark.parametrize("kwargs, message", [
    ({"way": 13, "shot": 1, "query": 1}, "needs 13 classes"),
    ({"way": 2, "shot": 6, "query": 5}, "at least 11 items"),
    ({"way": 5, "shot": 1, "query": 1, "within": "group"}, "largest has 4"),
    ({"way": 0, "shot": 1, "query": 1}, "way must be at least 1"),
])
def test_impossible_requests_say_what_to_change(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EpisodeSampler(DATA, **kwargs)


def test_task_set_round_trips_through_json(tmp_path):
    ts = TaskSet.generate(DATA, 4, 2, 3, tasks=5, within="group", seed=1)
    ts.save(tmp_path / "tasks.json")
    back = TaskSet.load(tmp_path / "tasks.json")
    assert back.tasks == ts.tasks and back.meta == ts.meta
    for t, ep in zip(back.tasks, back.episodes(DATA)):
        assert torch.equal(ep.support_x, assemble(DATA, t).support_x)


def test_task_set_refuses_another_dataset(tmp_path):
    ts = TaskSet.generate(DATA, 2, 1, 1, tasks=2)
    with pytest.raises(ValueError, match="made for a dataset of 120 items"):
        list(ts.episodes(make_blobs_dataset(num_classes=3, per_class=10)))

