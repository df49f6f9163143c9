"""Discriminative k-shot learning (Bauer, Rojas-Carulla, Świątkowski, Schölkopf & Turner 2017).

1. Representation learning: supervised pre-training (shared with :mod:`.transfer`); the base-class
   softmax weights ``W̃ [C, d]`` (bias appended: ``d = D + 1``) are the data of phase 2.
2. Concept learning: a Gaussian over class weight vectors ``N(μ, Σ)``, fitted by MAP under its
   conjugate Normal-inverse-Wishart prior ``NIW(μ0=0, κ0, Ψ0=ψ I, ν0)`` (:func:`niw_map`).
3. k-shot learning: the new classes' weights are the MAP of softmax regression on the support
   features with the prior ``w_c ~ N(μ, Σ)``, i.e. cross-entropy + ``½ Σ_c (w_c-μ)ᵀ Σ⁻¹ (w_c-μ)``.
4. Prediction: with the MAP weights, or averaged over ``samples`` draws of the Laplace
   approximation of the weight posterior.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..utils import check_finite
from .base import check_support
from .transfer import TransferMethod

COVARIANCES = ("isotropic", "diagonal", "full")
PRIORS = ("niw", "l2", "none")


def niw_map(w: torch.Tensor, covariance: str = "isotropic", kappa0: float = 1.0, nu0: float | None = None,
            psi: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Joint MAP ``(μ [d], Σ [d, d])`` of a Gaussian over the rows of ``w [n, d]`` under the prior
    ``μ | Σ ~ N(0, Σ/κ0)``, ``Σ ~ IW(ψ I, ν0)`` (its isotropic / diagonal restrictions below).

    With ``x̄`` the row mean, ``S = Σ_i (w_i - x̄)(w_i - x̄)ᵀ``, ``κn = κ0 + n``, ``νn = ν0 + n``:
    ``μ = n x̄ / κn`` and ``Ψn = ψ I + S + (κ0 n / κn) x̄ x̄ᵀ``, then

    * ``full``: ``Σ = Ψn / (νn + d + 2)`` (the mode of NIW(μ, Σ));
    * ``diagonal``: each variance an inverse-gamma ``IG(ν0/2, ψ/2)``: ``σ_j² = Ψn_jj / (νn + 3)``;
    * ``isotropic``: ``Σ = σ² I``, ``σ² ~ IG(d ν0/2, d ψ/2)`` (the diagonal prior pooled over
      dimensions): ``σ² = tr Ψn / (d (νn + 1) + 2)``.

    Defaults: ``ν0 = d + 2``; ``ψ = (ν0 + d + 1) · v̄`` with ``v̄ = tr(S) / (n d)`` the mean per-dimension
    variance, so the prior's mode of Σ is ``v̄ I`` and it shrinks the estimate towards isotropy with
    the weight of ``ν0`` pseudo-observations (well-posed even when ``n < d``).
    """
    if w.ndim != 2 or w.shape[0] < 1:
        raise ValueError(f"niw_map needs weight vectors [n, d] with n >= 1; got shape {tuple(w.shape)}")
    if covariance not in COVARIANCES:
        raise ValueError(f"unknown covariance {covariance!r}; choose from {', '.join(COVARIANCES)}")
    n, d = w.shape
    xbar = w.mean(0)
    c = w - xbar
    s = c.T @ c
    if nu0 is None:
        nu0 = d + 2.0
    if psi is None:
        psi = (nu0 + d + 1) * float(torch.diagonal(s).sum()) / (n * d)
        psi = max(psi, 1e-6)
    kn, vn = kappa0 + n, nu0 + n
    mu = n * xbar / kn
    psi_n = psi * torch.eye(d, dtype=w.dtype, device=w.device) + s + (kappa0 * n / kn) * torch.outer(xbar, xbar)
    if covariance == "full":
        sigma = psi_n / (vn + d + 2)
    elif covariance == "diagonal":
        sigma = torch.diag(torch.diagonal(psi_n) / (vn + 3))
    else:
        sigma = torch.eye(d, dtype=w.dtype, device=w.device) * torch.diagonal(psi_n).sum() / (d * (vn + 1) + 2)
    return mu, sigma


def softmax_map(z: torch.Tensor, y: torch.Tensor, way: int, mu: torch.Tensor, precision: torch.Tensor,
                iters: int = 100) -> torch.Tensor:
    """MAP weights ``[way, d]`` of softmax regression on features ``z [N, d]`` with the Gaussian prior
    ``w_c ~ N(μ, precision⁻¹)``: minimises ``Σ_i CE_i + ½ Σ_c (w_c-μ)ᵀ P (w_c-μ)`` by L-BFGS
    (convex; with ``P = 0`` it is unregularised and stops after ``iters`` iterations)."""
    w = mu.expand(way, -1).clone().requires_grad_(True)
    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=iters, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-6, tolerance_change=1e-9)

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        diff = w - mu
        loss = F.cross_entropy(z @ w.T, y, reduction="sum") + 0.5 * ((diff @ precision) * diff).sum()
        check_finite(loss, "discriminative k-shot MAP")
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach()


def laplace_samples(z: torch.Tensor, w: torch.Tensor, precision: torch.Tensor, samples: int,
                    generator: torch.Generator) -> torch.Tensor:
    """Draws ``[samples, way, d]`` from the Laplace approximation ``N(w, H⁻¹)`` of the posterior,
    ``H = Σ_i (diag p_i - p_i p_iᵀ) ⊗ z_i z_iᵀ + I ⊗ P`` (row-major flattening of ``w``)."""
    way, d = w.shape
    p = (z @ w.T).softmax(-1)  # [N, way]
    cov_p = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]  # [N, way, way]
    zz = z[:, :, None] * z[:, None, :]  # [N, d, d]
    h = torch.einsum("nab,nij->aibj", cov_p, zz).reshape(way * d, way * d)
    # (torch.kron fails on non-contiguous inputs such as the transpose-like result of linalg.inv)
    h = h + torch.kron(torch.eye(way, dtype=w.dtype, device=w.device), precision.contiguous())
    h = 0.5 * (h + h.T) + 1e-6 * torch.eye(way * d, dtype=w.dtype, device=w.device)
    chol = torch.linalg.cholesky(h)
    eps = torch.randn(way * d, samples, generator=generator).to(w.device, w.dtype)
    # If H = L Lᵀ then L⁻ᵀ ε ~ N(0, H⁻¹).
    draws = torch.linalg.solve_triangular(chol.T, eps, upper=True)
    return w + draws.T.reshape(samples, way, d)


class DiscriminativeKShot(TransferMethod):
    """Discriminative k-shot learning (Bauer et al. 2017) on a linear-head pre-trained backbone.

    Args (besides :class:`TransferMethod`'s; the pre-training head must be ``linear``):
        prior: ``niw`` (the Gaussian concept prior learnt from the base weights), ``l2`` (isotropic
            ``N(0, 1/l2 · I)``: plain weight decay) or ``none`` (unregularised softmax regression).
        covariance: ``isotropic``, ``diagonal`` or ``full`` for the NIW prior.
        kappa0, nu0, psi: NIW hyper-parameters (see :func:`niw_map`; None = defaults there).
        l2: precision of the ``l2`` prior.
        map_iters: L-BFGS iterations for the MAP weights.
        samples: Laplace posterior samples for predictive averaging (0: MAP prediction).
    """

    name = "discriminative_kshot"
    aliases = ('discriminative-kshot',)

    fit_needs_grad = True

    def __init__(self, backbone: nn.Module | None = None, way: int | None = None, feature_dim: int | None = None,
                 head_type: Literal["linear"] = "linear", scale: float = 10.0,
                 seed: int = 0,
                 prior: Literal["niw", "l2", "none"] = "niw",
                 covariance: Literal["isotropic", "diagonal", "full"] = "isotropic", kappa0: float = 1.0,
                 nu0: float | None = None, psi: float | None = None, l2: float = 1.0, map_iters: int = 100,
                 samples: int = 0):
        super().__init__(backbone, way, feature_dim, head_type, scale, seed)
        if self.head_type != "linear":
            raise ValueError("discriminative k-shot learning models softmax weights: use head_type='linear'")
        if prior not in PRIORS:
            raise ValueError(f"unknown prior {prior!r}; choose from {', '.join(PRIORS)}")
        if covariance not in COVARIANCES:
            raise ValueError(f"unknown covariance {covariance!r}; choose from {', '.join(COVARIANCES)}")
        self.prior, self.covariance, self.kappa0, self.nu0, self.psi = prior, covariance, kappa0, nu0, psi
        self.l2, self.map_iters, self.samples = l2, map_iters, samples
        self.task_weights: torch.Tensor | None = None  # [way, d] MAP, or [S, way, d] samples
        self._prior_cache: tuple | None = None

    def base_weights(self) -> torch.Tensor:
        """Phase 1 output: the base-class softmax weights with the bias appended, ``[C, D + 1]``."""
        if self.head is None:
            raise RuntimeError("discriminative k-shot learning needs a pre-trained base-class head; train the method first")
        return torch.cat([self.head.weight, self.head.bias[:, None]], 1).detach()

    def concept_prior(self, d: int | None = None, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Phase 2: ``(μ [d], precision [d, d])`` of the prior over new-class weights (cached).
        ``d`` (feature size + 1) is only needed for the ``l2``/``none`` priors without a pre-trained head."""
        if self.prior == "none" or self.prior == "l2":
            d = d or (self.feature_dim or 0) + 1
            device = device or (self.head.weight.device if self.head is not None else torch.device("cpu"))
            lam = 0.0 if self.prior == "none" else self.l2
            return torch.zeros(d, device=device), lam * torch.eye(d, device=device)
        w = self.base_weights()
        # Keyed on the head's tensors themselves (held, so their identity cannot be reused) and versions.
        key = (self.head.weight, self.head.bias, self.head.weight._version, self.head.bias._version)
        cached = self._prior_cache
        if cached is None or not (cached[0][0] is key[0] and cached[0][1] is key[1] and cached[0][2:] == key[2:]):
            mu, sigma = niw_map(w.double(), self.covariance, self.kappa0, self.nu0, self.psi)
            precision = torch.linalg.inv(sigma)
            self._prior_cache = (key, mu.to(w.dtype), (0.5 * (precision + precision.T)).to(w.dtype).contiguous())
        return self._prior_cache[1], self._prior_cache[2]

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        z = self.embed(x)
        return torch.cat([z, torch.ones_like(z[:, :1])], 1)

    def fit(self, support_x: torch.Tensor, support_y: torch.Tensor) -> "DiscriminativeKShot":
        self.task_way = check_support(support_x, support_y)
        with torch.no_grad():
            z = self._features(support_x).detach()
        mu, precision = self.concept_prior(z.shape[1], z.device)
        w = softmax_map(z, support_y.long(), self.task_way, mu, precision, self.map_iters)
        if self.samples > 0:
            g = torch.Generator().manual_seed(self.seed)
            w = laplace_samples(z, w, precision, self.samples, g)
        self.task_weights = w
        return self

    def scores(self, query_x: torch.Tensor) -> torch.Tensor:
        if self.task_weights is None:
            raise RuntimeError("call fit(support_x, support_y) before scoring queries")
        z = self._features(query_x)
        if self.task_weights.ndim == 2:
            return z @ self.task_weights.T
        # Predictive average over posterior samples; log-probabilities are valid logits.
        logp = torch.einsum("nd,swd->snw", z, self.task_weights).log_softmax(-1)
        return torch.logsumexp(logp, 0) - math.log(logp.shape[0])
