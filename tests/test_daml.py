"""The domain-adaptive meta-learning toy: the learned objective drives the inner step without labels."""

from __future__ import annotations

import torch

from fewshot.regression.daml import DAML, PairedDemos, human_domain, sample_demos

torch.set_num_threads(1)


def demos(seed: int = 0) -> PairedDemos:
    return sample_demos(3, 5, 4, torch.Generator().manual_seed(seed))


def test_human_demo_is_a_distorted_unlabelled_view_of_the_task():
    d = demos()
    assert d.x_h.shape == d.o_h.shape == (3, 5, 1) and d.x_q.shape == (3, 4, 1)
    g = torch.Generator().manual_seed(1)
    y = torch.linspace(-5, 5, 11)
    torch.testing.assert_close(human_domain(y, g, noise=0.0), 0.5 * y + 1.0)


def test_meta_gradient_reaches_the_adaptation_objective_through_the_inner_step():
    torch.manual_seed(0)
    model = DAML(inner_steps=1, inner_lr=0.1)
    model.meta_loss(demos()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_adaptation_uses_the_human_demo_and_never_the_labels():
    torch.manual_seed(0)
    model = DAML(inner_steps=2, inner_lr=0.1)
    d = demos()
    no_labels = PairedDemos(d.x_h, d.o_h, d.x_r, torch.full_like(d.y_r, float("nan")), d.x_q, torch.zeros_like(d.y_q))
    pred = model.predict(no_labels)
    torch.testing.assert_close(pred, model.predict(d))
    assert not torch.allclose(pred, model.predict(d, steps=0))  # it did adapt
    torch.testing.assert_close(model.predict(d, steps=0), model.policy(d.x_q.reshape(-1, 1)).reshape(3, 4, 1).detach())
