"""kNN / 1-NN / nearest prototype: agreement with scikit-learn, votes, the NCA loss, training-free runs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.neighbors import KNeighborsClassifier

from fewshot.tasks.episodes import EpisodeSampler, TaskSet
from fewshot.engine.evaluate import evaluate
from fewshot.methods import KNN, NearestPrototype, OneNN, build_method


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 7), way=st.integers(2, 5),
       distance=st.sampled_from(["euclidean", "cosine"]), weights=st.sampled_from(["uniform", "distance"]))
def test_knn_predicts_like_scikit_learn(seed, k, way, distance, weights):
    rng = np.random.default_rng(seed)
    support_y = np.concatenate([np.arange(way), rng.integers(0, way, size=8)])
    support = rng.normal(size=(len(support_y), 4)).astype(np.float32)
    query = rng.normal(size=(12, 4)).astype(np.float32)
    ref = KNeighborsClassifier(n_neighbors=min(k, len(support_y)), metric=distance, weights=weights,
                               algorithm="brute").fit(support, support_y)
    ours = KNN(k=k, distance=distance, weights=weights).fit(torch.from_numpy(support), torch.from_numpy(support_y))
    np.testing.assert_array_equal(ours.predict(torch.from_numpy(query)).numpy(), ref.predict(query))
    np.testing.assert_allclose(ours.predict_proba(torch.from_numpy(query)).numpy(), ref.predict_proba(query), atol=1e-5)


def test_votes_are_shares_of_the_k_neighbours():
    support = torch.tensor([[0.0], [1.0], [2.0], [10.0]])
    labels = torch.tensor([0, 0, 1, 1])
    m = KNN(k=3).fit(support, labels)
    proba = m.predict_proba(torch.tensor([[0.9], [9.0]]))
    torch.testing.assert_close(proba, torch.tensor([[2 / 3, 1 / 3], [1 / 3, 2 / 3]]))
    assert KNN(k=50).fit(support, labels).predict(torch.tensor([[0.0]])).tolist() == [0]  # k capped at 4: a 2-2 tie -> class 0


def test_one_nn_recognises_its_own_support_and_ignores_k():
    x = torch.randn(6, 1, 5, 5)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    assert OneNN().fit(x, y).predict(x).tolist() == y.tolist()
    assert "k" not in OneNN().config()


def test_nearest_prototype_uses_class_means():
    support = torch.tensor([[0.0], [4.0], [3.0]])
    labels = torch.tensor([0, 0, 1])  # class 0 mean 2.0, class 1 at 3.0
    m = NearestPrototype().fit(support, labels)
    # 1-NN would say class 1 for 3.9 (nearest item 4.0 is class 0!) — check the difference
    assert m.predict(torch.tensor([[2.4], [2.6], [3.9]])).tolist() == [0, 1, 1]
    assert OneNN().fit(support, labels).predict(torch.tensor([[3.9]])).tolist() == [0]


def test_nca_loss_hand_computed():
    from fewshot.tasks.episodes import Episode

    ep = Episode(torch.tensor([[0.0], [2.0]]), torch.tensor([0, 1]), torch.tensor([[0.5]]), torch.tensor([0]),
                 torch.tensor([7, 9]), torch.arange(2), torch.arange(1))
    out = KNN(k=1).loss(ep)  # logits -0.5 and -1.5 (euclidean distances)
    assert out.loss.item() == pytest.approx(math.log(1 + math.exp(-1.0)), rel=1e-5)


def test_bad_options_fail_clearly():
    with pytest.raises(ValueError, match="distance"):
        KNN(distance="manhattan")
    with pytest.raises(ValueError, match="k must"):
        KNN(k=0)
    with pytest.raises(ValueError, match="unknown option 'k' for method 'one_nn'; valid options: distance, temperature"):
        build_method("1nn", None, k=3)


def test_raw_pixel_knn_beats_chance_and_trains_without_parameters(blobs, tmp_path):
    from fewshot.engine.checkpoint import load_checkpoint
    from fewshot.engine.build import build_run
    from fewshot.engine.config import TrainConfig

    tasks = TaskSet.generate(blobs, way=5, shot=1, query=3, tasks=20, seed=0)
    assert evaluate(KNN(k=1), tasks.episodes(blobs)).accuracy > 0.8
    cfg = TrainConfig(steps=10, way=5, shot=1, query=3, val_tasks=5, progress=False, device="cpu")
    build_run("knn", blobs, cfg, tmp_path / "run", params={"k": 1}, val_data=blobs).fit()
    method, info = load_checkpoint(tmp_path / "run")
    assert info["method"] == "knn" and info["state"]["step"] == 0
    assert evaluate(method, tasks.episodes(blobs)).accuracy == evaluate(KNN(k=1), tasks.episodes(blobs)).accuracy


def test_knn_on_a_trained_backbone_learns(blobs):
    from fewshot.nn.backbones import MLP

    torch.manual_seed(0)
    m = KNN(backbone=MLP(64, (32, 16)), k=1)
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    sampler = EpisodeSampler(blobs, 4, 2, 3, seed=0)
    first = None
    for i in range(30):
        out = m.loss(sampler.episode(i))
        first = first if first is not None else out.loss.item()
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert out.loss.item() < first
