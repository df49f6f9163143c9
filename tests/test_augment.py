"""Augmentations: shapes/dtypes kept, identity at zero strength, reproducible from a seed."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fewshot.engine.evaluate import evaluate
from fewshot.methods.augmented import AugmentedSupport, TestTimeAugmentation
from fewshot.tasks.episodes import augment_episode
from fewshot.data.augment import (Augmenter, affine, brightness, contrast, elastic, hflip,
                             random_affine, random_crop, tta_views)
from fewshot.tasks.episodes import Episode, EpisodeSampler, TaskSet
from fewshot.methods import MAML, ProtoNet

from conftest import make_blobs_dataset

TRANSFORMS = [random_affine, elastic, hflip, brightness, contrast, random_crop]


@pytest.mark.parametrize("transform", TRANSFORMS, ids=lambda t: t.__name__)
@settings(max_examples=8, deadline=None)
@given(b=st.integers(1, 4), c=st.sampled_from([1, 3]), h=st.integers(8, 20), w=st.integers(8, 20),
       dtype=st.sampled_from([torch.float32, torch.float64]))
def test_shape_dtype_and_seed(transform, b, c, h, w, dtype):
    x = torch.rand(b, c, h, w, dtype=dtype)
    out1 = transform(x, torch.Generator().manual_seed(7))
    out2 = transform(x, torch.Generator().manual_seed(7))
    assert out1.shape == x.shape and out1.dtype == x.dtype
    assert torch.equal(out1, out2)
    assert torch.isfinite(out1).all()


@pytest.mark.parametrize("transform", [random_affine, elastic, brightness, contrast, random_crop], ids=lambda t: t.__name__)
def test_different_seeds_differ(transform):
    x = torch.rand(4, 1, 16, 16)
    assert not torch.equal(transform(x, torch.Generator().manual_seed(0)), transform(x, torch.Generator().manual_seed(1)))


def test_zero_strength_is_identity():
    x = torch.rand(3, 2, 12, 10)
    g = torch.Generator().manual_seed(0)
    torch.testing.assert_close(random_affine(x, g, rotation=0, shear=0, scale=(1, 1), translate=0), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(elastic(x, g, alpha=0.0), x, atol=1e-5, rtol=0)
    assert torch.equal(random_crop(x, g, padding=0), x)
    assert torch.equal(hflip(x, g, p=0.0), x) and torch.equal(hflip(x, g, p=1.0), x.flip(-1))


def test_rotation_preserves_ink_and_elastic_displaces_locally():
    x = torch.zeros(8, 1, 28, 28)
    x[..., 10:18, 12:16] = 1.0  # a centred stroke, far from the border
    rot = random_affine(x, torch.Generator().manual_seed(0), rotation=90, shear=0, scale=(1, 1), translate=0)
    assert not torch.allclose(rot, x)
    torch.testing.assert_close(rot.sum(dim=(1, 2, 3)), x.sum(dim=(1, 2, 3)), rtol=0.05, atol=0)
    ela = elastic(x, torch.Generator().manual_seed(0), alpha=1.0)
    assert not torch.allclose(ela, x)
    coords = torch.arange(28.0)

    def centroid(img):
        m = img.sum(dim=(1, 2, 3))
        return torch.stack([(img.sum(3)[:, 0] * coords).sum(1) / m, (img.sum(2)[:, 0] * coords).sum(1) / m], 1)

    assert (centroid(ela) - centroid(x)).abs().max() < 3.0  # displacements of ~alpha pixels


def test_expand_and_wrapper_are_reproducible():
    x = torch.rand(6, 1, 16, 16)
    y = torch.arange(3).repeat_interleave(2)
    aug = Augmenter.characters()
    xe, ye = aug.expand(x, y, 4, torch.Generator().manual_seed(0))
    assert xe.shape == (24, 1, 16, 16) and torch.equal(xe[:6], x) and torch.equal(ye, y.repeat(4))
    xe2, _ = aug.expand(x, y, 4, torch.Generator().manual_seed(0))
    assert torch.equal(xe, xe2)
    with pytest.raises(ValueError, match="copies"):
        aug.expand(x, y, 0, torch.Generator())
    with pytest.raises(ValueError, match="float images"):
        aug(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), torch.Generator())
    proto = [AugmentedSupport(ProtoNet(None), Augmenter.photos(), copies=3, seed=1) for _ in range(2)]
    q = torch.rand(5, 1, 16, 16)
    s = [p.fit(x, y).scores(q) for p in proto]
    assert torch.equal(s[0], s[1]) and s[0].shape == (5, 3)


def test_augment_episode_keeps_labels_and_is_seeded():
    ep = EpisodeSampler(make_blobs_dataset(size=16), way=3, shot=2, query=2, seed=0).episode(0)
    a = augment_episode(ep, Augmenter.characters(), torch.Generator().manual_seed(3))
    b = augment_episode(ep, Augmenter.characters(), torch.Generator().manual_seed(3))
    assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_x, b.query_x)
    assert a.support_x.shape == ep.support_x.shape and not torch.equal(a.support_x, ep.support_x)
    assert torch.equal(a.support_y, ep.support_y) and torch.equal(a.query_y, ep.query_y)
    c = augment_episode(ep, Augmenter.characters(), torch.Generator().manual_seed(3), queries=False)
    assert torch.equal(c.query_x, ep.query_x)


def test_augment_episode_without_queries():
    """Sequence episodes (MANN) have support only: an empty query set stays empty."""
    ep = EpisodeSampler(make_blobs_dataset(size=16), way=3, shot=4, query=0, seed=0).episode(0)
    a = augment_episode(ep, Augmenter.characters(), torch.Generator().manual_seed(3))
    assert a.query_x.shape == ep.query_x.shape and len(a.query_x) == 0
    assert a.support_x.shape == ep.support_x.shape and not torch.equal(a.support_x, ep.support_x)


def test_augment_episode_per_class_draws_one_transform_per_class():
    """per="class": every image of a class (support and query) gets the same transform, each class
    its own; per="image" (the default) draws one per image."""
    img = torch.zeros(1, 16, 16)
    img[:, 4:12, 6:9] = 1.0  # a bar: any rotation or shift changes it
    y = torch.arange(3).repeat_interleave(2)
    ep = Episode(img.expand(6, 1, 16, 16).clone(), y, img.expand(3, 1, 16, 16).clone(), torch.arange(3),
                 torch.arange(3), torch.arange(6), torch.arange(3))
    a = augment_episode(ep, Augmenter.characters(), torch.Generator().manual_seed(3), per="class")
    for c in range(3):
        same = torch.cat([a.support_x[y == c], a.query_x[c:c + 1]])
        assert all(torch.equal(same[0], other) for other in same[1:])
    assert not torch.equal(a.support_x[0], a.support_x[2]) and not torch.equal(a.support_x[0], ep.support_x[0])
    b = augment_episode(ep, Augmenter.characters(), torch.Generator().manual_seed(3))
    assert not torch.equal(b.support_x[0], b.support_x[1])
    c = augment_episode(ep, Augmenter.characters(), torch.Generator().manual_seed(3), per="class", queries=False)
    assert torch.equal(c.query_x, ep.query_x)
    with pytest.raises(ValueError, match="per must be"):
        augment_episode(ep, Augmenter.characters(), torch.Generator(), per="task")


# ----------------------------------------------------------------- test-time views
def test_affine_rotates_scales_and_shifts_every_image_the_same_way():
    x = torch.zeros(2, 1, 8, 8)
    x[0, 0, 1, 2] = 1.0
    x[1, 0, 5, 3] = 1.0
    assert torch.allclose(affine(x), x, atol=1e-6)
    quarter = affine(x, rotation=90.0)
    assert any(torch.allclose(quarter, x.rot90(k, (2, 3)), atol=1e-5) for k in (1, -1))
    assert torch.allclose(affine(quarter, rotation=-90.0), x, atol=1e-5)
    shifted = affine(x, translate=(1 / 8, 0.0))  # one pixel along x
    assert any(torch.allclose(shifted, x.roll(k, 3), atol=1e-6) for k in (1, -1))
    assert affine(x, scale=1.5).sum() > x.sum()  # a dot drawn larger covers more pixels


def test_tta_views_are_fixed_maps_and_unknown_presets_are_refused():
    x = torch.rand(3, 1, 16, 16)
    views = tta_views("characters")  # the image and its one-pixel shifts
    assert len(views) == 9 and torch.allclose(views[4](x), x, atol=1e-6)
    assert torch.allclose(views[5](x)[..., 1:-1, 1:-1], x.roll(1, 2)[..., 1:-1, 1:-1], atol=1e-6) or \
        torch.allclose(views[5](x)[..., 1:-1, 1:-1], x.roll(-1, 2)[..., 1:-1, 1:-1], atol=1e-6)
    assert all(torch.equal(v(x), v(x)) and v(x).shape == x.shape for v in views)
    with pytest.raises(ValueError, match="choose from characters"):
        tta_views("photo")


def test_test_time_augmentation_embeds_each_image_as_the_mean_over_its_views():
    torch.manual_seed(0)
    proto = ProtoNet(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 5))).eval()
    views = tta_views("characters")
    tta = TestTimeAugmentation(proto, views)
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(tta.embed(x), torch.stack([proto.embed(v(x)) for v in views]).mean(0))
        sx, sy, q = torch.rand(6, 1, 8, 8), torch.arange(3).repeat(2), torch.rand(5, 1, 8, 8)
        identity = TestTimeAugmentation(proto, [lambda v: v])
        assert torch.equal(identity.fit(sx, sy).scores(q), proto.fit(sx, sy).scores(q))
        assert not torch.allclose(tta.fit(sx, sy).scores(q), proto.fit(sx, sy).scores(q))


def test_test_time_augmentation_scores_a_task_set_as_fitting_each_task_does():
    data = make_blobs_dataset(noise=1.5, seed=3)  # [N, 1, 8, 8] images
    torch.manual_seed(0)
    tta = TestTimeAugmentation(ProtoNet(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 8))), tta_views("characters")).eval()
    tasks = TaskSet.generate(data, 5, 1, 3, tasks=10, seed=0)
    cached = evaluate(tta, tasks.episodes(data))  # each item embedded once
    each = evaluate(tta, list(tasks.episodes(data)))  # fit and scores per task
    assert cached.per_task == pytest.approx(each.per_task)


def test_test_time_augmentation_refuses_methods_that_adapt_on_the_images():
    with pytest.raises(ValueError, match="AugmentedSupport"):
        TestTimeAugmentation(MAML(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 5))), tta_views("characters"))
    with pytest.raises(ValueError, match="at least one view"):
        TestTimeAugmentation(ProtoNet(None), [])
    with pytest.raises(TypeError, match="evaluation wrapper"):
        TestTimeAugmentation(ProtoNet(None), tta_views("characters")).config()
