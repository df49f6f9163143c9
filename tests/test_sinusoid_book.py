"""The book's variant of MAML's sine toy: discrete phases, wider inputs, L1 inner loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from fewshot.data.sinusoid import SinusoidTasks
from fewshot.regression.sinusoid import adapt_task, maml_meta_loss, sine_mlp


def test_book_family_has_two_phases_and_wider_inputs():
    b = SinusoidTasks.book().sample(200, 4, 7, seed=0)
    assert set(b.phase.tolist()) == {0.0, float(torch.tensor(math.pi))}
    assert b.support_x.shape == (200, 4, 1) and float(b.support_x.abs().max()) <= 2 * math.pi
    assert float(b.query_x.abs().max()) > 5.0  # beyond Finn et al.'s [-5, 5]
    with pytest.raises(ValueError, match="phases"):
        SinusoidTasks(phases=())


def test_l1_inner_loop_is_sgd_on_the_l1_loss():
    torch.manual_seed(0)
    model = sine_mlp()
    params = {n: p.detach() for n, p in model.named_parameters()}
    x, y = torch.randn(4, 1), torch.randn(4, 1)
    fast = adapt_task(model, params, x, y, steps=1, lr=0.03, loss="l1")
    p = {n: v.clone().requires_grad_(True) for n, v in params.items()}
    F.l1_loss(functional_call(model, p, (x,)), y).backward()
    for n in params:
        torch.testing.assert_close(fast[n], params[n] - 0.03 * p[n].grad)
    b = SinusoidTasks.book().sample(3, 4, 4, seed=1)
    assert torch.isfinite(maml_meta_loss(model, b, 5, 0.03, loss="l1"))
    with pytest.raises(ValueError, match="unknown regression loss"):
        adapt_task(model, params, x, y, 1, 0.1, loss="huber")


def test_book_daml_l1_temporal_objective_trains_and_adapts():
    from fewshot.regression.daml import AdaptationLoss, DAML, sample_demos, train_daml

    loss = AdaptationLoss(norm="l1", temporal=True)
    pred, obs, x = torch.randn(5, 1), torch.randn(5, 1), torch.randn(5, 1)
    perm = torch.randperm(5)
    # a sequence in order of x: shuffling the points does not change the objective
    torch.testing.assert_close(loss(pred, obs, x), loss(pred[perm], obs[perm], x[perm]))
    with pytest.raises(ValueError, match="norm"):
        AdaptationLoss(norm="l3")
    model, losses = train_daml(3, shot=4, meta_batch=3, norm="l1", temporal=True)
    assert isinstance(model, DAML) and len(losses) == 3 and all(math.isfinite(v) for v in losses)
    demos = sample_demos(2, 4, 3, torch.Generator().manual_seed(0))
    assert model.predict(demos).shape == (2, 3, 1)
