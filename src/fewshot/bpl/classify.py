"""One-shot classification by refitting parses (Lake et al. 2015, simplified).

``log P(I_T | I_c) ≈ logsumexp_k [w_k + max_token (log P(I_T | token) + log P(token | type_k))]``
over the ``K`` best parses of the training image ``I_c`` (weights ``w_k`` ∝ their own-image
scores), and the two-way score is ``log P(I_T | I_c) + log P(I_c | I_T) - log P(I_c)``. The token
variables refitted by a few Adam steps: per-control-point motor noise, a shift per stroke (the
start jitter) and a global affine map (scales and translation).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from multiprocessing import get_context

import numpy as np
import torch
from scipy.special import logsumexp

from .model import BPLModel
from .parse import Parse, parse_image
from .render import SIZE, log_likelihood, pack, render


@dataclass(frozen=True)
class FitOptions:
    """Search and refit budget. ``affine=False``/``relations=False`` are the ablations."""

    k: int = 5  #: parses kept per image
    walks: int = 100  #: random walks proposed per image
    steps: int = 25  #: Adam steps when refitting a token to an image
    lr: float = 0.5
    affine: bool = True
    relations: bool = True
    independent_sd: float = 5.0  #: start jitter (pixels) of strokes not attached by a relation
    coarse_blur: float = 2.5  #: pen width factor of the first half of the refit steps


def refit(parses: list[Parse], image: np.ndarray, model: BPLModel, opts: FitOptions) -> np.ndarray:
    """Best ``log P(image | token) + log P(token | type)`` of each parse's token ``[B]``."""
    with torch.enable_grad():  # callers may evaluate under no_grad; the refit descends
        return _refit(parses, image, model, opts)


def _refit(parses: list[Parse], image: np.ndarray, model: BPLModel, opts: FitOptions) -> np.ndarray:
    cps0, mask = pack([p.cps for p in parses])
    b, s = mask.shape
    # stroke of each sub-stroke, and its jitter scale (attached strokes move less)
    stroke_id = torch.zeros(b, s, dtype=torch.long)
    n_strokes = max(len(p.cps) for p in parses)
    jitter = torch.ones(b, n_strokes)
    sub_scale = torch.ones(b, s)
    for i, p in enumerate(parses):
        j = 0
        for k, (st, cp) in enumerate(zip(p.ctype.strokes, p.cps)):
            stroke_id[i, j: j + len(cp)] = k
            sub_scale[i, j: j + len(cp)] = torch.tensor([max(x.scale, 1.0) for x in st.subs])
            attached = opts.relations and st.relation != "independent"
            jitter[i, k] = model.attach_sd if attached else opts.independent_sd
            j += len(cp)
    motor_sd = (model.motor_sd * sub_scale)[..., None, None]  # [B, S, 1, 1] pixels
    delta = torch.zeros_like(cps0, requires_grad=True)
    shift = torch.zeros(b, n_strokes, 2, requires_grad=True)
    img = torch.as_tensor(np.asarray(image) > 0)
    centre = SIZE / 2
    log_a = torch.zeros(b, 2)
    t = torch.zeros(b, 2)
    if opts.affine:  # start from the moment match of the ink (centre and spread), then descend
        rows, cols = torch.nonzero(img, as_tuple=True)
        target = torch.stack([cols, rows], 1).float()
        m = mask[..., None, None].expand_as(cps0)
        mean = (cps0 * m).sum((1, 2)) / m.sum((1, 2))
        spread = (((cps0 - mean[:, None, None]) ** 2 * m).sum((1, 2)) / m.sum((1, 2))).sqrt().clamp_min(1.0)
        log_a = (target.std(0).clamp_min(1.0) / spread).log().clamp(-0.4, 0.4)
        t = target.mean(0) - centre - (mean - centre) * log_a.exp()
    log_a.requires_grad_(True)
    t.requires_grad_(True)
    groups = [{"params": [delta, shift, t] if opts.affine else [delta, shift]}]
    if opts.affine:
        groups.append({"params": [log_a], "lr": opts.lr / 25})  # log-scale: 0.02 per step at most
    optim = torch.optim.Adam(groups, lr=opts.lr)
    best = torch.full((b,), -float("inf"))
    coarse = opts.steps // 2
    for step in range(opts.steps + 1):
        pts = cps0 + delta + torch.gather(shift, 1, stroke_id[..., None].expand(b, s, 2))[:, :, None]
        pts = (pts - centre) * log_a.exp()[:, None, None] + centre + t[:, None, None]
        # coarse-to-fine: a wider pen first gives gradients from strokes that do not overlap yet
        sd = model.ink_sd * (opts.coarse_blur if step < coarse else 1.0)
        ll = log_likelihood(render(pts, mask, sd, model.ink_gain, model.noise), img)
        prior = (-0.5 * (delta / motor_sd) ** 2 * mask[..., None, None]).flatten(1).sum(1) \
            - 0.5 * ((shift / jitter[..., None]) ** 2).flatten(1).sum(1)
        if opts.affine:
            prior = prior - 0.5 * ((log_a / model.affine_scale_sd) ** 2).sum(1) - 0.5 * ((t / model.affine_shift_sd) ** 2).sum(1)
        total = ll + prior
        if step >= coarse:
            best = torch.maximum(best, total.detach())
        if step == opts.steps:
            break
        optim.zero_grad()
        (-total.sum()).backward()
        optim.step()
    return best.numpy()


# ---------------------------------------------------------------------- parallel driver
_MODEL: BPLModel | None = None


def _init(model_dict: dict) -> None:
    global _MODEL
    torch.set_num_threads(1)
    _MODEL = BPLModel.from_dict(model_dict)


def _parse_job(args):
    image, opts, seed = args
    parses = parse_image(image, _MODEL, k=opts.k, walks=opts.walks, seed=seed, relations=opts.relations)
    own = refit(parses, image, _MODEL, opts)
    return parses, own


def _refit_job(args):
    parses, image, opts = args
    return refit(parses, image, _MODEL, opts)


class BPLClassifier:
    """Two-way parse-refit scores between query and support images (``[105, 105]`` binary, ink = 1).

    Args:
        model: the learned :class:`BPLModel`.
        opts: search/refit budget and ablations.
        workers: processes for the parses and the pairwise refits (1: in-process).
    """

    def __init__(self, model: BPLModel, opts: FitOptions = FitOptions(), workers: int = 2, seed: int = 0):
        self.model, self.opts, self.workers, self.seed = model, opts, workers, seed

    def _map(self, fn, jobs):
        if self.workers <= 1:
            _init(self.model.to_dict())
            return [fn(j) for j in jobs]
        with get_context("fork" if os.name == "posix" else "spawn").Pool(
                self.workers, initializer=_init, initargs=(self.model.to_dict(),)) as pool:
            return pool.map(fn, jobs, chunksize=1)

    def pair_fits(self, support: np.ndarray, query: np.ndarray) -> "PairFits":
        """Parse every image and refit every parse to every image of the other set (both directions)."""
        images = list(support) + list(query)
        parsed = self._map(_parse_job, [(im, self.opts, self.seed + i) for i, im in enumerate(images)])
        n = len(support)
        jobs = [([p for i in range(n) for p in parsed[i][0]], im, self.opts) for im in query]
        jobs += [([p for i in range(n, len(images)) for p in parsed[i][0]], im, self.opts) for im in support]
        fits = self._map(_refit_job, jobs)
        return PairFits([own for _, own in parsed], fits[: len(query)], fits[len(query):], n)

    def scores(self, support: np.ndarray, query: np.ndarray) -> np.ndarray:
        """Two-way log scores ``[Q, N]`` of queries ``[Q, 105, 105]`` against supports ``[N, 105, 105]``."""
        return self.pair_fits(support, query).two_way()


@dataclass
class PairFits:
    """Refit scores of one task. ``own[i]``: the kept parses of image ``i`` (supports first) refitted
    to their own image ``[K_i]``; ``to_query[q]``: all support parses (concatenated) fitted to query
    ``q``; ``to_support[c]``: all query parses fitted to support ``c``."""

    own: list[np.ndarray]
    to_query: list[np.ndarray]
    to_support: list[np.ndarray]
    n_support: int

    def two_way(self, k: int | None = None, one_way: bool = False) -> np.ndarray:
        """Scores ``[Q, N]`` using the best ``k`` parses per image (all kept ones by default)."""
        n = self.n_support
        sizes = [len(o) for o in self.own]
        offs = np.concatenate([[0], np.cumsum(sizes[:n])]), np.concatenate([[0], np.cumsum(sizes[n:])])
        kk = [min(s, k or s) for s in sizes]
        w = [o[:j] - logsumexp(o[:j]) for o, j in zip(self.own, kk)]
        marg = [logsumexp(o[:j]) for o, j in zip(self.own, kk)]
        out = np.zeros((len(self.to_query), n))
        for q in range(len(self.to_query)):
            for c in range(n):
                a = self.to_query[q][offs[0][c]: offs[0][c] + kk[c]]
                out[q, c] = logsumexp(w[c] + a)
                if not one_way:
                    b = self.to_support[c][offs[1][q]: offs[1][q] + kk[n + q]]
                    out[q, c] += logsumexp(w[n + q] + b) - marg[c]
        return out
