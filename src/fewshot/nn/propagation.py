"""Label propagation on a k-nearest-neighbour graph (Zhou et al. 2004), as Iscen et al. 2019 use it to
pseudo-label an unlabelled pool: labels spread from the labelled items along the pool's own
neighbourhoods, so an item far from every labelled one is labelled by the items between them."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def knn_graph(x: torch.Tensor, k: int, gamma: float = 3.0, chunk: int = 2048) -> torch.Tensor:
    """Symmetric sparse affinities ``[N, N]`` of ``x [N, D]``: each item's ``k`` most cosine-similar
    other items, weighted ``max(cos, 0) ** gamma``, then ``W + W^T``."""
    n = len(x)
    if not 1 <= k < n:
        raise ValueError(f"k must lie in [1, {n - 1}] (neighbours of one of {n} items), got {k}")
    z = F.normalize(x.float(), dim=1)
    rows, cols, vals = [], [], []
    for start in range(0, n, chunk):  # [chunk, N] similarities at a time, however large the pool
        sim = z[start:start + chunk] @ z.T
        idx = torch.arange(start, min(start + chunk, n))
        sim[torch.arange(len(idx)), idx] = -2.0  # never one's own neighbour
        top = sim.topk(k, dim=1)
        rows.append(idx.repeat_interleave(k))
        cols.append(top.indices.flatten())
        vals.append(top.values.clamp_min(0.0).flatten() ** gamma)
    w = torch.sparse_coo_tensor(torch.stack([torch.cat(rows), torch.cat(cols)]), torch.cat(vals), (n, n),
                                check_invariants=True)
    return (w + w.t()).coalesce()


def label_propagation(x: torch.Tensor, y: torch.Tensor, num_classes: int, k: int = 10, alpha: float = 0.99,
                      gamma: float = 3.0, iterations: int = 20) -> torch.Tensor:
    """Class probabilities ``[N - L, C]`` of the unlabelled rows of ``x [N, D]`` whose first ``L = len(y)``
    rows are labelled ``y [L]`` (Zhou et al. 2004; Iscen et al. 2019's graph and normalisation).

    Solves ``(I - alpha S) Z = Y`` by conjugate gradients, ``S = D^-1/2 W D^-1/2`` the normalised
    :func:`knn_graph` and ``Y`` the one-hot labels (zero rows for the unlabelled items); each class's
    column is divided by its sum (so a class with more labelled items does not take over the pool)
    before the rows become probabilities. An item the graph does not reach gets uniform probabilities.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1) (the weight of the neighbours against the labels), got {alpha}")
    labelled = len(y)
    if not 0 < labelled < len(x):
        raise ValueError(f"need labelled and unlabelled rows: {labelled} labels for {len(x)} items")
    w = knn_graph(x, k, gamma)
    degree = torch.sparse.sum(w, dim=1).to_dense()
    d = degree.clamp_min(1e-12).rsqrt()
    i, j = w.indices()
    s = torch.sparse_coo_tensor(w.indices(), d[i] * w.values() * d[j], w.shape, check_invariants=True).coalesce()
    target = torch.zeros(len(x), num_classes)
    target[torch.arange(labelled), y] = 1.0

    def apply(v: torch.Tensor) -> torch.Tensor:  # (I - alpha S) v
        return v - alpha * torch.sparse.mm(s, v)

    # conjugate gradients on every class column at once (the matrix is symmetric positive definite)
    z, r = torch.zeros_like(target), target.clone()  # from z = 0 the residual is the target itself
    p, rr = r.clone(), (r * r).sum(0)
    for _ in range(iterations):
        ap = apply(p)
        step = rr / (p * ap).sum(0).clamp_min(1e-30)
        z, r = z + step * p, r - step * ap
        rr_new = (r * r).sum(0)
        p, rr = r + (rr_new / rr.clamp_min(1e-30)) * p, rr_new
    z = z[labelled:].clamp_min(0.0)
    z = z / z.sum(0).clamp_min(1e-12)
    total = z.sum(1, keepdim=True)
    return torch.where(total > 0, z / total.clamp_min(1e-30), torch.full_like(z, 1.0 / num_classes))
