"""Parsing an image into stroke programs (Lake et al. 2015, simplified).

The ink is thinned to a one-pixel skeleton (Zhang & Suen 1984), the skeleton becomes a graph
(nodes: ends and junctions; edges: pixel paths), and random walks through the graph that cover
every edge propose stroke orders and directions. Each walk is turned into a type (sub-strokes
split at the corners that maximise the prior, primitives, scales, relations) and scored by
``log P(type) + log P(image | type)``; the best ``K`` distinct parses are kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .model import BPLModel, CharacterType, Stroke, SubStroke, control_points, infer_relation
from .render import log_likelihood, pack, render
from .substrokes import corner_candidates, normalise, split_at

_NB = [(-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1)]


def thin(image: np.ndarray) -> np.ndarray:
    """Zhang-Suen thinning of a binary image ``[H, W]`` (ink true) to a one-pixel skeleton."""
    im = np.pad(image.astype(np.uint8), 1)
    while True:
        changed = False
        for step in (0, 1):
            c = im[1:-1, 1:-1]
            p2, p3, p4, p5 = im[:-2, 1:-1], im[:-2, 2:], im[1:-1, 2:], im[2:, 2:]
            p6, p7, p8, p9 = im[2:, 1:-1], im[2:, :-2], im[1:-1, :-2], im[:-2, :-2]
            seq = [p2, p3, p4, p5, p6, p7, p8, p9, p2]
            b = sum(seq[:8])
            a = sum(((seq[i] == 0) & (seq[i + 1] == 1)).astype(np.uint8) for i in range(8))
            if step == 0:
                m = (p2 * p4 * p6 == 0) & (p4 * p6 * p8 == 0)
            else:
                m = (p2 * p4 * p8 == 0) & (p2 * p6 * p8 == 0)
            rm = (c == 1) & (b >= 2) & (b <= 6) & (a == 1) & m
            if rm.any():
                c[rm] = 0
                changed = True
        if not changed:
            return im[1:-1, 1:-1].astype(bool)


def _crossings(p, pix) -> int:
    """Number of separate ink runs around pixel ``p`` (3+: a junction; staircases count 2)."""
    ring = [(p[0] + dr, p[1] + dc) in pix for dr, dc in _NB]
    return sum(1 for i in range(8) if not ring[i] and ring[(i + 1) % 8]) or (1 if all(ring) else 0)


@dataclass
class Graph:
    """Skeleton graph: ``nodes [N, 2]`` as (x, row); ``edges`` as (u, v, path ``[n, 2]`` from u to v)."""

    nodes: np.ndarray
    edges: list[tuple[int, int, np.ndarray]]
    degree: np.ndarray


def skeleton_graph(skel: np.ndarray, min_spur: float = 4.0) -> Graph:
    """Build the graph of a skeleton; spurs shorter than ``min_spur`` pixels are dropped."""
    pix = set(zip(*np.nonzero(skel)))
    nbrs = {p: [(p[0] + dr, p[1] + dc) for dr, dc in _NB if (p[0] + dr, p[1] + dc) in pix] for p in pix}
    critical = {p for p in pix if len(nbrs[p]) < 2 or _crossings(p, pix) >= 3}
    # pure loops: promote one pixel per loop to a node
    comp_of, ncomp = {}, 0
    for p in sorted(pix):
        if p in comp_of:
            continue
        stack, members = [p], []
        comp_of[p] = ncomp
        while stack:
            q = stack.pop()
            members.append(q)
            for r in nbrs[q]:
                if r not in comp_of:
                    comp_of[r] = ncomp
                    stack.append(r)
        if not any(m in critical for m in members):
            critical.add(min(members))
        ncomp += 1
    node_of: dict = {}
    nodes = []
    for p in sorted(critical):
        if p in node_of:
            continue
        stack = [p]
        node_of[p] = len(nodes)
        members = []
        while stack:
            q = stack.pop()
            members.append(q)
            for r in nbrs[q]:
                if r in critical and r not in node_of:
                    node_of[r] = len(nodes)
                    stack.append(r)
        nodes.append(np.mean([(c, r) for r, c in members], axis=0))
    edges, used = [], set()
    for p in sorted(critical):
        for n in nbrs[p]:
            if n in critical or n in used:
                continue
            path, prev, cur = [p, n], p, n
            while cur not in critical:
                used.add(cur)
                nxt = [r for r in nbrs[cur] if r != prev and r not in path[1:-1] and (r not in used or r in critical)]
                # skip the corner pixel of a staircase: it touches the previous pixel too
                ahead = [r for r in nxt if r in critical or max(abs(r[0] - prev[0]), abs(r[1] - prev[1])) > 1]
                nxt = ahead or nxt
                if not nxt:
                    break
                # prefer 4-neighbours: diagonal shortcuts skip pixels
                nxt.sort(key=lambda r: abs(r[0] - cur[0]) + abs(r[1] - cur[1]))
                prev, cur = cur, nxt[0]
                path.append(cur)
            if cur not in node_of:  # a dead end the degree test missed: it becomes an end node
                node_of[cur] = len(nodes)
                nodes.append(np.array([cur[1], cur[0]], dtype=np.float64))
            xy = np.array([(c, r) for r, c in path], dtype=np.float64)
            u, v = node_of[p], node_of[cur]
            xy[0], xy[-1] = nodes[u], nodes[v]
            edges.append((u, v, xy))
    nodes_arr = np.array(nodes) if nodes else np.zeros((0, 2))
    deg = np.zeros(len(nodes), dtype=int)
    for u, v, _ in edges:
        deg[u] += 1
        deg[v] += 1
    keep = []
    for u, v, xy in edges:
        length = float(np.linalg.norm(np.diff(xy, axis=0), axis=1).sum())
        spur = (deg[u] == 1) != (deg[v] == 1) and max(deg[u], deg[v]) >= 3
        if not (spur and length < min_spur):
            keep.append((u, v, xy))
    deg = np.zeros(len(nodes), dtype=int)
    for u, v, _ in keep:
        deg[u] += 1
        deg[v] += 1
    return Graph(nodes_arr, keep, deg)


def random_walk(g: Graph, rng: np.random.Generator, lift: float = 0.15, turn_sd: float = 0.6) -> list[np.ndarray]:
    """One cover of every edge by pen strokes: trajectories ``[n, 2]`` in drawing order."""
    unvisited = set(range(len(g.edges)))
    strokes = []
    lone = [i for i in range(len(g.nodes)) if g.degree[i] == 0]
    for i in lone:
        strokes.append(np.repeat(g.nodes[i:i + 1], 2, axis=0))
    while unvisited:
        cand = sorted({n for e in unvisited for n in g.edges[e][:2]})
        w = np.array([(3.0 if g.degree[n] == 1 else 1.0) * np.exp(-(g.nodes[n].sum()) / 60) for n in cand])
        cur = cand[rng.choice(len(cand), p=w / w.sum())]
        traj, prev_dir = [g.nodes[cur][None]], None
        while True:
            opts = []
            for e in unvisited:
                u, v, xy = g.edges[e]
                if u == cur:
                    opts.append((e, xy))
                if v == cur and u != v:
                    opts.append((e, xy[::-1]))
                elif v == cur:
                    opts.append((e, xy[::-1]))
            if not opts or (prev_dir is not None and rng.random() < lift):
                break
            if prev_dir is None:
                p = np.ones(len(opts))
            else:
                ang = []
                for _, xy in opts:
                    d = xy[min(4, len(xy) - 1)] - xy[0]
                    cos = d @ prev_dir / max(np.linalg.norm(d) * np.linalg.norm(prev_dir), 1e-9)
                    ang.append(np.arccos(np.clip(cos, -1, 1)))
                p = np.exp(-0.5 * (np.array(ang) / turn_sd) ** 2) + 1e-3
            e, xy = opts[rng.choice(len(opts), p=p / p.sum())]
            unvisited.discard(e)
            traj.append(xy[1:])
            prev_dir = xy[-1] - xy[max(0, len(xy) - 5)]
            cur = g.edges[e][1] if np.allclose(xy[-1], g.nodes[g.edges[e][1]]) else g.edges[e][0]
        strokes.append(_smooth(np.concatenate(traj)))
    return strokes


def _smooth(xy: np.ndarray) -> np.ndarray:
    if len(xy) < 5:
        return xy
    out = xy.copy()
    out[1:-1] = (xy[:-2] + xy[1:-1] + xy[2:]) / 3
    return out


def trajectories_to_type(trajs: list[np.ndarray], model: BPLModel, relations: bool = True) -> CharacterType:
    """A type for given stroke trajectories: the sub-stroke splits (among corner candidates) and
    primitives with the highest prior, and each stroke's relation to the earlier ones."""
    strokes = []
    for i, xy in enumerate(trajs):
        corners = corner_candidates(xy)
        best = None
        for mask in range(1 << len(corners)):
            cuts = [c for j, c in enumerate(corners) if mask >> j & 1]
            subs, lp, prev = [], model.log_nsubs[min(len(cuts), len(model.log_nsubs) - 1)], None
            for piece in split_at(xy, cuts):
                shape, scale = normalise(piece)
                z, l = model.best_primitive(shape, scale, prev)
                subs.append(SubStroke(z, shape, scale))
                lp += l
                prev = z
            if best is None or lp > best[0]:
                best = (lp, subs)
        st = Stroke(best[1], start=xy[0].copy())
        if relations and i > 0:
            st.relation, st.parent, st.along = infer_relation(xy[0], trajs[:i], model.relation_radius)
        strokes.append(st)
    return CharacterType(strokes)


@dataclass
class Parse:
    """A candidate program for an image: its type, absolute control points per stroke, and scores."""

    ctype: CharacterType
    cps: list[np.ndarray]
    log_prior: float
    log_lik: float

    @property
    def score(self) -> float:
        return self.log_prior + self.log_lik


def parse_image(image: np.ndarray, model: BPLModel, k: int = 5, walks: int = 100, seed: int = 0,
                relations: bool = True) -> list[Parse]:
    """The ``k`` best distinct parses of a binary image ``[105, 105]`` (ink = 1) among ``walks`` random walks."""
    img = np.asarray(image) > 0
    if not img.any():
        raise ValueError("cannot parse an empty image (no ink)")
    g = skeleton_graph(thin(img))
    rng = np.random.default_rng(seed)
    seen, cands = set(), []
    for _ in range(walks):
        trajs = random_walk(g, rng)
        sig = tuple((tuple(np.round(t[0])), tuple(np.round(t[-1])), len(t)) for t in trajs)
        if sig in seen:
            continue
        seen.add(sig)
        ctype = trajectories_to_type(trajs, model, relations)
        cands.append((ctype, control_points(ctype)))
    cps, mask = pack([c for _, c in cands])
    with torch.no_grad():
        ll = log_likelihood(render(cps, mask, model.ink_sd, model.ink_gain, model.noise), torch.as_tensor(img)).numpy()
    parses = [Parse(t, c, model.log_prior(t, relations), float(l)) for (t, c), l in zip(cands, ll)]
    parses.sort(key=lambda p: -p.score)
    return parses[:k]
