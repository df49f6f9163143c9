"""Sinusoid tasks and the vectorised regression MAML."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.func import functional_call

from fewshot.data.sinusoid import SinusoidTasks
from fewshot.regression.sinusoid import Oracle, adapt_task, maml_meta_loss, predictions_after, sine_mlp, task_mse

torch.set_num_threads(1)


def test_sinusoid_tasks_follow_the_paper_distribution_and_are_seeded():
    b = SinusoidTasks().sample(200, 5, 7, seed=3)
    assert b.support_x.shape == (200, 5, 1) and b.query_y.shape == (200, 7, 1)
    assert 0.1 <= b.amplitude.min() and b.amplitude.max() <= 5.0
    assert 0.0 <= b.phase.min() and b.phase.max() <= math.pi
    assert b.support_x.abs().max() <= 5.0
    torch.testing.assert_close(b.support_y, b.amplitude[:, None, None] * torch.sin(b.support_x - b.phase[:, None, None]))
    torch.testing.assert_close(SinusoidTasks().sample(200, 5, 7, seed=3).query_x, b.query_x)
    grid = SinusoidTasks().sample(2, 5, 11, seed=3, query_grid=True)
    torch.testing.assert_close(grid.query_x[0, :, 0], torch.linspace(-5, 5, 11))


def reference_sgd(model, params, x, y, steps, lr, create_graph):
    """Plain autograd SGD steps on the MSE, written independently of fewshot.nn.inner_loop."""
    for _ in range(steps):
        loss = F.mse_loss(functional_call(model, params, (x,)), y)
        grads = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph)
        params = {n: p - lr * g for (n, p), g in zip(params.items(), grads)}
    return params


def test_vectorised_adaptation_equals_plain_autograd_sgd():
    torch.manual_seed(0)
    model = sine_mlp()
    b = SinusoidTasks().sample(4, 10, 10, seed=1)
    preds = predictions_after(model, b, (0, 2), lr=0.05)
    params = {n: p.detach().requires_grad_() for n, p in model.named_parameters()}
    for t in range(4):
        fast = reference_sgd(model, params, b.support_x[t], b.support_y[t], 2, 0.05, create_graph=False)
        torch.testing.assert_close(preds[2][t], functional_call(model, fast, (b.query_x[t],)).detach())
    torch.testing.assert_close(preds[0], model(b.query_x.reshape(-1, 1)).reshape(4, 10, 1).detach())


def test_regression_meta_gradient_matches_the_task_loop():
    torch.manual_seed(0)
    model = sine_mlp()
    b = SinusoidTasks().sample(3, 5, 5, seed=2)
    for first_order in (False, True):
        g_vmap = torch.autograd.grad(maml_meta_loss(model, b, 1, 0.01, first_order), list(model.parameters()))
        params = dict(model.named_parameters())
        losses = []
        for t in range(3):
            fast = reference_sgd(model, params, b.support_x[t], b.support_y[t], 1, 0.01, create_graph=not first_order)
            losses.append(F.mse_loss(functional_call(model, fast, (b.query_x[t],)), b.query_y[t]))
        g_loop = torch.autograd.grad(torch.stack(losses).mean(), list(model.parameters()))
        for a, c in zip(g_vmap, g_loop):
            torch.testing.assert_close(a, c, rtol=1e-4, atol=1e-6)


def test_adapt_task_reduces_the_support_loss_and_oracle_shapes():
    torch.manual_seed(0)
    model = sine_mlp()
    b = SinusoidTasks().sample(1, 10, 10, seed=5)
    params = dict(model.named_parameters())
    before = F.mse_loss(model(b.support_x[0]), b.support_y[0])
    after = F.mse_loss(functional_call(model, adapt_task(model, params, b.support_x[0], b.support_y[0], 5, 0.01), (b.support_x[0],)), b.support_y[0])
    assert after < before
    assert Oracle()(b.query_x, b.task_params()).shape == b.query_x.shape
    mean, ci = task_mse(b.query_y, b.query_y)
    assert mean == 0.0 and ci == 0.0
