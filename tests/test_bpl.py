"""Simplified BPL on tiny synthetic strokes: splines, sub-strokes, model, renderer, parser, classifier."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fewshot.bpl.classify import BPLClassifier, FitOptions, refit
from fewshot.bpl.model import BPLModel, control_points, infer_relation
from fewshot.bpl.parse import parse_image, skeleton_graph, thin
from fewshot.bpl.render import log_likelihood, pack, render
from fewshot.bpl.splines import basis, eval_spline, fit_spline, resample
from fewshot.bpl.substrokes import corner_candidates, pause_splits
from fewshot.data.strokes import Drawing


def _stroke(points, speeds=None):
    """``[n, 3]`` (x, row, t) through ``points``, 1 px apart; ``speeds`` px/ms per point."""
    xy = resample(np.asarray(points, float), int(np.linalg.norm(np.diff(points, axis=0), axis=1).sum()) + 1)
    v = np.ones(len(xy)) if speeds is None else speeds(len(xy))
    t = np.concatenate([[0.0], np.cumsum(1.0 / v[1:])])
    return np.column_stack([xy, t])


def _drawings(n=24, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        j = rng.normal(0, 1.5, 2)
        if i % 3 == 0:  # a bar
            st = [_stroke([[30 + j[0], 50 + j[1]], [75, 50]])]
        elif i % 3 == 1:  # an L drawn with a pause at the corner, then a dot-free second stroke
            slow = lambda m: np.where(np.abs(np.arange(m) - 40) < 3, 0.02, 1.0)  # noqa: E731
            st = [_stroke([[40 + j[0], 20], [40, 60], [70, 60 + j[1]]], slow), _stroke([[40, 40], [60, 40]])]
        else:  # a vertical bar
            st = [_stroke([[52, 25 + j[0]], [52, 80 + j[1]]])]
        out.append(Drawing("A", f"character{i % 3:02d}", i % 3, i, st))
    return out


@pytest.fixture(scope="module")
def model():
    return BPLModel.fit(_drawings(), primitives=4, seed=0)


def test_spline_basis_and_fit():
    b = basis(20)
    np.testing.assert_allclose(b.sum(1), 1.0, atol=1e-9)
    line = np.column_stack([np.linspace(0, 40, 30), np.linspace(5, 25, 30)])
    np.testing.assert_allclose(eval_spline(fit_spline(line), 30), resample(line, 30), atol=1e-6)


def test_pause_and_corner_splits():
    slow = lambda m: np.where(np.abs(np.arange(m) - 40) < 3, 0.02, 1.0)  # noqa: E731
    pieces = pause_splits(_stroke([[40, 20], [40, 60], [70, 60]], slow))
    assert len(pieces) == 2 and abs(pieces[0][-1, 1] - 60) < 3
    assert len(pause_splits(_stroke([[40, 20], [40, 60], [70, 60]]))) == 1  # no pause, no split
    xy = _stroke([[40, 20], [40, 60], [70, 60]])[:, :2]
    (c,) = corner_candidates(xy)
    assert np.linalg.norm(xy[c] - [40, 60]) < 2


def test_relations():
    prev = [np.array([[10.0, 10], [50, 10]])]
    assert infer_relation(np.array([50.0, 11]), prev, 5)[:2] == ("end", 0)
    assert infer_relation(np.array([10.0, 12]), prev, 5)[:2] == ("start", 0)
    rel, parent, along = infer_relation(np.array([30.0, 11]), [resample(prev[0], 41)], 5)
    assert (rel, parent) == ("along", 0) and along == pytest.approx(0.5, abs=0.05)
    assert infer_relation(np.array([30.0, 40]), prev, 5)[0] == "independent"


def test_model_fit_sample_and_round_trip(model, tmp_path):
    assert model.prim_mean.shape == (4, 5, 2)
    np.testing.assert_allclose(np.exp(model.log_trans).sum(1), 1.0)
    rng = np.random.default_rng(0)
    t = model.sample_type(rng)
    assert np.isfinite(model.log_prior(t))
    token = model.sample_token(t, rng)
    assert len(token) == len(t.strokes) and all(c.shape[1:] == (5, 2) for c in token)
    model.save(tmp_path / "m.json")
    back = BPLModel.load(tmp_path / "m.json")
    assert back.log_prior(t) == pytest.approx(model.log_prior(t))


def test_render_likelihood_prefers_the_drawn_image(model):
    cps, mask = pack([[np.stack([fit_spline(np.array([[30.0, 50], [75, 50]]))])]])
    p = render(cps, mask, model.ink_sd, model.ink_gain, model.noise)[0]
    assert p.shape == (105, 105) and p[50, 52] > 0.9 and p[10, 10] < 0.01
    img = torch.zeros(105, 105)
    img[49:52, 30:76] = 1
    assert log_likelihood(p, img) > log_likelihood(p, img.roll(15, 0)) + 100


def _image(strokes, width=1):
    img = np.zeros((105, 105), np.uint8)
    for st in strokes:
        for x, r in resample(np.asarray(st, float), 200):
            img[int(r) - width: int(r) + width + 1, int(x) - width: int(x) + width + 1] = 1
    return img


def test_skeleton_graph_shapes():
    bar = skeleton_graph(thin(_image([[[30, 50], [75, 50]]])))
    assert len(bar.edges) == 1 and sorted(bar.degree) == [1, 1]
    plus = skeleton_graph(thin(_image([[[30, 50], [75, 50]], [[52, 25], [52, 80]]])))
    assert len(plus.edges) == 4 and sorted(plus.degree)[-1] == 4
    square = [[30, 30], [70, 30], [70, 70], [30, 70], [30, 30]]
    ring = skeleton_graph(thin(_image([square])))
    assert len(ring.edges) == 1 and ring.edges[0][0] == ring.edges[0][1]


def test_parse_and_refit(model):
    ell = _image([[[40, 20], [40, 60], [70, 60]]])
    parses = parse_image(ell, model, k=2, walks=8, seed=0)
    assert 1 <= len(parses) <= 2 and parses[0].score >= parses[-1].score
    assert len(parses[0].cps) == 1  # one pen path covers the L
    opts = FitOptions(steps=4)
    same = refit(parses, ell, model, opts)
    other = refit(parses, _image([[[52, 25], [52, 80]]]), model, opts)
    assert (same > other).all()
    with pytest.raises(ValueError, match="empty image"):
        parse_image(np.zeros((105, 105)), model)


def test_classifier_one_shot(model):
    shapes = [[[[30, 50], [75, 50]]], [[[52, 25], [52, 80]]], [[[40, 20], [40, 60], [70, 60]]]]
    support = np.stack([_image(s) for s in shapes])
    query = np.stack([np.roll(_image(s), (3, -2), (0, 1)) for s in shapes])
    clf = BPLClassifier(model, FitOptions(k=2, walks=6, steps=4), workers=1)
    fits = clf.pair_fits(support, query)
    for kw in ({}, {"k": 1}, {"one_way": True}):
        assert (fits.two_way(**kw).argmax(1) == np.arange(3)).all()
