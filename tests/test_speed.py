"""The fast paths give the results of the plain ones: cached-embedding evaluation, threads."""

from __future__ import annotations

import pytest
import torch

from fewshot.engine.evaluate import embeds_per_item, evaluate
from fewshot.methods import METHODS, build_method
from fewshot.nn.backbones import build_backbone, default_backbone_for
from fewshot.tasks.episodes import TaskSet
from fewshot.utils import default_threads, set_threads

from conftest import make_blobs_dataset

CACHED = {"protonet": {}, "nearest_prototype": {}, "knn": {"k": 3}, "one_nn": {}, "matching": {"fce": True},
          "simpleshot": {"centering": "support"}, "soft_kmeans": {"power": None}}


def test_embedding_only_methods_are_the_expected_ones():
    assert {n for n, c in METHODS.items() if c.embedding_only} == set(CACHED)


@pytest.mark.parametrize("name", sorted(CACHED))
def test_cached_embeddings_score_like_the_per_task_path(name):
    data = make_blobs_dataset(num_classes=10, per_class=8, size=16, noise=0.6, seed=1)
    torch.manual_seed(0)
    spec, kwargs = default_backbone_for(data.item_shape)
    method = build_method(name, build_backbone(spec, **kwargs), **CACHED[name])
    method.setup(data)
    tasks = TaskSet.generate(data, 5, 2, 3, tasks=12, seed=0)
    assert embeds_per_item(method)
    fast = evaluate(method, tasks.episodes(data), confusion=True)  # a task set: embeds each item once
    slow = evaluate(method, list(tasks.episodes(data)), confusion=True)  # a plain list: per task
    assert 0 < fast.accuracy < 1  # an untrained backbone on noisy blobs: some errors to agree on
    assert fast.per_task == slow.per_task and fast.confusion == slow.confusion


def test_batch_statistics_keep_the_per_task_path():
    from fewshot.methods.optimization import use_batch_statistics

    method = build_method("protonet", use_batch_statistics(build_backbone("conv4", in_channels=1)))
    assert not embeds_per_item(method)


def test_threads(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert set_threads(1) == 1 and torch.get_num_threads() == 1
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "1000000")
        assert default_threads() == 1  # never below one, never more than the share of the CPUs
        with pytest.raises(ValueError, match="at least 1"):
            set_threads(0)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("name", ["maml", "fomaml", "anil", "meta_sgd"])
def test_vectorised_meta_batch_gives_the_per_task_meta_gradient(name):
    from fewshot.tasks.episodes import EpisodeSampler

    data = make_blobs_dataset(num_classes=10, per_class=8, size=16, noise=0.4, seed=2)
    torch.manual_seed(0)
    method = build_method(name, build_backbone("conv4", in_channels=1, hidden=8), way=3, inner_steps=2)
    method.setup(data)
    sampler = EpisodeSampler(data, 3, 2, 3, seed=0)
    batch = [sampler.episode(i) for i in range(4)]
    grads, outs = [], []
    for vectorize in (False, True):
        method.vectorize_tasks = vectorize  # (off by default)
        method.zero_grad(set_to_none=True)
        outs.append(method.training_step(batch))
        grads.append({n: p.grad.clone() for n, p in method.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 2
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], rtol=1e-4, atol=1e-5, msg=n)
    assert float(outs[0].loss) == pytest.approx(float(outs[1].loss), rel=1e-5)
    assert float(outs[0].accuracy) == pytest.approx(float(outs[1].accuracy))
