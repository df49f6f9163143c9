"""Label propagation (fewshot.nn.propagation): labels travel along the k-NN graph of the pool."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fewshot.nn.propagation import knn_graph, label_propagation


def arc(start_deg: float, stop_deg: float, step_deg: float) -> torch.Tensor:
    """Points on the unit circle (cosine similarity is the angle's cosine) ``[N, 2]``."""
    a = torch.arange(start_deg, stop_deg + 1e-9, step_deg) * math.pi / 180
    return torch.stack([a.cos(), a.sin()], 1)


def test_labels_follow_the_chain_not_the_nearest_labelled_item():
    # Class 0 is a chain from 0 to 120 degrees labelled only at 0; class 1 lies at 150-180, labelled
    # at 150. The chain's far end is 30 degrees from class 1's label and 120 from its own: the nearest
    # labelled item (a prototype) says 1, the graph, whose neighbours sit 4 degrees apart, says 0.
    chain, other = arc(0, 120, 4), arc(150, 180, 4)
    x = torch.cat([chain[:1], other[:1], chain[1:], other[1:]])
    y = torch.tensor([0, 1])
    proba = label_propagation(x, y, 2, k=3)
    n_chain = len(chain) - 1
    assert proba.shape == (len(x) - 2, 2)
    assert (proba[:n_chain, 0] > 0.5).all() and (proba[n_chain:, 1] > 0.5).all()
    far_end = chain[-1]
    assert (far_end @ other[0]) > (far_end @ chain[0])  # the premise: the wrong label is nearer


def test_an_item_the_graph_never_reaches_gets_uniform_probabilities():
    # Two labelled clusters plus an unlabelled pair pointing away from both: with k=1 the pair
    # are each other's only neighbours, so no label reaches them.
    x = torch.cat([arc(0, 4, 2), arc(90, 94, 2), arc(225, 226, 1)])
    proba = label_propagation(x[[0, 3, 1, 2, 4, 5, 6, 7]], torch.tensor([0, 1]), 2, k=1)
    torch.testing.assert_close(proba[-2:], torch.full((2, 2), 0.5))


@settings(max_examples=25, deadline=None)
@given(n=st.integers(6, 40), classes=st.integers(2, 4), k=st.integers(1, 5), seed=st.integers(0, 10_000))
def test_probabilities_are_distributions_over_the_classes(n, classes, k, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n + classes, 8, generator=g)
    y = torch.arange(classes)
    proba = label_propagation(x, y, classes, k=k)
    assert proba.shape == (n, classes) and (proba >= 0).all()
    torch.testing.assert_close(proba.sum(1), torch.ones(n))


def test_knn_graph_is_symmetric_without_self_loops():
    x = torch.randn(30, 5, generator=torch.Generator().manual_seed(0))
    w = knn_graph(x, 4).to_dense()
    torch.testing.assert_close(w, w.T)
    assert (w.diagonal() == 0).all() and ((w > 0).sum(1) >= 4).all()


def test_bad_arguments_name_the_problem():
    x = torch.randn(5, 3)
    with pytest.raises(ValueError, match="k must lie"):
        knn_graph(x, 5)
    with pytest.raises(ValueError, match="alpha"):
        label_propagation(x, torch.tensor([0, 1]), 2, alpha=1.0)
    with pytest.raises(ValueError, match="labelled and unlabelled"):
        label_propagation(x[:2], torch.tensor([0, 1]), 2)
