"""Few-shot regression on the sinusoid family: MAML (vectorised over tasks with ``torch.func``),
the pre-train-then-fine-tune baseline, the oracle, evaluation and the paper's figure.

All learners are the MAML paper's MLP 1-40-40-1 with ReLU (``fewshot.nn.backbones.MLP``). MAML's inner
loop is the shared :func:`fewshot.nn.inner_loop.inner_loop` under :func:`torch.func.vmap`, so a
meta-batch of 25 tasks is one batched computation (equal to adapting task by task: see the tests).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from ..data.sinusoid import SinusoidBatch, SinusoidTasks
from ..nn.backbones import MLP
from ..nn.inner_loop import Params, inner_loop
from ..utils import check_finite, mean_ci95, subplots



def sine_mlp(in_features: int = 1, hidden: Sequence[int] = (40, 40)) -> nn.Module:
    """The MAML paper's regressor ``[N, in_features] -> [N, 1]`` (ReLU between layers)."""
    return MLP(in_features, (*hidden, 1))


LOSSES = {"mse": F.mse_loss, "l1": F.l1_loss}


def regression_loss(name: str):
    """``mse`` (Finn et al.) or ``l1`` (the book's variant) as a function ``(pred, target) -> scalar``."""
    if name not in LOSSES:
        raise ValueError(f"unknown regression loss {name!r}; choose from {', '.join(LOSSES)}")
    return LOSSES[name]


def adapt_task(model: nn.Module, params: Params, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float,
               first_order: bool = False, loss: str = "mse") -> Params:
    """``steps`` SGD steps on the ``loss`` (MSE or L1) of one task's ``x, y [K, 1]`` (usable under
    ``vmap``). ``first_order`` treats the inner gradients as constants."""
    fn = regression_loss(loss)

    def support_loss(p: Params) -> torch.Tensor:
        return fn(functional_call(model, p, (x,)), y)

    return inner_loop(support_loss, params, steps, lr, first_order=first_order, check=False)


def maml_meta_loss(model: nn.Module, batch: SinusoidBatch, inner_steps: int, inner_lr: float,
                   first_order: bool = False, loss: str = "mse") -> torch.Tensor:
    """Mean query loss after adapting to each task's support set, differentiable w.r.t. the model."""
    params = dict(model.named_parameters())
    fn = regression_loss(loss)

    def one(sx, sy, qx, qy):
        fast = adapt_task(model, params, sx, sy, inner_steps, inner_lr, first_order, loss)
        return fn(functional_call(model, fast, (qx,)), qy)

    return vmap(one)(batch.support_x, batch.support_y, batch.query_x, batch.query_y).mean()


def predictions_after(model: nn.Module, batch: SinusoidBatch, steps: Sequence[int], lr: float,
                      loss: str = "mse") -> dict[int, torch.Tensor]:
    """Query predictions ``[T, Q, 1]`` after each number of fine-tuning steps (on ``loss``) in ``steps`` (0 = none)."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    steps = sorted(set(steps))

    def one(sx, sy, qx):
        out, p, done = [], params, 0
        for s in steps:
            p = adapt_task(model, p, sx, sy, s - done, lr, loss=loss)
            done = s
            out.append(functional_call(model, p, (qx,)))
        return tuple(out)

    preds = vmap(one)(batch.support_x, batch.support_y, batch.query_x)
    return {s: p.detach() for s, p in zip(steps, preds)}


@dataclass
class RegressionTrainConfig:
    """``steps`` Adam steps of ``meta_batch`` tasks with ``shot`` support and ``query`` query points."""

    steps: int = 20000
    meta_batch: int = 25
    shot: int = 10
    query: int = 10
    lr: float = 1e-3
    inner_steps: int = 1
    inner_lr: float = 0.01
    first_order: bool = False
    loss: str = "mse"
    seed: int = 0


def _train(model: nn.Module, loss_fn, cfg: RegressionTrainConfig, family: SinusoidTasks) -> list[float]:
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    losses = []
    for step in range(cfg.steps):
        batch = family.sample(cfg.meta_batch, cfg.shot, cfg.query, generator=gen)
        loss = loss_fn(batch)
        check_finite(loss, f"regression training step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def train_maml(cfg: RegressionTrainConfig, family: SinusoidTasks | None = None) -> tuple[nn.Module, list[float]]:
    """Meta-train a sine MLP with (first-order if ``cfg.first_order``) MAML."""
    torch.manual_seed(cfg.seed)
    model = sine_mlp()
    losses = _train(model, lambda b: maml_meta_loss(model, b, cfg.inner_steps, cfg.inner_lr, cfg.first_order, cfg.loss),
                    cfg, family or SinusoidTasks())
    return model, losses


def train_pretrained(cfg: RegressionTrainConfig, family: SinusoidTasks | None = None) -> tuple[nn.Module, list[float]]:
    """The baseline: one regressor trained on all tasks jointly (plain MSE on their points)."""
    torch.manual_seed(cfg.seed)
    model = sine_mlp()

    def loss_fn(b: SinusoidBatch) -> torch.Tensor:
        x = torch.cat([b.support_x, b.query_x], 1)
        y = torch.cat([b.support_y, b.query_y], 1)
        return F.mse_loss(model(x.reshape(-1, 1)), y.reshape(-1, 1))

    return model, _train(model, loss_fn, cfg, family or SinusoidTasks())


class Oracle(nn.Module):
    """The paper's oracle: the same MLP told the task, input ``(x, A, sin phase, cos phase)``."""

    def __init__(self):
        super().__init__()
        self.net = sine_mlp(4)

    def forward(self, x: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
        """``x [T, N, 1]``, ``task [T, 2]`` (amplitude, phase) -> ``[T, N, 1]``."""
        t = torch.stack([task[:, 0], task[:, 1].sin(), task[:, 1].cos()], -1)[:, None].expand(-1, x.shape[1], -1)
        return self.net(torch.cat([x, t], -1).reshape(-1, 4)).reshape(x.shape)


def train_oracle(cfg: RegressionTrainConfig, family: SinusoidTasks | None = None) -> tuple[Oracle, list[float]]:
    torch.manual_seed(cfg.seed)
    model = Oracle()

    def loss_fn(b: SinusoidBatch) -> torch.Tensor:
        x = torch.cat([b.support_x, b.query_x], 1)
        return F.mse_loss(model(x, b.task_params()), torch.cat([b.support_y, b.query_y], 1))

    return model, _train(model, loss_fn, cfg, family or SinusoidTasks())


def task_mse(pred: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """Mean over tasks of the per-task MSE (``[T, Q, 1]`` inputs) and its 95% CI half-width."""
    return mean_ci95(((pred - target) ** 2).mean(dim=(1, 2)).numpy())


def plot_sinusoid_adaptation(models: dict[str, nn.Module], batch: SinusoidBatch, path: str | Path,
                             lr: float | dict[str, float], steps: Sequence[int] = (0, 1, 10), task: int = 0,
                             x_range: tuple[float, float] = (-5.0, 5.0), loss: str = "mse") -> Path:
    """The MAML paper's figure: for one task, the true curve, the support points and each model's
    prediction before adaptation and after each number of steps (one panel per model; ``lr`` one
    fine-tuning step size, or one per model name)."""

    one = SinusoidBatch(batch.amplitude[task:task + 1], batch.phase[task:task + 1], batch.support_x[task:task + 1],
                        batch.support_y[task:task + 1], torch.linspace(*x_range, 200)[None, :, None], None)
    one.query_y = SinusoidTasks.curve(one.amplitude, one.phase, one.query_x)
    fig, axes = subplots(1, len(models), figsize=(5 * len(models), 3.6), squeeze=False)
    for ax, (name, model) in zip(axes[0], models.items()):
        preds = predictions_after(model, one, steps, lr[name] if isinstance(lr, dict) else lr, loss)
        xs = one.query_x[0, :, 0]
        ax.plot(xs, one.query_y[0, :, 0], "r", lw=2, label="ground truth")
        for s, style in zip(sorted(preds), [":", "--", "-", "-."]):
            ax.plot(xs, preds[s][0, :, 0], style, color="tab:green" if s else "tab:blue",
                    alpha=0.5 + 0.5 * (s == max(preds)), label="pre-update" if s == 0 else f"{s} grad step{'s' * (s > 1)}")
        ax.plot(one.support_x[0, :, 0], one.support_y[0, :, 0], "^", color="purple", ms=8,
                label=f"{one.support_x.shape[1]} points used for grad")
        ax.set_title(name)
        ax.set_ylim(-6, 6)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
