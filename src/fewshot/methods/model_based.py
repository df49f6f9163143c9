"""Model-based methods: networks that learn new classes inside their activations or an external memory.

* ``mann``: memory-augmented neural network (Santoro et al. 2016): an LSTM controller with a
  least-recently-used-access (LRUA) memory, shown an episode as a sequence.
* ``lstm_seq``: the same sequence learner without external memory (the paper's LSTM baseline).
* ``metanet``: Meta Networks (Munkhdalai & Yu 2017): fast weights generated from loss gradients,
  stored per support example and read back by attention.

**Sequence protocol (mann, lstm_seq).** Step ``t`` receives the item ``x_t`` and the one-hot label of
step ``t-1`` (zeros at ``t = 0``) and predicts the label of ``x_t``. Training (``loss``): the episode's
support and query items are shuffled into one sequence and the cross-entropy is averaged over every
step. Evaluation (``fit``/``scores``): ``fit`` stores the support set; ``scores`` runs the support
items as a sequence (in a fixed shuffled order) and then presents every query as the next step
(each query continues the same state independently, with the last support label as its label input).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..tasks.episodes import Episode
from ..nn.inner_loop import preprocess_gradient
from ..nn.memory import LRUA
from ..utils import check_finite
from .base import FewShotMethod, LossOutput, StepOutput, check_support


def _item_features(shape: tuple[int, ...]) -> int:
    return int(math.prod(shape))


class SequenceClassifier(FewShotMethod):
    """Base of the sequence learners: labels arrive one step late; subclasses define one step.

    Args:
        feature_dim: features per item after the backbone (default: set from the data in ``setup``).
        way: size of the label one-hot and of the output (the largest ``way`` it can handle).
        hidden: LSTM controller units.
    """

    renamed_params = {"labels": "way", "input_size": "feature_dim"}
    test_options = {"hidden": 16}

    def __init__(self, backbone: nn.Module | None = None, feature_dim: int | None = None, way: int = 5,
                 hidden: int = 200):
        super().__init__(backbone)
        self.feature_dim, self.way, self.hidden = feature_dim, way, hidden
        self.support: tuple[torch.Tensor, torch.Tensor] | None = None
        if feature_dim is not None:
            self._build(feature_dim)

    @classmethod
    def default_backbone(cls, item_shape: tuple[int, ...]) -> None:
        return None  # raw pixels, as in the paper

    def setup(self, dataset) -> None:
        if self.feature_dim is None:
            if self.backbone is not None:
                from ..nn.backbones import output_dim

                self.feature_dim = output_dim(self.backbone, dataset.item_shape)
            else:
                self.feature_dim = _item_features(dataset.item_shape)
            self._build(self.feature_dim)

    # subclasses ---------------------------------------------------------------------------------
    def _build(self, feature_dim: int) -> None:
        raise NotImplementedError

    def initial_state(self, batch: int, device: torch.device) -> Any:
        raise NotImplementedError

    def step(self, x: torch.Tensor, prev_label: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """``x [B, D]``, ``prev_label [B, way]`` -> logits ``[B, way]`` and the new state."""
        raise NotImplementedError

    @staticmethod
    def expand_state(state: Any, n: int) -> Any:
        """Repeat a batch-1 state ``n`` times (to score queries in parallel)."""
        raise NotImplementedError

    # sequences ----------------------------------------------------------------------------------
    def _check_ready(self, way: int) -> None:
        if self.feature_dim is None:
            raise RuntimeError(f"{self.name} needs feature_dim: pass it, or let the trainer call setup(dataset)")
        if way > self.way:
            raise ValueError(f"{self.name} was built for at most {self.way} classes (way={self.way}); "
                             f"this episode has {way}. Rebuild it with -p way={way} (fewshot train: --way {way}).")

    def run_sequence(self, x: torch.Tensor, y: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        """Run items ``x [T, B, ...]`` with labels ``y [T, B]`` -> logits ``[T, B, way]`` and the final state."""
        t_len, b = y.shape
        feats = self.embed(x.reshape(t_len * b, *x.shape[2:])).reshape(t_len, b, -1)
        if feats.shape[-1] != self.feature_dim:
            raise ValueError(f"{self.name} expects {self.feature_dim} features per item; got {feats.shape[-1]} "
                             f"(items of shape {tuple(x.shape[2:])})")
        onehot = F.one_hot(y, self.way).to(feats.dtype)
        prev = torch.cat([torch.zeros_like(onehot[:1]), onehot[:-1]])
        if state is None:
            state = self.initial_state(b, feats.device)
        outs = []
        for t in range(t_len):
            logits, state = self.step(feats[t], prev[t], state)
            outs.append(logits)
        return torch.stack(outs), state

    def fit(self, support_x: torch.Tensor, support_y: torch.Tensor) -> "SequenceClassifier":
        self.task_way = check_support(support_x, support_y)
        self._check_ready(self.task_way)
        # A fixed shuffle: the sampler's class-sorted order is unlike the random order trained on.
        order = torch.randperm(len(support_y), generator=torch.Generator().manual_seed(0)).to(support_y.device)
        self.support = (support_x[order], support_y[order])
        return self

    def scores(self, query_x: torch.Tensor) -> torch.Tensor:
        if self.support is None:
            raise RuntimeError("call fit(support_x, support_y) before scoring queries")
        sx, sy = self.support
        _, state = self.run_sequence(sx.unsqueeze(1), sy.unsqueeze(1))
        q = query_x.shape[0]
        state = self.expand_state(state, q)
        last = F.one_hot(sy[-1:], self.way).to(query_x.dtype).expand(q, -1)
        feats = self.embed(query_x)
        logits, _ = self.step(feats, last, state)
        return logits[:, : self.task_way]

    def sequence_of(self, episodes: list[Episode]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Shuffle each episode's support + query into one sequence: items ``[T, B, ...]``, labels
        ``[T, B]`` and a mask ``[T, B]`` marking the query positions."""
        xs, ys, qs = [], [], []
        for ep in episodes:
            x = torch.cat([ep.support_x, ep.query_x])
            y = torch.cat([ep.support_y, ep.query_y])
            is_q = torch.cat([torch.zeros_like(ep.support_y, dtype=torch.bool), torch.ones_like(ep.query_y, dtype=torch.bool)])
            perm = torch.randperm(len(y)).to(y.device)
            xs.append(x[perm])
            ys.append(y[perm])
            qs.append(is_q[perm])
        lengths = {len(y) for y in ys}
        if len(lengths) != 1:
            raise ValueError(f"episodes in one batch must have the same length; got {sorted(lengths)}")
        return torch.stack(xs, 1), torch.stack(ys, 1), torch.stack(qs, 1)

    def loss(self, episode: Episode) -> LossOutput:
        """Cross-entropy over the whole shuffled sequence; ``scores`` are those of the query steps."""
        self._check_ready(episode.way)
        x, y, is_q = self.sequence_of([episode])
        logits, _ = self.run_sequence(x, y)
        logits = logits[..., : episode.way]
        loss = F.cross_entropy(logits.reshape(-1, episode.way), y.reshape(-1))
        return LossOutput(loss, logits[is_q])

    def training_step(self, batch: list[Episode]) -> StepOutput:
        """All episodes of the step run as one batched sequence (they must share way and length)."""
        way = batch[0].way
        if any(ep.way != way for ep in batch):
            raise ValueError("episodes in one batch must share way")
        self._check_ready(way)
        x, y, is_q = self.sequence_of(batch)
        logits, _ = self.run_sequence(x, y)
        logits = logits[..., :way]
        loss = F.cross_entropy(logits.reshape(-1, way), y.reshape(-1))
        check_finite(loss, f"{self.name} training step")
        loss.backward()
        hit = logits.argmax(-1) == y
        acc = float((hit[is_q] if is_q.any() else hit).float().mean())  # over every step when there is no query
        return StepOutput(float(loss.detach()), acc)


class MANN(SequenceClassifier):
    """Memory-augmented neural network with LRUA memory (Santoro et al. 2016).

    The LSTM controller sees ``[x_t, y_{t-1}, r_{t-1}]`` (``r``: the read vectors of all heads);
    each head emits a key ``k`` and an add vector ``a`` (tanh), a write gate ``α`` and a key strength
    ``β`` (:class:`~fewshot.nn.memory.LRUA`): the head reads the previous memory by content with
    ``k``, then writes ``a`` to its last-read or least-used slot; the output is ``W [h_t, r_t]``.

    Args:
        slots, width: memory ``N × M`` (paper: 128 × 40).
        heads: read/write heads (paper: 4).
        gamma: usage decay γ.
    """

    name = "mann"

    test_options = {"hidden": 16, "slots": 8, "width": 6, "heads": 2}

    def __init__(self, backbone: nn.Module | None = None, feature_dim: int | None = None, way: int = 5,
                 hidden: int = 200, slots: int = 128, width: int = 40, heads: int = 4, gamma: float = 0.95):
        self.slots, self.width, self.heads, self.gamma = slots, width, heads, gamma
        super().__init__(backbone, feature_dim, way, hidden)

    def _build(self, feature_dim: int) -> None:
        self.controller = nn.LSTMCell(feature_dim + self.way + self.heads * self.width, self.hidden)
        self.memory = LRUA(self.hidden, self.slots, self.width, self.heads, self.gamma)
        self.out = nn.Linear(self.hidden + self.heads * self.width, self.way)

    def initial_state(self, batch: int, device: torch.device):
        h = torch.zeros(batch, self.hidden, device=device)
        return h, h.clone(), self.memory.initial_state(batch, device)

    def step(self, x, prev_label, state):
        h, c, mem = state
        b = x.shape[0]
        h, c = self.controller(torch.cat([x, prev_label, mem.read.reshape(b, -1)], -1), (h, c))
        mem = self.memory(h, mem)
        return self.out(torch.cat([h, mem.read.reshape(b, -1)], -1)), (h, c, mem)

    @staticmethod
    def expand_state(state, n):
        h, c, m = state
        return h.expand(n, -1), c.expand(n, -1), m.expand(n)


class SequenceLSTM(SequenceClassifier):
    """The LSTM baseline of Santoro et al.: the same sequence protocol, no external memory
    (output ``W h_t``)."""

    name = "lstm_seq"

    def _build(self, feature_dim: int) -> None:
        self.controller = nn.LSTMCell(feature_dim + self.way, self.hidden)
        self.out = nn.Linear(self.hidden, self.way)

    def initial_state(self, batch: int, device: torch.device):
        h = torch.zeros(batch, self.hidden, device=device)
        return h, h.clone()

    def step(self, x, prev_label, state):
        h, c = self.controller(torch.cat([x, prev_label], -1), state)
        return self.out(h), (h, c)

    @staticmethod
    def expand_state(state, n):
        return tuple(t.expand(n, *t.shape[1:]) for t in state)


def instance_accuracy(logits: torch.Tensor, y: torch.Tensor, max_instance: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Santoro et al.'s table: accuracy at the k-th presentation of a class within a sequence.

    ``logits [T, B, way]``, ``y [T, B]`` -> (correct counts, totals), each ``[max_instance]`` (index k-1).
    """
    onehot = F.one_hot(y, int(y.max()) + 1)
    instance = (onehot.cumsum(0) * onehot).sum(-1)  # 1 for a class's first appearance, 2 for its second...
    correct = (logits.argmax(-1) == y)
    hits = torch.zeros(max_instance, dtype=torch.long)
    tot = torch.zeros(max_instance, dtype=torch.long)
    for k in range(1, max_instance + 1):
        m = instance == k
        hits[k - 1] = int(correct[m].sum())
        tot[k - 1] = int(m.sum())
    return hits, tot


# ------------------------------------------------------------------------------------------ MetaNet
class MetaNet(FewShotMethod):
    """Meta Networks (Munkhdalai & Yu 2017), Algorithm 1, with fast weights on the top layers.

    * Embedding (dynamic representation) ``u``: the backbone trunk (slow only) then a layer with
      slow ``Q`` and task-level fast ``Q*``: ``r = relu(Q h) + relu(Q* h)`` (layer augmentation).
    * Base learner ``b``: its own copy of the trunk (slow), then ``z = relu(W1 h) + relu(W1* h)``
      and logits ``W2 z + W2* z``.
    * ``Q*`` = ``d(G, {∇_Q L_emb})``: a per-coordinate LSTM over the gradients of a contrastive
      embedding loss on pairs of support examples (``F_w`` in the book).
    * ``W*_i`` = ``m(Z, ∇_W L_task(x_i))``: a per-coordinate MLP applied to each support example's
      own gradient (``G_v``); stored in memory with key ``r_i = u(Q, Q*, x_i)``.
    * A query reads ``W* = Σ_i softmax(s · cos(r_q, r_i)) W*_i`` and is classified by ``b(W, W*, x)``.

    Simplifications (documented in docs/model_based.md): fast weights only on the layers above the
    convolutional trunk; gradients enter the meta-networks as inputs (no second-order terms);
    the attention has a learned inverse temperature ``s``.

    Args:
        feature_dim: trunk output size (default: measured from the data in ``setup``).
        way: base learner outputs (largest ``way``).
        hidden: size of ``r`` and of the base learner's hidden layer.
        meta_hidden: hidden units of the per-coordinate meta-networks.
        pairs: sampled support pairs for the embedding loss (``T`` in the paper).
        margin: contrastive loss margin.
    """

    name = "metanet"

    fit_needs_grad = True

    renamed_params = {"labels": "way"}
    test_options = {"hidden": 16, "meta_hidden": 8, "pairs": 4}

    def __init__(self, backbone: nn.Module | None = None, feature_dim: int | None = None, way: int = 5,
                 hidden: int = 64, meta_hidden: int = 20, pairs: int = 10, margin: float = 1.0):
        super().__init__(backbone)
        self.feature_dim, self.way, self.hidden = feature_dim, way, hidden
        self.meta_hidden, self.pairs, self.margin = meta_hidden, pairs, margin
        import copy

        self.base_trunk = copy.deepcopy(backbone) if backbone is not None else None
        if self.base_trunk is not None:
            for m in self.base_trunk.modules():
                if hasattr(m, "reset_parameters"):
                    m.reset_parameters()
        self.memory: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        if feature_dim is not None:
            self._build(feature_dim)

    def setup(self, dataset) -> None:
        if self.feature_dim is None:
            from ..nn.backbones import output_dim

            self.feature_dim = output_dim(self.backbone, dataset.item_shape) if self.backbone is not None \
                else _item_features(dataset.item_shape)
            self._build(self.feature_dim)

    def _build(self, d: int) -> None:
        h, k = self.hidden, self.way
        self.Q = nn.Parameter(torch.randn(h, d) * math.sqrt(2.0 / d))
        self.W1 = nn.Parameter(torch.randn(h, d) * math.sqrt(2.0 / d))
        self.b1 = nn.Parameter(torch.zeros(h))
        self.W2 = nn.Parameter(torch.randn(k, h) * math.sqrt(1.0 / h))
        self.b2 = nn.Parameter(torch.zeros(k))
        mh = self.meta_hidden
        self.d_lstm = nn.LSTM(2, mh)  # F_w: over the T embedding-loss gradients, per coordinate
        self.d_out = nn.Linear(mh, 1)
        self.m_net = nn.Sequential(nn.Linear(2, mh), nn.ReLU(), nn.Linear(mh, mh), nn.ReLU(), nn.Linear(mh, 2))
        self.log_scale = nn.Parameter(torch.tensor(math.log(10.0)))

    # pieces ---------------------------------------------------------------------------------------
    def _trunks(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hu = self.embed(x)
        hb = self.base_trunk(x) if self.base_trunk is not None else x.flatten(1)
        return hu, hb

    def _embedding_fast_weights(self, hu: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``Q* = d(G, {∇_Q L_emb(pair_t)})`` from ``T`` random support pairs: ``[hidden, D]``."""
        n = hu.shape[0]
        if n < 2:
            return torch.zeros_like(self.Q)
        i, j = torch.triu_indices(n, n, 1, device=hu.device)
        sel = torch.randperm(i.numel(), device=hu.device)[: self.pairs] if self.training else torch.arange(min(self.pairs, i.numel()), device=hu.device)
        i, j = i[sel], j[sel]
        with torch.enable_grad():
            q = self.Q.detach().requires_grad_(True)
            h = hu.detach()
            grads = []
            for a, b in zip(i.tolist(), j.tolist()):
                ra, rb = F.relu(h[a] @ q.T), F.relu(h[b] @ q.T)
                dist = (F.normalize(ra, dim=0) - F.normalize(rb, dim=0)).norm()
                same = bool(y[a] == y[b])
                loss = dist.pow(2) if same else F.relu(self.margin - dist).pow(2)
                grads.append(torch.autograd.grad(loss, q)[0])
        g = preprocess_gradient(torch.stack(grads))  # [T, h, D, 2]
        seq = g.reshape(g.shape[0], -1, 2)  # [T, coords, 2]
        out, _ = self.d_lstm(seq)
        return self.d_out(out[-1]).reshape_as(self.Q)

    def _base_gradients(self, hb: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-example gradients of the slow base learner's cross-entropy w.r.t. ``W1`` and ``W2``
        (closed form for the two-layer head): ``[N, hidden, D]``, ``[N, way, hidden]``."""
        h = hb.detach()
        pre = h @ self.W1.detach().T + self.b1.detach()
        z = F.relu(pre)
        p = torch.softmax(z @ self.W2.detach().T + self.b2.detach(), -1)
        d2 = p - F.one_hot(y, self.way).to(p.dtype)  # [N, way]
        d1 = (d2 @ self.W2.detach()) * (pre > 0).to(p.dtype)  # [N, hidden]
        return torch.einsum("nh,nd->nhd", d1, h), torch.einsum("nk,nh->nkh", d2, z)

    def _example_fast_weights(self, g1: torch.Tensor, g2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``W*_i = m(Z, ∇_i)`` per coordinate (the MLP's two outputs serve ``W1*`` and ``W2*``)."""
        f1 = self.m_net(preprocess_gradient(g1))[..., 0]
        f2 = self.m_net(preprocess_gradient(g2))[..., 1]
        return f1, f2

    def _represent(self, hu: torch.Tensor, q_fast: torch.Tensor) -> torch.Tensor:
        return F.relu(hu @ self.Q.T) + F.relu(hu @ q_fast.T)

    def _base_logits(self, hb: torch.Tensor, w1f: torch.Tensor, w2f: torch.Tensor) -> torch.Tensor:
        """``b(W, W*, x)`` with one fast-weight set per item: ``w1f [B, hidden, D]``, ``w2f [B, way, hidden]``."""
        z = F.relu(hb @ self.W1.T + self.b1) + F.relu(torch.einsum("bhd,bd->bh", w1f, hb))
        return z @ self.W2.T + self.b2 + torch.einsum("bkh,bh->bk", w2f, z)

    # estimator API ----------------------------------------------------------------------------------
    def _check_ready(self, way: int) -> None:
        if self.feature_dim is None:
            raise RuntimeError("metanet needs feature_dim: pass it, or let the trainer call setup(dataset)")
        if way > self.way:
            raise ValueError(f"metanet was built for at most {self.way} classes (way={self.way}); "
                             f"this episode has {way}. Rebuild it with -p way={way} (fewshot train: --way {way}).")

    def _fit_features(self, hu: torch.Tensor, hb: torch.Tensor, y: torch.Tensor) -> None:
        q_fast = self._embedding_fast_weights(hu, y)
        w1f, w2f = self._example_fast_weights(*self._base_gradients(hb, y))
        self.memory = (q_fast, self._represent(hu, q_fast), w1f, w2f)

    def _query_logits(self, hu: torch.Tensor, hb: torch.Tensor) -> torch.Tensor:
        q_fast, keys, w1f, w2f = self.memory
        r = self._represent(hu, q_fast)
        att = torch.softmax(self.log_scale.exp() * F.normalize(r, dim=-1) @ F.normalize(keys, dim=-1).T, -1)  # [Q, N]
        w1 = torch.einsum("qn,nhd->qhd", att, w1f)
        w2 = torch.einsum("qn,nkh->qkh", att, w2f)
        return self._base_logits(hb, w1, w2)[:, : self.task_way]

    def fit(self, support_x: torch.Tensor, support_y: torch.Tensor) -> "MetaNet":
        self.task_way = check_support(support_x, support_y)
        self._check_ready(self.task_way)
        hu, hb = self._trunks(support_x)
        self._fit_features(hu, hb, support_y)
        return self

    def scores(self, query_x: torch.Tensor) -> torch.Tensor:
        if self.memory is None:
            raise RuntimeError("call fit(support_x, support_y) before scoring queries")
        return self._query_logits(*self._trunks(query_x))

    def loss(self, episode: Episode) -> LossOutput:
        self.task_way = episode.way
        self._check_ready(self.task_way)
        n_s = episode.support_x.shape[0]
        hu, hb = self._trunks(torch.cat([episode.support_x, episode.query_x]))  # one BatchNorm batch
        self._fit_features(hu[:n_s], hb[:n_s], episode.support_y)
        scores = self._query_logits(hu[n_s:], hb[n_s:])
        return LossOutput(F.cross_entropy(scores, episode.query_y), scores)
