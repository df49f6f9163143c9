"""The BPL generative model of handwritten characters (Lake, Salakhutdinov & Tenenbaum 2015), simplified.

Type level (a character): ``kappa`` strokes; stroke ``i`` is a chain of sub-strokes, each a
primitive ``z`` (k-means cluster of normalised spline shapes) with a shape ``[5, 2]`` and a scale;
primitives follow a Markov chain; stroke ``i > 0`` starts *independently* (an empirical start
density) or at the *start*, *end* or somewhere *along* an earlier stroke. Token level (one
drawing): motor noise on shapes and scales, start jitter, a global affine map. Image level:
:mod:`fewshot.bpl.render`.

Everything is estimated from pen trajectories (:func:`BPLModel.fit`), e.g. background_small1.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..data.strokes import Drawing
from .splines import eval_spline
from .substrokes import normalise, pause_splits

RELATIONS = ("independent", "start", "end", "along")
SIZE = 105  #: canvas side (pixels)
GRID = 7  #: cell side (pixels) of the start-position histogram


@dataclass
class SubStroke:
    prim: int
    shape: np.ndarray  # [5, 2], starts at the origin, unit extent
    scale: float


@dataclass
class Stroke:
    subs: list[SubStroke]
    relation: str = "independent"
    parent: int = -1  # earlier stroke the relation attaches to
    along: float = 0.0  # arc fraction on the parent ("along")
    start: np.ndarray = field(default_factory=lambda: np.zeros(2))  # (x, row): the realised start


@dataclass
class CharacterType:
    strokes: list[Stroke]


def stroke_control_points(stroke: Stroke, start: np.ndarray) -> np.ndarray:
    """Absolute control points ``[S, 5, 2]`` of a stroke's chained sub-strokes from ``start``."""
    out, at = [], np.asarray(start, dtype=np.float64)
    for s in stroke.subs:
        cp = at + (s.shape - s.shape[0]) * s.scale
        out.append(cp)
        at = cp[-1]
    return np.stack(out)


def attach_point(traj: np.ndarray, relation: str, along: float) -> np.ndarray:
    if relation == "start":
        return traj[0]
    if relation == "end":
        return traj[-1]
    seg = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(traj, axis=0), axis=1))])
    u = along * seg[-1]
    return np.array([np.interp(u, seg, traj[:, 0]), np.interp(u, seg, traj[:, 1])])


def control_points(ctype: CharacterType) -> list[np.ndarray]:
    """Absolute control points per stroke (relations resolved in order): list of ``[S_i, 5, 2]``."""
    out, trajs = [], []
    for st in ctype.strokes:
        start = st.start if st.relation == "independent" or st.parent < 0 else attach_point(trajs[st.parent], st.relation, st.along)
        cps = stroke_control_points(st, start)
        out.append(cps)
        trajs.append(eval_spline(cps, 20).reshape(-1, 2))
    return out


def infer_relation(start: np.ndarray, previous: list[np.ndarray], radius: float) -> tuple[str, int, float]:
    """The relation of a stroke starting at ``start`` to earlier trajectories ``[n, 2]``: the closest
    of their starts / ends / interiors within ``radius`` pixels, else independent."""
    best = ("independent", -1, 0.0, radius)
    for j, tr in enumerate(previous):
        for rel, pt in (("end", tr[-1]), ("start", tr[0])):
            d = float(np.linalg.norm(start - pt))
            if d < best[3]:
                best = (rel, j, 0.0, d)
        if best[0] == "independent":
            d = np.linalg.norm(tr - start, axis=1)
            k = int(d.argmin())
            if d[k] < best[3]:
                seg = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(tr, axis=0), axis=1))])
                best = ("along", j, float(seg[k] / max(seg[-1], 1e-9)), float(d[k]))
    return best[:3]


def _log_normal_diag(x: np.ndarray, mean: np.ndarray, var: np.ndarray) -> float:
    return float(-0.5 * (((x - mean) ** 2) / var + np.log(2 * np.pi * var)).sum())


@dataclass
class BPLModel:
    """Learned parameters of the type, token and image levels (JSON-serialisable)."""

    prim_mean: np.ndarray  # [K, 5, 2] primitive shapes
    prim_var: np.ndarray  # [K, 5, 2] shape variance within a primitive
    scale_mu: np.ndarray  # [K] mean log scale
    scale_sd: np.ndarray  # [K]
    log_start_prim: np.ndarray  # [K] first primitive of a stroke
    log_trans: np.ndarray  # [K, K] next primitive within a stroke
    log_nstrokes: np.ndarray  # [MAXK] P(kappa = k+1)
    log_nsubs: np.ndarray  # [MAXS] P(sub-strokes = s+1)
    log_relation: np.ndarray  # [4] over RELATIONS, strokes after the first
    log_start_first: np.ndarray  # [G, G] start-position histogram of first strokes (cells of GRID px)
    log_start_other: np.ndarray  # [G, G] ... of later independent strokes
    relation_radius: float = 5.0
    attach_sd: float = 2.5  # pixels: start jitter around an attachment point
    motor_sd: float = 0.04  # normalised units: token noise on shape control points
    scale_noise_sd: float = 0.1  # token noise on log scales
    affine_scale_sd: float = 0.12
    affine_shift_sd: float = 6.0
    ink_sd: float = 1.5  # blur of the pen (pixels); these three: see fit_ink
    ink_gain: float = 16.0
    noise: float = 3e-3  # pixel flip probability floor

    # ------------------------------------------------------------------ learning
    @classmethod
    def fit(cls, drawings: list[Drawing], primitives: int = 40, seed: int = 0, radius: float = 5.0) -> "BPLModel":
        """Estimate the type-level model from pen trajectories (no images needed)."""
        from sklearn.cluster import KMeans

        shapes, scales, chains, nstrokes, nsubs, rels = [], [], [], [], [], []
        starts_first, starts_other = [], []
        for d in drawings:
            nstrokes.append(len(d.strokes))
            trajs = []
            for i, st in enumerate(d.strokes):
                pieces = pause_splits(st)
                nsubs.append(len(pieces))
                chain = []
                for p in pieces:
                    cp, sc = normalise(p)
                    chain.append(len(shapes))
                    shapes.append(cp)
                    scales.append(sc)
                chains.append(chain)
                start = st[0, :2]
                if i == 0:
                    starts_first.append(start)
                else:
                    rel, _, _ = infer_relation(start, trajs, radius)
                    rels.append(RELATIONS.index(rel))
                    if rel == "independent":
                        starts_other.append(start)
                trajs.append(st[:, :2])
        x = np.stack(shapes).reshape(len(shapes), -1)
        km = KMeans(primitives, n_init=4, random_state=seed).fit(x)
        lab = km.labels_
        k = primitives
        log_sc = np.log(np.asarray(scales))
        mean = np.zeros((k, 5, 2))
        var = np.zeros((k, 5, 2))
        mu, sd = np.zeros(k), np.zeros(k)
        for c in range(k):
            m = lab == c
            mean[c] = x[m].mean(0).reshape(5, 2)
            var[c] = x[m].var(0).reshape(5, 2) + 1e-3
            mu[c], sd[c] = log_sc[m].mean(), log_sc[m].std() + 0.05
        first = np.ones(k)
        trans = np.ones((k, k))
        for ch in chains:
            first[lab[ch[0]]] += 1
            for a, b in zip(ch[:-1], ch[1:]):
                trans[lab[a], lab[b]] += 1
        g = -(-SIZE // GRID)
        return cls(
            mean, var, mu, sd,
            np.log(first / first.sum()),
            np.log(trans / trans.sum(1, keepdims=True)),
            _log_hist(nstrokes, 12), _log_hist(nsubs, 8), _log_hist(rels, 4, offset=0),
            _log_hist2d(starts_first, g), _log_hist2d(starts_other, g),
            relation_radius=radius,
        )

    def fit_ink(self, drawings: list[Drawing], sds=(1.0, 1.5, 2.0), gains=(4.0, 8.0, 16.0, 32.0),
                noises=(1e-3, 3e-3, 1e-2)) -> "BPLModel":
        """Choose the ink blur, gain and noise floor that maximise the likelihood of the drawings'
        images rendered from their own trajectories (drawings need ``image``; grid search)."""
        import torch

        from .render import log_likelihood, pack, render
        from .splines import fit_spline

        if any(d.image is None for d in drawings):
            raise ValueError("fit_ink needs drawings paired with their images (load_strokes(..., images=True))")
        chars = [[np.stack([fit_spline(p) for p in pause_splits(st)]) for st in d.strokes] for d in drawings]
        cps, mask = pack(chars)
        imgs = torch.as_tensor(np.stack([d.image for d in drawings]))
        best = max(((float(log_likelihood(render(cps, mask, sd, g, e), imgs).mean()), sd, g, e)
                    for sd in sds for g in gains for e in noises))
        self.ink_sd, self.ink_gain, self.noise = best[1:]
        return self

    @classmethod
    def generic(cls, directions: int = 8) -> "BPLModel":
        """A hand-set model that needs no stroke data: straight and curved primitives in
        ``directions`` directions, uniform transitions, starts and relations, one scale law.
        For tests and as the "no learned primitives" baseline; learn one with :meth:`fit`."""
        shapes = []
        t = np.linspace(0, 1, 5)
        for bend in (0.0, 0.3, -0.3):
            for a in np.arange(directions) * 2 * np.pi / directions:
                d, n = np.array([np.cos(a), np.sin(a)]), np.array([-np.sin(a), np.cos(a)])
                shapes.append(t[:, None] * d + (bend * 4 * t * (1 - t))[:, None] * n)
        k = len(shapes)
        g = -(-SIZE // GRID)
        return cls(np.stack(shapes), np.full((k, 5, 2), 0.02), np.full(k, np.log(25.0)), np.full(k, 0.6),
                   np.full(k, -np.log(k)), np.full((k, k), -np.log(k)), np.log(np.full(6, 1 / 6)),
                   np.log(np.full(4, 1 / 4)), np.log(np.full(4, 1 / 4)), np.full((g, g), -2 * np.log(g)),
                   np.full((g, g), -2 * np.log(g)))

    # ------------------------------------------------------------------ prior
    def best_primitive(self, shape: np.ndarray, scale: float, prev: int | None) -> tuple[int, float]:
        """The most probable primitive for a sub-stroke and its log joint (transition + shape + scale)."""
        ls = np.log(max(scale, 1e-3))
        lp = (self.log_start_prim if prev is None else self.log_trans[prev]) + self._shape_logp(shape) \
            - 0.5 * ((ls - self.scale_mu) / self.scale_sd) ** 2 - np.log(self.scale_sd) - 0.5 * np.log(2 * np.pi)
        z = int(lp.argmax())
        return z, float(lp[z])

    def _shape_logp(self, shape: np.ndarray) -> np.ndarray:
        d = shape.reshape(1, -1) - self.prim_mean.reshape(len(self.prim_mean), -1)
        v = self.prim_var.reshape(len(self.prim_var), -1)
        return -0.5 * ((d ** 2) / v + np.log(2 * np.pi * v)).sum(1)

    def start_logp(self, start: np.ndarray, first: bool) -> float:
        h = self.log_start_first if first else self.log_start_other
        c = np.clip((np.asarray(start) // GRID).astype(int), 0, h.shape[0] - 1)
        return float(h[c[1], c[0]] - 2 * np.log(GRID))

    def log_prior(self, ctype: CharacterType, relations: bool = True) -> float:
        """log P(type) with each sub-stroke's primitive as given."""
        lp = _cat(self.log_nstrokes, len(ctype.strokes))
        cps_all = control_points(ctype)
        for i, (st, cps) in enumerate(zip(ctype.strokes, cps_all)):
            lp += _cat(self.log_nsubs, len(st.subs))
            prev = None
            for s in st.subs:
                ls = np.log(max(s.scale, 1e-3))
                lp += (self.log_start_prim if prev is None else self.log_trans[prev])[s.prim]
                lp += _log_normal_diag(s.shape, self.prim_mean[s.prim], self.prim_var[s.prim])
                lp += _log_normal_diag(np.array([ls]), self.scale_mu[s.prim:s.prim + 1], self.scale_sd[s.prim:s.prim + 1] ** 2)
                prev = s.prim
            start = cps[0, 0]
            if i == 0:
                lp += self.start_logp(start, True)
            elif not relations or st.relation == "independent":
                lp += (self.log_relation[0] if relations else 0.0) + self.start_logp(start, not relations)
            else:
                lp += self.log_relation[RELATIONS.index(st.relation)]
                # the start is on the attachment point: its density under the token jitter
                lp += -2 * np.log(self.attach_sd) - np.log(2 * np.pi)
        return float(lp)

    # ------------------------------------------------------------------ sampling
    def sample_type(self, rng: np.random.Generator, max_tries: int = 50) -> CharacterType:
        """A new character: strokes, primitives, shapes, scales and relations from the prior."""
        for _ in range(max_tries):
            kappa = rng.choice(len(self.log_nstrokes), p=np.exp(self.log_nstrokes)) + 1
            strokes: list[Stroke] = []
            trajs: list[np.ndarray] = []
            for i in range(kappa):
                ns = rng.choice(len(self.log_nsubs), p=np.exp(self.log_nsubs)) + 1
                subs, prev = [], None
                for _ in range(ns):
                    p = np.exp(self.log_start_prim if prev is None else self.log_trans[prev])
                    z = int(rng.choice(len(p), p=p / p.sum()))
                    shape = self.prim_mean[z] + np.sqrt(self.prim_var[z]) * rng.standard_normal((5, 2))
                    scale = float(np.exp(self.scale_mu[z] + self.scale_sd[z] * rng.standard_normal()))
                    subs.append(SubStroke(z, shape - shape[0], scale))
                    prev = z
                rel = "independent" if i == 0 else RELATIONS[rng.choice(4, p=np.exp(self.log_relation))]
                st = Stroke(subs, rel)
                if rel == "independent":
                    st.start = self._sample_start(rng, i == 0)
                else:
                    st.parent = int(rng.integers(i))
                    st.along = float(rng.random())
                strokes.append(st)
                start = st.start if rel == "independent" else attach_point(trajs[st.parent], rel, st.along)
                trajs.append(eval_spline(stroke_control_points(st, start), 20).reshape(-1, 2))
            pts = np.concatenate(trajs)
            if pts.min() >= 0 and pts.max() < SIZE:
                return CharacterType(strokes)
        return CharacterType(strokes)

    def _sample_start(self, rng: np.random.Generator, first: bool) -> np.ndarray:
        h = np.exp(self.log_start_first if first else self.log_start_other)
        cell = rng.choice(h.size, p=h.ravel() / h.sum())
        r, c = divmod(cell, h.shape[1])
        return (np.array([c, r]) + rng.random(2)) * GRID

    def sample_token(self, ctype: CharacterType, rng: np.random.Generator) -> list[np.ndarray]:
        """One drawing of a type: absolute control points per stroke ``[S_i, 5, 2]`` after motor
        noise, start jitter and a random affine map about the canvas centre."""
        strokes = []
        for st in ctype.strokes:
            subs = [SubStroke(s.prim, s.shape + self.motor_sd * rng.standard_normal((5, 2)),
                              s.scale * float(np.exp(self.scale_noise_sd * rng.standard_normal()))) for s in st.subs]
            strokes.append(Stroke(subs, st.relation, st.parent, st.along, st.start + self.attach_sd * rng.standard_normal(2)))
        cps = control_points(CharacterType(strokes))
        a = 1 + self.affine_scale_sd * rng.standard_normal(2)
        b = self.affine_shift_sd * rng.standard_normal(2) * 0.5
        c = SIZE / 2
        return [(p - c) * a + c + b for p in cps]

    # ------------------------------------------------------------------ I/O
    def to_dict(self) -> dict:
        return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "BPLModel":
        arrays = {"prim_mean", "prim_var", "scale_mu", "scale_sd", "log_start_prim", "log_trans", "log_nstrokes",
                  "log_nsubs", "log_relation", "log_start_first", "log_start_other"}
        return cls(**{k: (np.asarray(v, dtype=np.float64) if k in arrays else v) for k, v in d.items()})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: str | Path) -> "BPLModel":
        return cls.from_dict(json.loads(Path(path).read_text()))


def _cat(logp: np.ndarray, k: int) -> float:
    """log P(count = k) of a 1-based count; counts beyond the table share its last bin's mass, geometric."""
    if k <= len(logp):
        return float(logp[k - 1])
    return float(logp[-1] + (k - len(logp)) * np.log(0.5))


def _log_hist(values: list[int], n: int, offset: int = 1) -> np.ndarray:
    h = np.ones(n)
    for v in values:
        h[min(v - offset, n - 1)] += 1
    return np.log(h / h.sum())


def _log_hist2d(points: list[np.ndarray], g: int) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    h = np.zeros((g, g))
    for p in points:
        c = np.clip((np.asarray(p) // GRID).astype(int), 0, g - 1)
        h[c[1], c[0]] += 1
    h = gaussian_filter(h, 0.7) + 0.05
    return np.log(h / h.sum())
