"""Pairwise similarities and class prototypes shared by the metric and non-parametric methods."""

from __future__ import annotations

import torch
import torch.nn.functional as F

DISTANCES = ("euclidean", "cosine", "dot")


def pairwise_logits(query: torch.Tensor, keys: torch.Tensor, distance: str = "euclidean") -> torch.Tensor:
    """Similarity logits ``[Q, K]`` between ``query [Q, D]`` and ``keys [K, D]``.

    ``euclidean`` is the negative *squared* distance (ProtoNet), ``cosine`` the cosine
    similarity in ``[-1, 1]``, ``dot`` the inner product. Larger means more similar.
    """
    if query.ndim != 2 or keys.ndim != 2 or query.shape[1] != keys.shape[1]:
        raise ValueError(f"expected query [Q, D] and keys [K, D] with the same D; got {tuple(query.shape)} and {tuple(keys.shape)}")
    if distance == "euclidean":
        sq = (query * query).sum(1, keepdim=True) - 2.0 * query @ keys.T + (keys * keys).sum(1)
        return -sq.clamp_min(0.0)
    if distance == "cosine":
        return F.normalize(query, dim=1) @ F.normalize(keys, dim=1).T
    if distance == "dot":
        return query @ keys.T
    raise ValueError(f"unknown distance {distance!r}; choose from {', '.join(DISTANCES)}")


def class_means(embeddings: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """Per-class mean ``[N_classes, D]`` of ``embeddings [N, D]`` with labels in ``0..N_classes-1``."""
    n = int(labels.max()) + 1 if num_classes is None else num_classes
    one_hot = F.one_hot(labels, n).to(embeddings.dtype)  # [N, C]
    counts = one_hot.sum(0)
    if (counts == 0).any():
        missing = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"classes {missing} have no support examples; labels must cover 0..{n - 1}")
    return (one_hot.T @ embeddings) / counts[:, None]
