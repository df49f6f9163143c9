"""External memory for model-based methods: the Neural Turing Machine (Graves et al. 2014) and the
least-recently-used-access memory of Santoro et al. (2016).

Shapes: memory ``[B, N, M]`` (N slots of width M), weightings ``[B, N]`` (one head), keys
``[B, M]``; scalars per head are ``[B]`` or ``[B, 1]``. Every function is batched, differentiable
and device-agnostic.

NTM addressing (Graves et al. 2014, §3.3), one head:

1. content:       ``w_c(i) = softmax_i(β · cos(k, M(i)))``
2. interpolation: ``w_g = g · w_c + (1 - g) · w_prev``
3. circular shift:``w~(i) = Σ_j w_g(j) · s((i - j) mod N)`` with ``s`` a softmax over offsets ``-r..r``
4. sharpening:    ``w(i) = w~(i)^γ / Σ_j w~(j)^γ`` with ``γ ≥ 1``

Writes: ``M ← M ∘ (1 - w eᵀ) + w aᵀ`` (erase then add).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

_EPS = 1e-8


def _col(v: torch.Tensor | float, ref: torch.Tensor) -> torch.Tensor:
    """A per-batch scalar ``[B]``/``[B, 1]``/float as ``[B, 1]`` broadcastable against ``[B, N]``."""
    v = torch.as_tensor(v, dtype=ref.dtype, device=ref.device)
    return v.reshape(-1, 1) if v.ndim else v


def cosine_similarity(memory: torch.Tensor, key: torch.Tensor, eps: float = _EPS) -> torch.Tensor:
    """``cos(k, M(i))`` for every slot: memory ``[B, N, M]``, key ``[B, M]`` -> ``[B, N]``."""
    dot = torch.einsum("bnm,bm->bn", memory, key)
    return dot / (memory.norm(dim=-1) * key.norm(dim=-1, keepdim=True)).clamp_min(eps)


def content_addressing(memory: torch.Tensor, key: torch.Tensor, beta: torch.Tensor | float) -> torch.Tensor:
    """Stage 1: ``softmax(β · cos(k, M(i)))`` ``[B, N]`` (β ≥ 0 is the key strength)."""
    return torch.softmax(_col(beta, key) * cosine_similarity(memory, key), dim=-1)


def interpolate(w_content: torch.Tensor, w_prev: torch.Tensor, gate: torch.Tensor | float) -> torch.Tensor:
    """Stage 2: ``g · w_c + (1 - g) · w_prev`` with the gate ``g ∈ [0, 1]``."""
    g = _col(gate, w_content)
    return g * w_content + (1 - g) * w_prev


def circular_shift(w: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Stage 3: circular convolution of ``w [B, N]`` with ``shift [B, 2r+1]`` over offsets ``-r..r``.

    ``shift[:, r + d]`` is the probability of moving the focus by ``d`` slots (``+1``: to slot ``i+1``).
    """
    k = shift.shape[-1]
    if k % 2 != 1:
        raise ValueError(f"the shift distribution needs an odd number of offsets -r..r; got {k}")
    r = k // 2
    if k > w.shape[-1]:
        raise ValueError(f"{k} shift offsets need at least {k} memory slots; memory has {w.shape[-1]}")
    return sum(shift[:, j : j + 1] * torch.roll(w, j - r, dims=-1) for j in range(k))


def sharpen(w: torch.Tensor, gamma: torch.Tensor | float, eps: float = _EPS) -> torch.Tensor:
    """Stage 4: ``w^γ / Σ w^γ`` with ``γ ≥ 1`` (``eps`` keeps ``d/dγ`` finite where ``w = 0``)."""
    p = (w + eps) ** _col(gamma, w)
    return p / p.sum(-1, keepdim=True)


def ntm_address(memory: torch.Tensor, w_prev: torch.Tensor, key: torch.Tensor, beta, gate, shift, gamma) -> torch.Tensor:
    """All four NTM addressing stages for one head: ``[B, N]`` weights summing to 1."""
    return sharpen(circular_shift(interpolate(content_addressing(memory, key, beta), w_prev, gate), shift), gamma)


def read_memory(memory: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``r = Σ_i w(i) M(i)``: ``[B, N, M], [B, N] -> [B, M]``."""
    return torch.einsum("bn,bnm->bm", w, memory)


def erase_add(memory: torch.Tensor, w: torch.Tensor, erase: torch.Tensor, add: torch.Tensor) -> torch.Tensor:
    """NTM write: ``M ∘ (1 - w eᵀ) + w aᵀ`` with erase ``e ∈ [0,1]^M`` and add ``a`` (``[B, M]`` each)."""
    return memory * (1 - w.unsqueeze(-1) * erase.unsqueeze(1)) + w.unsqueeze(-1) * add.unsqueeze(1)


# ---------------------------------------------------------------------------------------------- NTM
@dataclass
class NTMState:
    """Recurrent state: controller ``(h, c)`` ``[B, H]``, memory ``[B, N, M]``, last read vector
    ``[B, M]``, last read/write weights ``[B, N]``."""

    h: torch.Tensor
    c: torch.Tensor
    memory: torch.Tensor
    read: torch.Tensor
    w_read: torch.Tensor
    w_write: torch.Tensor


class NTMHeadParams(nn.Module):
    """Maps the controller output to one head's addressing parameters (plus erase/add for a writer)."""

    def __init__(self, hidden: int, width: int, shifts: int, write: bool):
        super().__init__()
        self.width, self.shifts, self.write = width, shifts, write
        sizes = [width, 1, 1, shifts, 1] + ([width, width] if write else [])
        self.sizes = sizes
        self.proj = nn.Linear(hidden, sum(sizes))

    def forward(self, h: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = torch.split(self.proj(h), self.sizes, dim=-1)
        out = {
            "key": torch.tanh(parts[0]),
            "beta": F.softplus(parts[1]),
            "gate": torch.sigmoid(parts[2]),
            "shift": torch.softmax(parts[3], -1),
            "gamma": 1 + F.softplus(parts[4]),
        }
        if self.write:
            out["erase"] = torch.sigmoid(parts[5])
            out["add"] = torch.tanh(parts[6])
        return out


class NTM(nn.Module):
    """A Neural Turing Machine with an LSTM (or feed-forward) controller, one read head and one write head.

    Each step: the controller reads ``[x_t, r_{t-1}]``; the write head addresses and writes (erase,
    add); the read head addresses the updated memory and reads ``r_t``; the output is
    ``W [h_t, r_t]`` (logits; apply a sigmoid for bits).

    Args:
        input_size, output_size: per-step input and output widths.
        hidden: controller units.
        slots, width: memory ``N × M``.
        shift_range: ``r`` (shifts ``-r..r`` allowed).
        controller: ``lstm``, or ``feedforward`` (``h_t = tanh(W [x_t, r_{t-1}])``: no state but the
            memory and the read vector, Graves et al. 2014, §3.2).
    """

    def __init__(self, input_size: int, output_size: int, hidden: int = 100, slots: int = 128, width: int = 20,
                 shift_range: int = 1, controller: str = "lstm"):
        super().__init__()
        if controller not in ("lstm", "feedforward"):
            raise ValueError(f"controller must be 'lstm' or 'feedforward'; got {controller!r}")
        self.slots, self.width, self.hidden, self.controller_kind = slots, width, hidden, controller
        self.controller = (nn.LSTMCell(input_size + width, hidden) if controller == "lstm"
                           else nn.Linear(input_size + width, hidden))
        self.read_head = NTMHeadParams(hidden, width, 2 * shift_range + 1, write=False)
        self.write_head = NTMHeadParams(hidden, width, 2 * shift_range + 1, write=True)
        self.out = nn.Linear(hidden + width, output_size)
        stdev = 1.0 / (slots + width) ** 0.5
        # Learned initial memory and read vector; a constant initial memory makes every cosine equal.
        self.memory0 = nn.Parameter(torch.empty(slots, width).uniform_(-stdev, stdev))
        self.read0 = nn.Parameter(torch.zeros(width))

    def initial_state(self, batch: int) -> NTMState:
        p = self.memory0
        w0 = torch.zeros(batch, self.slots, device=p.device, dtype=p.dtype)
        w0[:, 0] = 1.0  # heads start focused on slot 0
        h = torch.zeros(batch, self.hidden, device=p.device, dtype=p.dtype)
        return NTMState(h, h.clone(), p.expand(batch, -1, -1), self.read0.expand(batch, -1), w0, w0.clone())

    def step(self, x: torch.Tensor, state: NTMState) -> tuple[torch.Tensor, NTMState]:
        """One time step: ``x [B, input_size]`` -> output logits ``[B, output_size]`` and the new state."""
        if self.controller_kind == "lstm":
            h, c = self.controller(torch.cat([x, state.read], -1), (state.h, state.c))
        else:
            h, c = torch.tanh(self.controller(torch.cat([x, state.read], -1))), state.c
        wp = self.write_head(h)
        w_write = ntm_address(state.memory, state.w_write, wp["key"], wp["beta"], wp["gate"], wp["shift"], wp["gamma"])
        memory = erase_add(state.memory, w_write, wp["erase"], wp["add"])
        rp = self.read_head(h)
        w_read = ntm_address(memory, state.w_read, rp["key"], rp["beta"], rp["gate"], rp["shift"], rp["gamma"])
        read = read_memory(memory, w_read)
        return self.out(torch.cat([h, read], -1)), NTMState(h, c, memory, read, w_read, w_write)

    def forward(self, x: torch.Tensor, return_weights: bool = False):
        """Run a sequence ``x [T, B, input_size]`` -> logits ``[T, B, output_size]``
        (and, with ``return_weights``, read and write weights ``[T, B, N]`` each)."""
        if x.ndim != 3:
            raise ValueError(f"NTM input must be [T, B, input_size]; got shape {tuple(x.shape)}")
        state = self.initial_state(x.shape[1])
        outs, reads, writes = [], [], []
        for t in range(x.shape[0]):
            y, state = self.step(x[t], state)
            outs.append(y)
            if return_weights:
                reads.append(state.w_read)
                writes.append(state.w_write)
        y = torch.stack(outs)
        if return_weights:
            return y, torch.stack(reads), torch.stack(writes)
        return y


# --------------------------------------------------------------------------------------------- LRUA
def least_used(usage: torch.Tensor, n: int) -> torch.Tensor:
    """One-hot weights ``[B, n, N]``: row ``h`` marks the ``h``-th least-used slot (ties: lowest index).

    Santoro et al.'s least-used weights set 1 on the ``n`` smallest usages; giving each of the ``n``
    heads its own slot keeps every write weighting normalised.
    """
    idx = torch.argsort(usage, dim=-1, stable=True)[:, :n]  # [B, n]
    return F.one_hot(idx, usage.shape[-1]).to(usage.dtype)


@dataclass
class LRUAState:
    """Memory ``[B, N, M]``, usage ``[B, N]``, last read weights ``[B, H, N]``, least-used weights
    ``[B, H, N]``, last read vectors ``[B, H, M]``."""

    memory: torch.Tensor
    usage: torch.Tensor
    w_read: torch.Tensor
    w_lu: torch.Tensor
    read: torch.Tensor

    def expand(self, n: int) -> "LRUAState":
        """Repeat a batch-1 state ``n`` times."""
        return LRUAState(*(t.expand(n, *t.shape[1:]) for t in
                           (self.memory, self.usage, self.w_read, self.w_lu, self.read)))


def lrua_initial_state(batch: int, slots: int, width: int, heads: int, device=None, dtype=torch.float32) -> LRUAState:
    """Empty memory (a tiny constant so cosines are defined), zero usage; the least-used weights
    start at slots ``0..H-1``."""
    mem = torch.full((batch, slots, width), 1e-6, device=device, dtype=dtype)
    usage = torch.zeros(batch, slots, device=device, dtype=dtype)
    w = torch.zeros(batch, heads, slots, device=device, dtype=dtype)
    return LRUAState(mem, usage, w, least_used(usage, heads), torch.zeros(batch, heads, width, device=device, dtype=dtype))


def lrua_step(state: LRUAState, keys: torch.Tensor, adds: torch.Tensor, alpha: torch.Tensor, gamma: float,
              beta: torch.Tensor | float = 1.0) -> LRUAState:
    """One LRUA read-then-write (Santoro et al. 2016, eqs. 2-8) with ``H`` heads.

    ``keys [B, H, M]`` address the read; ``adds [B, H, M]`` are written; ``alpha [B, H]`` is the
    write gate logit; ``beta`` ``[B, H]`` or a float is a key strength multiplying the cosine before
    the softmax (the paper has none, i.e. ``β = 1``; over 128 slots that leaves every read nearly
    uniform).

    1. read from the previous memory: ``w^r_t = softmax(β cos(k_t, M_{t-1}))``; ``r_t = w^r_t M_{t-1}``
    2. ``w^w_t = σ(α) w^r_{t-1} + (1 - σ(α)) w^lu_{t-1}``
    3. the one least-used slot (row 0 of ``w^lu_{t-1}``) is zeroed, then ``M_t = M + Σ_h w^w_{t,h} a_hᵀ``
    4. ``w^u_t = γ w^u_{t-1} + Σ_h (w^r_{t,h} + w^w_{t,h})``; ``w^lu_t`` from the ``H`` smallest usages.

    The paper leaves the order of read and write open. Reading after writing the current key makes
    the read find the item itself (cosine 1 with the slot just written), so nothing is retrieved
    about earlier items; the common reimplementations read the previous memory, write a separate
    add vector and zero one slot per step, as here.
    """
    b, h, m = keys.shape
    if adds.shape != keys.shape:
        raise ValueError(f"keys and add vectors must have the same shape [B, H, M]; got {tuple(keys.shape)} "
                         f"and {tuple(adds.shape)}")
    prev = state.memory
    sim = torch.einsum("bnm,bhm->bhn", prev, keys) / (
        prev.norm(dim=-1).unsqueeze(1) * keys.norm(dim=-1, keepdim=True)).clamp_min(_EPS)
    beta = torch.as_tensor(beta, dtype=sim.dtype, device=sim.device)
    w_read = torch.softmax((beta.unsqueeze(-1) if beta.ndim else beta) * sim, -1)  # [B, H, N]
    read = torch.einsum("bhn,bnm->bhm", w_read, prev)
    sig = torch.sigmoid(alpha).unsqueeze(-1)  # [B, H, 1]
    w_write = sig * state.w_read + (1 - sig) * state.w_lu  # [B, H, N]
    clear = 1 - state.w_lu[:, 0]  # [B, N]: 0 at the least-used slot
    memory = prev * clear.unsqueeze(-1) + torch.einsum("bhn,bhm->bnm", w_write, adds)
    usage = gamma * state.usage + w_read.sum(1) + w_write.sum(1)
    return LRUAState(memory, usage, w_read, least_used(usage, h), read)


class LRUA(nn.Module):
    """Least-recently-used-access memory with ``heads`` read/write heads driven by a controller.

    Maps the controller output ``h [B, hidden]`` to each head's key and add vector (tanh), write
    gate ``α`` and key strength ``β = 1 + softplus(·)``, then runs :func:`lrua_step`.
    """

    def __init__(self, hidden: int, slots: int = 128, width: int = 40, heads: int = 4, gamma: float = 0.95):
        super().__init__()
        self.slots, self.width, self.heads, self.gamma = slots, width, heads, gamma
        self.proj = nn.Linear(hidden, heads * (2 * width + 2))

    def initial_state(self, batch: int, device=None) -> LRUAState:
        return lrua_initial_state(batch, self.slots, self.width, self.heads, device=device,
                                  dtype=self.proj.weight.dtype)

    def forward(self, h: torch.Tensor, state: LRUAState) -> LRUAState:
        p = self.proj(h).reshape(h.shape[0], self.heads, 2 * self.width + 2)
        w = self.width
        key, add = torch.tanh(p[..., :w]), torch.tanh(p[..., w: 2 * w])
        alpha, beta = p[..., 2 * w], 1 + F.softplus(p[..., 2 * w + 1])
        return lrua_step(state, key, add, alpha, self.gamma, beta)
