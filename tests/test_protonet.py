"""Specification of the estimator interface through ProtoNet, distances and prototypes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fewshot.nn.backbones import Conv4, Identity, MLP, output_dim
from fewshot.nn.distances import class_means, pairwise_logits
from fewshot.tasks.episodes import EpisodeSampler
from fewshot.methods import ProtoNet, build_method, check_support

from conftest import make_blobs_dataset


def test_prototypes_are_class_means_and_logits_negative_squared_distances():
    support = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [0.0, 6.0]])
    labels = torch.tensor([0, 0, 1, 1])
    m = ProtoNet(Identity()).fit(support, labels)
    assert torch.equal(m.prototypes, torch.tensor([[1.0, 0.0], [0.0, 5.0]]))
    q = torch.tensor([[1.0, 1.0]])
    assert torch.allclose(m.scores(q), torch.tensor([[-1.0, -17.0]]))
    assert m.predict(q).tolist() == [0]
    p = m.predict_proba(q)
    assert torch.allclose(p.sum(-1), torch.ones(1)) and torch.allclose(p, torch.softmax(torch.tensor([[-1.0, -17.0]]), -1))


def test_cosine_and_dot_distances():
    q, k = torch.tensor([[3.0, 4.0]]), torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert torch.allclose(pairwise_logits(q, k, "cosine"), torch.tensor([[0.6, 0.8]]))
    assert torch.allclose(pairwise_logits(q, k, "dot"), torch.tensor([[3.0, 8.0]]))
    with pytest.raises(ValueError, match="same D"):
        pairwise_logits(q, torch.zeros(2, 3))


def test_cosine_protonet_scales_logits_with_a_learnable_temperature():
    m = ProtoNet(Identity(), distance="cosine")
    assert m.scale.requires_grad and m.scale.item() == 10.0
    m.fit(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 1]))
    assert torch.allclose(m.scores(torch.tensor([[1.0, 0.0]])), torch.tensor([[10.0, 0.0]]))


def test_threshold_turns_unsure_predictions_into_unknown():
    m = ProtoNet(Identity()).fit(torch.tensor([[0.0], [1.0]]), torch.tensor([0, 1]))
    pred = m.predict(torch.tensor([[0.5], [-3.0]]), threshold=0.9)
    assert pred.tolist() == [-1, 0]


@pytest.mark.parametrize("x, y, message", [
    (torch.zeros(3, 2), torch.tensor([0, 1]), "3 items but support_y has 2"),
    (torch.zeros(2, 2), torch.tensor([0, 2]), r"classes without examples: \[1\]"),
    (torch.zeros(2, 2), torch.tensor([[0, 1]]), "must be 1-D"),
    (torch.zeros(2, 2), torch.tensor([0.0, 1.0]), "integer class indices"),
])
def test_bad_support_sets_are_explained(x, y, message):
    with pytest.raises(ValueError, match=message):
        check_support(x, y)


def test_class_means_rejects_missing_classes():
    with pytest.raises(ValueError, match="no support examples"):
        class_means(torch.zeros(2, 3), torch.tensor([0, 0]), num_classes=2)


def test_episode_loss_equals_fit_then_score_in_eval_mode():
    torch.manual_seed(0)
    ep = EpisodeSampler(make_blobs_dataset(size=16), 3, 2, 2, seed=0).episode(0)
    m = ProtoNet(Conv4(hidden=8)).eval()
    with torch.no_grad():
        joint = m.loss(ep)
        separate = F.cross_entropy(m.fit(ep.support_x, ep.support_y).scores(ep.query_x), ep.query_y)
    assert torch.allclose(joint.loss, separate, atol=1e-5)


def test_backbone_output_sizes():
    assert output_dim(Conv4(), (1, 28, 28)) == 64
    assert output_dim(Conv4(in_channels=3), (3, 84, 84)) == 1600
    assert output_dim(MLP(64, (32, 16)), (1, 8, 8)) == 16


def test_registry_builds_by_name_and_rejects_unknown_options():
    assert isinstance(build_method("protonet", Identity(), distance="cosine"), ProtoNet)
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        build_method("nope")
    with pytest.raises(ValueError, match="unknown option 'colour' for method 'protonet'; valid options: distance, scale, learn_scale"):
        build_method("protonet", Identity(), colour="red")
    with pytest.raises(ValueError, match="unknown distance"):
        ProtoNet(Identity(), distance="manhattan")
