"""Metric-based methods: embed, then compare queries with the support set."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.backbones import RelationEncoder
from ..nn.distances import DISTANCES, class_means, pairwise_logits
from ..tasks.episodes import Episode
from ..utils import check_finite
from .base import FewShotMethod, LossOutput, StepOutput, check_support


class ProtoNet(FewShotMethod):
    """Prototypical networks (Snell et al. 2017): a query's logits are its negative distances
    to the class means (prototypes) of the embedded support set.

    Args:
        backbone: embedding network ``[B, ...] -> [B, D]``.
        distance: ``euclidean`` (squared, as in the paper), ``cosine`` or ``dot``.
        scale: multiplies the logits; for cosine a temperature of ~10 is needed to train well.
        learn_scale: make ``scale`` a learnable parameter (default: True for cosine).
    """

    name = "protonet"
    embedding_only = True

    def __init__(self, backbone: nn.Module | None = None, distance: Literal["euclidean", "cosine", "dot"] = "euclidean",
                 scale: float | None = None, learn_scale: bool | None = None):
        super().__init__(backbone)
        if distance not in DISTANCES:
            raise ValueError(f"unknown distance {distance!r}; choose from {', '.join(DISTANCES)}")
        self.distance = distance
        if scale is None:
            scale = 10.0 if distance == "cosine" else 1.0
        if learn_scale is None:
            learn_scale = distance == "cosine"
        self.learn_scale = learn_scale
        self.scale = nn.Parameter(torch.tensor(float(scale)), requires_grad=learn_scale)
        self.prototypes: torch.Tensor | None = None

    def fit_embeddings(self, support_emb: torch.Tensor, support_y: torch.Tensor) -> "ProtoNet":
        self.task_way = check_support(support_emb, support_y)
        self.prototypes = class_means(support_emb, support_y, self.task_way)
        return self

    def _logits(self, query_emb: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        return self.scale * pairwise_logits(query_emb, prototypes, self.distance)

    def scores_embeddings(self, query_emb: torch.Tensor) -> torch.Tensor:
        if self.prototypes is None:
            raise RuntimeError("call fit(support_x, support_y) before scoring queries")
        return self._logits(query_emb, self.prototypes)

    def loss(self, episode: Episode) -> LossOutput:
        # One backbone pass over support and query together (BatchNorm sees the whole episode).
        n_s = episode.support_x.shape[0]
        z = self.embed(torch.cat([episode.support_x, episode.query_x]))
        protos = class_means(z[:n_s], episode.support_y, episode.way)
        scores = self._logits(z[n_s:], protos)
        return LossOutput(F.cross_entropy(scores, episode.query_y), scores)

    def training_step(self, batch: list[Episode]) -> StepOutput:
        """The mean episode loss, one backbone pass per episode (one pass over a whole meta-batch
        measured no faster per image on CPU, and would mix the episodes' BatchNorm statistics);
        no host synchronisation but the finiteness check."""
        losses, correct, total = [], [], 0
        for ep in batch:
            out = self.loss(ep)
            losses.append(out.loss)
            correct.append((out.scores.detach().argmax(-1) == ep.query_y).sum())
            total += ep.query_y.numel()
        loss = torch.stack(losses).mean()
        check_finite(loss, f"{self.name} training step")
        loss.backward()
        return StepOutput(loss.detach(), torch.stack(correct).sum() / max(total, 1))


def feature_dim_for(backbone: nn.Module | None, item_shape: tuple[int, ...]) -> int:
    """Size ``D`` of the flat embedding of items of ``item_shape`` (raw inputs when no backbone)."""
    import math

    from ..nn.backbones import output_dim

    if backbone is None:
        return math.prod(int(s) for s in item_shape)
    return output_dim(backbone, tuple(item_shape))


# ----------------------------------------------------------------------------- matching networks
class FullContextEmbedding(nn.Module):
    """Vinyals et al. (2016), appendix: context-aware embeddings of support and query.

    * support: ``g(x_i, S) = h→_i + h←_i + g'(x_i)``, a bidirectional LSTM over the support sequence;
    * query: ``K`` steps of an attention LSTM, ``h_k = ĥ_k + f'(x)``, with
      ``ĥ_k, c_k = LSTM(f'(x), [h_{k-1}, r_{k-1}], c_{k-1})`` and ``r_{k-1} = Σ_i softmax(h_{k-1}·g_i) g_i``.

    Concatenating ``r`` to the LSTM's recurrent state only adds ``W_r r`` to its gate
    pre-activations, so it is implemented (exactly) by feeding ``[f'(x), r_{k-1}]`` as the cell input;
    the state starts at zero. With ``steps=0`` the query embedding is ``f'(x)``.
    """

    def __init__(self, dim: int, steps: int = 5):
        super().__init__()
        if steps < 0:
            raise ValueError(f"fce_steps must be ≥ 0, got {steps}")
        self.dim, self.steps = dim, steps
        self.support_lstm = nn.LSTM(dim, dim, batch_first=True, bidirectional=True)
        self.query_cell = nn.LSTMCell(2 * dim, dim)

    def support(self, g_prime: torch.Tensor) -> torch.Tensor:
        """``[S, D] -> [S, D]`` (the support order is the sequence order)."""
        out, _ = self.support_lstm(g_prime.unsqueeze(0))  # [1, S, 2D]
        fwd, bwd = out[0].split(self.dim, dim=-1)
        return fwd + bwd + g_prime

    def query(self, f_prime: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """``f_prime [Q, D]`` attending over the context-embedded support ``g [S, D]`` -> ``[Q, D]``."""
        h = torch.zeros_like(f_prime)
        c = torch.zeros_like(f_prime)
        for _ in range(self.steps):
            r = (h @ g.T).softmax(-1) @ g
            h_hat, c = self.query_cell(torch.cat([f_prime, r], -1), (h, c))
            h = h_hat + f_prime
        return h if self.steps else f_prime


class MatchingNet(FewShotMethod):
    """Matching networks (Vinyals et al. 2016): ``p(y|x̂, S) = Σ_i a(x̂, x_i) y_i`` with the attention
    ``a = softmax_i(scale · cos(f(x̂), g(x_i)))``.

    ``scores`` are ``log p`` (the attention already yields probabilities), and the training loss is
    the negative log-likelihood of those log-probabilities — not a softmax cross-entropy on ``p``,
    which would squash them a second time.

    Args:
        backbone: ``f' = g'``, the shared embedding ``[B, ...] -> [B, D]``.
        fce: use full-context embeddings (:class:`FullContextEmbedding`).
        fce_steps: ``K``, unrolling steps of the query attention LSTM.
        scale: multiplies the cosine before the softmax (its initial value when learned; the paper
            has a fixed 1).
        learn_scale: make ``scale`` learnable (default True). With a fixed scale of 1 the attention
            over cosines in [-1, 1] can never be confident (5-way: p ≤ 0.65) and its gradients are
            weak: 77.9% vs 91.4% 5w1s (learned from 10) after the same 300 episodes (docs/metric.md).
        feature_dim: ``D`` (needed by FCE); set by :meth:`setup` from the data when None.
    """

    name = "matching"
    embedding_only = True  # FCE too: its context embedding reads the support set's embeddings only

    renamed_params = {"embedding_dim": "feature_dim"}

    def __init__(self, backbone: nn.Module | None = None, fce: bool = False, fce_steps: int = 5, scale: float = 10.0,
                 learn_scale: bool = True, feature_dim: int | None = None):
        super().__init__(backbone)
        self.fce, self.fce_steps, self.learn_scale = fce, fce_steps, learn_scale
        self.scale = nn.Parameter(torch.tensor(float(scale)), requires_grad=self.learn_scale)
        self.feature_dim = feature_dim
        self.context: FullContextEmbedding | None = None
        if fce and feature_dim is not None:
            self.context = FullContextEmbedding(feature_dim, self.fce_steps)
        self.support_emb: torch.Tensor | None = None
        self.support_y: torch.Tensor | None = None

    def setup(self, dataset) -> None:
        if self.feature_dim is None:
            self.feature_dim = feature_dim_for(self.backbone, tuple(dataset.item_shape))
            if self.fce:
                self.context = FullContextEmbedding(self.feature_dim, self.fce_steps)

    def _context(self) -> FullContextEmbedding | None:
        if self.fce and self.context is None:
            raise RuntimeError("FCE needs the embedding size: pass feature_dim=D or call setup(dataset) first")
        return self.context

    def fit_embeddings(self, support_emb: torch.Tensor, support_y: torch.Tensor) -> "MatchingNet":
        self.task_way = check_support(support_emb, support_y)
        g = support_emb
        ctx = self._context()
        self.support_emb = ctx.support(g) if ctx is not None else g
        self.support_y = support_y.long()
        return self

    def log_proba(self, query_emb: torch.Tensor, support_emb: torch.Tensor, support_y: torch.Tensor, way: int) -> torch.Tensor:
        """``log p(y | x̂, S)`` ``[Q, way]`` from the raw query embeddings ``f'(x̂)`` and the (context) support ones."""
        ctx = self._context()
        f = ctx.query(query_emb, support_emb) if ctx is not None else query_emb
        attention = (self.scale * pairwise_logits(f, support_emb, "cosine")).softmax(-1)  # [Q, S]
        proba = attention @ F.one_hot(support_y, way).to(attention.dtype)  # [Q, way], rows sum to 1
        return proba.clamp_min(1e-12).log()

    def scores_embeddings(self, query_emb: torch.Tensor) -> torch.Tensor:
        if self.support_emb is None or self.task_way is None:
            raise RuntimeError("call fit(support_x, support_y) before scoring queries")
        return self.log_proba(query_emb, self.support_emb, self.support_y, self.task_way)

    def loss(self, episode: Episode) -> LossOutput:
        n_s = episode.support_x.shape[0]
        z = self.embed(torch.cat([episode.support_x, episode.query_x]))
        g = z[:n_s]
        ctx = self._context()
        if ctx is not None:
            g = ctx.support(g)
        log_p = self.log_proba(z[n_s:], g, episode.support_y, episode.way)
        return LossOutput(F.nll_loss(log_p, episode.query_y), log_p)


# ----------------------------------------------------------------------------- relation networks


class RelationModule(nn.Module):
    """``g_φ``: two conv blocks on the concatenated pair of feature maps ``[P, 2C, h, w]``, then
    ``fc(hidden) - ReLU - fc(1)`` -> relation logits ``[P]`` (sigmoid gives Sung's score in [0, 1]).

    Pools with ``ceil_mode`` and a final global max-pool so any map size (even 1×1) works.
    """

    def __init__(self, in_channels: int, channels: int = 64, hidden: int = 8):
        super().__init__()

        def block(cin: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
                    nn.MaxPool2d(2, ceil_mode=True)]

        self.convs = nn.Sequential(*block(2 * in_channels), *block(channels), nn.AdaptiveMaxPool2d(1), nn.Flatten())
        self.fc = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        return self.fc(self.convs(pairs)).squeeze(-1)


class RelationNet(FewShotMethod):
    """Relation networks (Sung et al. 2018): a learned relation module scores each (query, class)
    pair of feature maps; a class's feature map pools its support maps.

    ``scores`` are the relation logits ``[Q, way]`` (``sigmoid`` = Sung's relation score).

    Args:
        backbone: feature-map encoder ``[B, ...] -> [B, C, h, w]`` (flat ``[B, D]`` is treated as ``[B, D, 1, 1]``).
        objective: ``ce`` (softmax cross-entropy, the default: measured far ahead of MSE under a CPU budget)
            or ``mse`` (Sung: regress the sigmoid score to one-hot).
        feature_dim: ``C``, channels of the feature maps; read from ``backbone.out_channels`` or :meth:`setup` when None.
        channels, hidden: width of the relation module's convs and of its hidden fc layer.
        class_pool: ``mean`` (default) or ``sum`` (the paper) of a class's support maps. Both agree at
            1-shot; the sum grows with the shot, so a model trained 1-shot and tested 5-shot sees
            class maps 5× larger than it was trained on (measured: 5-shot accuracy collapses).
    """

    name = "relation"

    renamed_params = {"feature_channels": "feature_dim"}

    def __init__(self, backbone: nn.Module | None = None, objective: Literal["ce", "mse"] = "ce",
                 feature_dim: int | None = None, channels: int = 64, hidden: int = 8,
                 class_pool: Literal["mean", "sum"] = "mean"):
        super().__init__(backbone)
        if objective not in ("mse", "ce"):
            raise ValueError(f"objective must be 'mse' or 'ce', got {objective!r}")
        if class_pool not in ("mean", "sum"):
            raise ValueError(f"class_pool must be 'mean' or 'sum', got {class_pool!r}")
        self.class_pool = class_pool
        self.objective, self.channels, self.hidden = objective, channels, hidden
        if feature_dim is None and backbone is not None and isinstance(getattr(backbone, "out_channels", None), int) \
                and not getattr(backbone, "flatten", False):
            feature_dim = backbone.out_channels
        self.feature_dim = feature_dim
        self.relation: RelationModule | None = None
        if feature_dim is not None:
            self.relation = RelationModule(feature_dim, self.channels, self.hidden)
        self.class_maps: torch.Tensor | None = None

    @classmethod
    def default_backbone(cls, item_shape: tuple[int, ...]) -> tuple[str, dict] | None:
        from ..nn.backbones import backbone_spec_for

        if len(item_shape) == 3 and min(item_shape[1:]) >= 16:
            return backbone_spec_for("relation_conv4", item_shape)
        return super().default_backbone(item_shape)

    def setup(self, dataset) -> None:
        if self.relation is None:
            with torch.no_grad():
                was = self.training
                self.eval()
                fmap = self.feature_maps(torch.zeros((2, *dataset.item_shape)))
                self.train(was)
            self.feature_dim = int(fmap.shape[1])
            self.relation = RelationModule(self.feature_dim, self.channels, self.hidden)

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, h, w]`` feature maps of ``x``."""
        z = x.flatten(1) if self.backbone is None else self.backbone(x)
        return z if z.ndim == 4 else z.reshape(z.shape[0], -1, 1, 1)

    def relation_logits(self, query_maps: torch.Tensor, class_maps: torch.Tensor) -> torch.Tensor:
        """Logits ``[Q, way]`` relating each query map ``[Q, C, h, w]`` to each class map ``[way, C, h, w]``."""
        if self.relation is None:
            raise RuntimeError("the relation module is not built: pass feature_dim=C or call setup(dataset) first")
        q, way = query_maps.shape[0], class_maps.shape[0]
        pairs = torch.cat([class_maps.unsqueeze(0).expand(q, *class_maps.shape),
                           query_maps.unsqueeze(1).expand(q, way, *query_maps.shape[1:])], dim=2)  # [Q, way, 2C, h, w]
        return self.relation(pairs.flatten(0, 1)).view(q, way)

    def _class_maps(self, maps: torch.Tensor, labels: torch.Tensor, way: int) -> torch.Tensor:
        one_hot = F.one_hot(labels, way).to(maps.dtype)  # [S, way]
        if self.class_pool == "mean":
            one_hot = one_hot / one_hot.sum(0)
        return torch.einsum("sk,schw->kchw", one_hot, maps).contiguous()

    def fit(self, support_x: torch.Tensor, support_y: torch.Tensor) -> "RelationNet":
        self.task_way = check_support(support_x, support_y)
        self.class_maps = self._class_maps(self.feature_maps(support_x), support_y.long(), self.task_way)
        return self

    def scores(self, query_x: torch.Tensor) -> torch.Tensor:
        if self.class_maps is None:
            raise RuntimeError("call fit(support_x, support_y) before scoring queries")
        return self.relation_logits(self.feature_maps(query_x), self.class_maps)

    def loss(self, episode: Episode) -> LossOutput:
        n_s = episode.support_x.shape[0]
        maps = self.feature_maps(torch.cat([episode.support_x, episode.query_x]))
        logits = self.relation_logits(maps[n_s:], self._class_maps(maps[:n_s], episode.support_y, episode.way))
        if self.objective == "mse":
            target = F.one_hot(episode.query_y, episode.way).to(logits.dtype)
            loss = F.mse_loss(torch.sigmoid(logits), target)
        else:
            loss = F.cross_entropy(logits, episode.query_y)
        return LossOutput(loss, logits)
