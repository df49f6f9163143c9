"""Domain-adaptive meta-learning (Yu et al. 2018, "One-shot imitation from observing humans"), as a
toy on the sinusoid family.

In DAML a robot policy adapts to a new task from a *human* demonstration: observations in another
domain and no action labels. The inner update of the policy is driven by a second, learned
network (the adaptation objective) that reads the policy's outputs on the human demonstration:

    theta' = theta - alpha * grad_theta || h_psi(f_theta(x_h), o_h, x_h) ||^2
    meta-objective: MSE of f_theta' on the paired *robot* demonstration (labelled) of the same task.

``theta`` and ``psi`` are meta-trained together from paired demonstrations; at test time only the
human demonstration of a new task is available.

The toy: a task is a sinusoid ``y = A sin(x - phase)`` (the "action" the robot must produce at
input ``x``). The human demonstration shows K inputs ``x_h`` with observations
``o_h = 0.5 y + 1 + noise`` (another domain: the same task seen through a fixed distortion the
learner is never told). The robot demonstration is K labelled points ``(x_r, y_r)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from ..data.sinusoid import SinusoidTasks
from ..nn.backbones import MLP
from ..nn.inner_loop import Params, inner_loop
from ..utils import check_finite, mean_ci95
from .sinusoid import adapt_task, sine_mlp


@dataclass
class PairedDemos:
    """Per task: human demo ``x_h, o_h [T, K, 1]`` (no labels), robot demo ``x_r, y_r [T, K, 1]``,
    and evaluation points ``x_q, y_q [T, Q, 1]``."""

    x_h: torch.Tensor
    o_h: torch.Tensor
    x_r: torch.Tensor
    y_r: torch.Tensor
    x_q: torch.Tensor
    y_q: torch.Tensor


def human_domain(y: torch.Tensor, generator: torch.Generator, noise: float = 0.05) -> torch.Tensor:
    """The human's view of the robot's target: a fixed affine distortion plus noise."""
    return 0.5 * y + 1.0 + noise * torch.randn(y.shape, generator=generator)


def sample_demos(tasks: int, shot: int, query: int, generator: torch.Generator) -> PairedDemos:
    fam = SinusoidTasks()
    b = fam.sample(tasks, shot, shot, generator=generator)
    q = SinusoidTasks.curve(b.amplitude, b.phase, qx := fam.x_range[0] + (fam.x_range[1] - fam.x_range[0])
                            * torch.rand(tasks, query, 1, generator=generator))
    return PairedDemos(b.support_x, human_domain(b.support_y, generator), b.query_x, b.query_y, qx, q)


class AdaptationLoss(nn.Module):
    """``h_psi``: ``[f_theta(x), o, x] -> R^2`` per point; the adaptation objective drives its output
    towards 0 (no labels involved): the mean squared norm (``norm="l2"``) or the mean absolute
    value (``norm="l1"``, the book's variant).

    ``temporal``: read the demonstration as a sequence (its points in order of ``x``, the curve
    traced left to right) with 1-D convolutions over time (kernel 3), as DAML's temporal
    adaptation loss does over a video; otherwise each point alone (an MLP).
    """

    def __init__(self, hidden: int = 40, norm: str = "l2", temporal: bool = False):
        super().__init__()
        if norm not in ("l1", "l2"):
            raise ValueError(f"norm must be 'l1' or 'l2'; got {norm!r}")
        self.norm, self.temporal = norm, temporal
        if temporal:
            self.net = nn.Sequential(nn.Conv1d(3, hidden, 3, padding=1), nn.ReLU(), nn.Conv1d(hidden, hidden, 3, padding=1),
                                     nn.ReLU(), nn.Conv1d(hidden, 2, 1))
        else:
            self.net = MLP(3, (hidden, hidden, 2))

    def forward(self, pred: torch.Tensor, obs: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``pred, obs, x [K, 1]`` (one demonstration) -> scalar objective."""
        seq = torch.cat([pred, obs, x], -1).reshape(-1, 3)
        if self.temporal:
            order = torch.argsort(seq[:, 2])
            out = self.net(seq[order].T.unsqueeze(0))[0].T  # [K, 2]
        else:
            out = self.net(seq)
        return out.abs().mean() if self.norm == "l1" else out.pow(2).sum(-1).mean()


class DAML(nn.Module):
    """The policy ("meta network") ``f_theta`` (MLP 1-40-40-1) and the learned adaptation objective
    ("adaptation network") ``h_psi`` (``norm``, ``temporal``: see :class:`AdaptationLoss`; the book's
    variant is ``norm="l1", temporal=True``)."""

    def __init__(self, inner_steps: int = 1, inner_lr: float = 0.01, norm: str = "l2", temporal: bool = False):
        super().__init__()
        self.policy = sine_mlp()
        self.adapt_loss = AdaptationLoss(norm=norm, temporal=temporal)
        self.inner_steps, self.inner_lr = inner_steps, inner_lr

    def adapt(self, params: Params, x_h: torch.Tensor, o_h: torch.Tensor, steps: int | None = None) -> Params:
        """Fast policy weights after gradient steps on the learned objective (one task, vmappable)."""

        def objective(p: Params) -> torch.Tensor:
            return self.adapt_loss(functional_call(self.policy, p, (x_h,)), o_h, x_h)

        return inner_loop(objective, params, self.inner_steps if steps is None else steps, self.inner_lr, check=False)

    def meta_loss(self, demos: PairedDemos) -> torch.Tensor:
        params = dict(self.policy.named_parameters())

        def one(x_h, o_h, x_r, y_r):
            fast = self.adapt(params, x_h, o_h)
            return F.mse_loss(functional_call(self.policy, fast, (x_r,)), y_r)

        return vmap(one)(demos.x_h, demos.o_h, demos.x_r, demos.y_r).mean()

    @torch.no_grad()
    def predict(self, demos: PairedDemos, steps: int | None = None) -> torch.Tensor:
        """Predictions ``[T, Q, 1]`` at ``x_q`` after adapting to each human demo (no labels used)."""
        params = {n: p.detach() for n, p in self.policy.named_parameters()}

        def one(x_h, o_h, x_q):
            return functional_call(self.policy, self.adapt(params, x_h, o_h, steps), (x_q,))

        return vmap(one)(demos.x_h, demos.o_h, demos.x_q)


def train_daml(steps: int, shot: int = 10, meta_batch: int = 25, lr: float = 1e-3, inner_steps: int = 1,
               inner_lr: float = 0.01, seed: int = 0, norm: str = "l2", temporal: bool = False) -> tuple[DAML, list[float]]:
    """Meta-train the policy initialisation and the adaptation objective on paired demonstrations."""
    torch.manual_seed(seed)
    model = DAML(inner_steps, inner_lr, norm, temporal)
    gen = torch.Generator().manual_seed(seed + 1)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for step in range(steps):
        loss = model.meta_loss(sample_demos(meta_batch, shot, shot, gen))
        check_finite(loss, f"DAML step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return model, losses


def naive_adaptation(policy: nn.Module, demos: PairedDemos, steps: int, lr: float) -> torch.Tensor:
    """The hand-designed alternative: fine-tune on the human observations as if they were labels."""
    params = {n: p.detach() for n, p in policy.named_parameters()}

    def one(x_h, o_h, x_q):
        return functional_call(policy, adapt_task(policy, params, x_h, o_h, steps, lr), (x_q,))

    return vmap(one)(demos.x_h, demos.o_h, demos.x_q).detach()


def mse_ci(pred: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    return mean_ci95(((pred - target) ** 2).mean(dim=(1, 2)).numpy())
