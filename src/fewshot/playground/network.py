"""A batch of small fully connected networks trained by hand-written backpropagation.

``B`` independent networks of the same shape live in one set of tensors (weights
``[B, d_in, d_out]``), so one ``torch.bmm`` trains, e.g., all 256 boolean functions of 3
inputs at once. The loss is the summed squared error ``E = sum_points sum_outputs w (a_L - t)^2``
(``w`` an optional per-network, per-point weight), the notebook's criterion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

ACTIVATIONS = ("sigmoid", "tanh")
LOSSES = ("sse", "half_mean")
CLIP_MODES = ("weights", "update")


@dataclass
class NetConfig:
    """Shape, activation and initialisation of the networks.

    Attributes:
        sizes: units per layer, input first, e.g. ``(3, 8, 1)``.
        activation: ``sigmoid`` or ``tanh``, used by every layer including the output.
        signed: ±1 coding of inputs and targets (``0 -> -1``); needs ``tanh``.
        bias: whether the units have biases.
        init_scale: amplitude ``a`` of the uniform ``[-a, a]`` initialisation, one per layer
            (a single number applies to all). A larger first layer is one of the notebook's settings.
            (The notebook's ``init_rand_ampl * (rand - 0.5)`` with ``init_rand_ampl = 0.1`` is ``a = 0.05``.)
        clip_weight / clip_bias: clip bound ``c``, one number for every layer or one per layer
            (``None`` = that layer unclipped).
        clip_mode: what is clipped to ``[-c, c]``: ``weights`` = the weights (biases) after each
            update (the notebook's ``np.clip`` after ``weights += ...``), ``update`` = each update
            step ``lr * grad`` (the weights themselves stay unbounded).
        gain / shift: the units compute ``act(gain * (z - shift))``. The notebook's sigmoid is
            ``gain=3, shift=1``: a fixed negative offset that a network "without bias" still has.
        loss: ``sse`` = ``sum (a - t)^2`` (gradient ``2 (a - t)``); ``half_mean`` = the notebook's
            ``1/2 sum (a - t)^2`` divided by the number of points in the update.
        drop_weights: per layer, the fraction of weights removed for good (a random mask drawn at
            creation, re-applied after every update; the notebook's ``do_drop_weights``).
        stability: the notebook's stability term (``use_stability``): EMA rate of a per-weight
            stability ``S`` in [0, 1] (notebook: 0.1; None = off). Each training forward pass
            updates ``S`` towards ``mean_points(x_i * (tanh(x±_i y±_j) tanh(w_ij / 0.1) + 1) / 2)``
            (``±``: the 0/1 activations mapped to ±1; only active inputs count), and updates are
            scaled by ``1 - S``: a weight whose sign agrees with its units' correlation learns less.
    """

    sizes: tuple[int, ...] = (3, 8, 1)
    activation: str = "sigmoid"
    signed: bool = False
    bias: bool = True
    init_scale: float | tuple[float, ...] = 1.0
    clip_weight: float | tuple[float | None, ...] | None = None
    clip_bias: float | tuple[float | None, ...] | None = None
    clip_mode: str = "weights"
    gain: float = 1.0
    shift: float = 0.0
    loss: str = "sse"
    drop_weights: tuple[float, ...] | None = None
    stability: float | None = None

    def __post_init__(self) -> None:
        self.sizes = tuple(int(s) for s in self.sizes)
        if len(self.sizes) < 2 or min(self.sizes) < 1:
            raise ValueError(f"sizes must list at least input and output units (all >= 1); got {self.sizes}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; choose from {', '.join(ACTIVATIONS)}")
        if self.signed and self.activation != "tanh":
            raise ValueError("signed (±1) coding needs activation='tanh': a sigmoid cannot output -1")
        scales = (self.init_scale,) * (len(self.sizes) - 1) if isinstance(self.init_scale, (int, float)) else tuple(self.init_scale)
        if len(scales) != len(self.sizes) - 1:
            raise ValueError(f"init_scale needs one amplitude per layer ({len(self.sizes) - 1}); got {len(scales)}")
        self.init_scale = tuple(float(s) for s in scales)
        if self.clip_mode not in CLIP_MODES:
            raise ValueError(f"unknown clip_mode {self.clip_mode!r}; choose from {', '.join(CLIP_MODES)}")
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose from {', '.join(LOSSES)}")
        if self.gain <= 0:
            raise ValueError(f"gain must be > 0; got {self.gain}")
        if self.drop_weights is not None:
            self.drop_weights = tuple(float(p) for p in self.drop_weights)
            if len(self.drop_weights) > self.num_layers or any(not 0 <= p < 1 for p in self.drop_weights):
                raise ValueError(f"drop_weights needs at most one fraction in [0, 1) per layer ({self.num_layers}); "
                                 f"got {self.drop_weights}")
        if self.stability is not None and not 0 < self.stability <= 1:
            raise ValueError(f"stability is an EMA rate in (0, 1] (notebook: 0.1); got {self.stability}")

    def clip_bounds(self, which: str) -> tuple[float | None, ...]:
        """Per-layer clip bound for ``weight`` or ``bias`` (``None`` = unclipped)."""
        c = self.clip_weight if which == "weight" else self.clip_bias
        bounds = (c,) * self.num_layers if c is None or isinstance(c, (int, float)) else tuple(c)
        if len(bounds) != self.num_layers:
            raise ValueError(f"clip_{which} needs one bound per layer ({self.num_layers}); got {len(bounds)}")
        if any(b is not None and b <= 0 for b in bounds):
            raise ValueError(f"clip_{which} bounds must be > 0; got {bounds}")
        return tuple(None if b is None else float(b) for b in bounds)

    @property
    def num_layers(self) -> int:
        return len(self.sizes) - 1

    def encode(self, bits: torch.Tensor) -> torch.Tensor:
        """0/1 values -> the network's coding (unchanged, or ±1 when ``signed``)."""
        bits = bits.float()
        return 2.0 * bits - 1.0 if self.signed else bits

    @property
    def midpoint(self) -> float:
        """The output value halfway between the two codes (0.5, or 0 when signed)."""
        return 0.0 if self.signed else 0.5


def layer_lrs(lr: float, num_layers: int, slow_factor: float = 1.0, slow_layers: int = 1) -> list[float]:
    """Per-layer learning rates: the first ``slow_layers`` layers learn ``slow_factor`` times slower."""
    if not 0 <= slow_layers <= num_layers:
        raise ValueError(f"slow_layers must lie in 0..{num_layers}; got {slow_layers}")
    return [lr * (slow_factor if i < slow_layers else 1.0) for i in range(num_layers)]


@dataclass
class Grads:
    weights: list[torch.Tensor]
    biases: list[torch.Tensor | None]
    loss: torch.Tensor  # [B]


@dataclass
class BatchedMLP:
    """``B`` networks with weights ``[B, d_in, d_out]`` and biases ``[B, d_out]`` (None without bias)."""

    config: NetConfig
    weights: list[torch.Tensor]
    biases: list[torch.Tensor | None]
    masks: list[torch.Tensor | None] | None = None  # drop_weights: 1 = kept
    stab: list[torch.Tensor] | None = None  # stability term S per layer [B, d_in, d_out]

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(cls, config: NetConfig, batch: int = 1, seed: int = 0, device: str | torch.device = "cpu",
               dtype: torch.dtype = torch.float32) -> "BatchedMLP":
        """``batch`` networks initialised uniformly in ``[-init_scale, init_scale]``; deterministic in ``seed``."""
        g = torch.Generator().manual_seed(seed)
        weights, biases = [], []
        for (d_in, d_out), a in zip(zip(config.sizes[:-1], config.sizes[1:]), config.init_scale):
            weights.append(((torch.rand(batch, d_in, d_out, generator=g) * 2 - 1) * a).to(device, dtype))
            biases.append(((torch.rand(batch, d_out, generator=g) * 2 - 1) * a).to(device, dtype) if config.bias else None)
        masks = None
        if config.drop_weights:
            drops = list(config.drop_weights) + [0.0] * (config.num_layers - len(config.drop_weights))
            masks = [(torch.rand(w.shape, generator=g) >= p).to(device, dtype) if p > 0 else None
                     for w, p in zip(weights, drops)]
        stab = [torch.zeros_like(w) for w in weights] if config.stability is not None else None
        net = cls(config, weights, biases, masks, stab)
        net.clip_()
        return net

    @property
    def batch(self) -> int:
        return self.weights[0].shape[0]

    @property
    def device(self) -> torch.device:
        return self.weights[0].device

    def clone(self) -> "BatchedMLP":
        return self.select(torch.arange(self.batch))

    def select(self, idx: torch.Tensor | Sequence[int]) -> "BatchedMLP":
        """The networks ``idx`` as a new (copied) batch."""
        idx = torch.as_tensor(idx, dtype=torch.long, device=self.device)

        def pick(ts):
            return None if ts is None else [None if t is None else t[idx].clone() for t in ts]

        return BatchedMLP(self.config, pick(self.weights), pick(self.biases), pick(self.masks), pick(self.stab))

    def reinit_layer(self, layer: int, seed: int, units: Sequence[int] | None = None) -> None:
        """Draw layer ``layer`` (0 = first; -1 = last) afresh, optionally only its output ``units``."""
        layer = layer % self.config.num_layers
        g = torch.Generator().manual_seed(seed)
        a = self.config.init_scale[layer]
        w = self.weights[layer]
        new_w = ((torch.rand(w.shape, generator=g) * 2 - 1) * a).to(w)
        b = self.biases[layer]
        new_b = None if b is None else ((torch.rand(b.shape, generator=g) * 2 - 1) * a).to(b)
        if units is None:
            w.copy_(new_w)
            if b is not None:
                b.copy_(new_b)
        else:
            u = torch.as_tensor(list(units), dtype=torch.long, device=w.device)
            w[:, :, u] = new_w[:, :, u]
            if b is not None:
                b[:, u] = new_b[:, u]
        self.clip_()

    # ------------------------------------------------------------------ maths
    def _act(self, z: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if cfg.gain != 1.0 or cfg.shift != 0.0:
            z = cfg.gain * (z - cfg.shift)
        return torch.sigmoid(z) if cfg.activation == "sigmoid" else torch.tanh(z)

    def _act_backward(self, grad: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """``grad * act'(z)`` written with the activation's output ``a`` (``a(1-a)`` or ``1-a^2``),
        as one fused kernel: these tiny networks are bound by the number of tensor ops."""
        if self.config.gain != 1.0:
            grad = grad * self.config.gain
        if self.config.activation == "sigmoid":
            return torch.ops.aten.sigmoid_backward(grad, a)
        return torch.ops.aten.tanh_backward(grad, a)

    def _expand(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 2:  # the same points for every network
            x = x.unsqueeze(0).expand(self.batch, -1, -1)
        if x.ndim != 3 or x.shape[0] != self.batch or x.shape[2] != self.config.sizes[0]:
            raise ValueError(f"inputs must be [N, {self.config.sizes[0]}] or [B={self.batch}, N, {self.config.sizes[0]}]; "
                             f"got {tuple(x.shape)}")
        return x.to(self.weights[0])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Activations of every layer, input first: ``[B, N, d_l]`` for ``x [N, d_0]`` or ``[B, N, d_0]``."""
        acts = [self._expand(x)]
        for w, b in zip(self.weights, self.biases):
            z = torch.bmm(acts[-1], w) if b is None else torch.baddbmm(b.unsqueeze(1), acts[-1], w)
            acts.append(self._act(z))
        return acts

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs ``[B, N, d_L]``."""
        return self.forward(x)[-1]

    def hidden(self, x: torch.Tensor, layer: int = 1) -> torch.Tensor:
        """Activations of hidden layer ``layer`` (1 = first hidden): ``[B, N, d_layer]``."""
        return self.forward(x)[layer]

    def sse(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Summed squared error of each network ``[B]`` (``target [N, d_L]`` or ``[B, N, d_L]``)."""
        return ((self(x) - target) ** 2).sum((1, 2))

    def backward(self, acts: list[torch.Tensor], target: torch.Tensor, point_weight: torch.Tensor | None = None) -> Grads:
        """Gradients of ``E = sum w (a_L - t)^2`` by the chain rule, layer by layer (with
        ``loss="half_mean"``: of ``E / (2 N)``, N the points in ``acts``; ``Grads.loss`` stays the SSE).

        ``point_weight [B, N]`` (or ``[N]``) weights each point, e.g. 0 to leave it out.
        """
        out = acts[-1]
        diff = out - target
        if point_weight is not None:
            pw = point_weight if point_weight.ndim == 2 else point_weight.unsqueeze(0)
            pw = pw.to(out).unsqueeze(-1)
            loss = (pw * diff * diff).sum((1, 2))
            d_out = 2.0 * pw * diff
        else:
            loss = (diff * diff).sum((1, 2))
            d_out = 2.0 * diff
        if self.config.loss == "half_mean":
            d_out = d_out / (2.0 * out.shape[1])
        delta = self._act_backward(d_out, out)  # dE/dz of the output layer
        gw: list[torch.Tensor] = [None] * len(self.weights)  # type: ignore[list-item]
        gb: list[torch.Tensor | None] = [None] * len(self.weights)
        for layer in range(len(self.weights) - 1, -1, -1):
            gw[layer] = torch.bmm(acts[layer].transpose(1, 2), delta)
            if self.biases[layer] is not None:
                gb[layer] = delta.sum(1)
            if layer > 0:
                delta = self._act_backward(torch.bmm(delta, self.weights[layer].transpose(1, 2)), acts[layer])
        return Grads(gw, gb, loss)

    def update_stability(self, acts: list[torch.Tensor]) -> None:
        """Move the stability term towards this forward pass's (see :class:`NetConfig`); no-op when off."""
        if self.stab is None:
            return
        rate = self.config.stability
        for layer, w in enumerate(self.weights):
            pre, post = acts[layer], acts[layer + 1]  # [B, N, d_in], [B, N, d_out]
            corr = torch.tanh((2 * pre - 1).unsqueeze(-1) * (2 * post - 1).unsqueeze(-2))  # [B, N, d_in, d_out]
            s = (corr * torch.tanh(w / 0.1).unsqueeze(1) + 1) / 2 * pre.unsqueeze(-1)
            self.stab[layer].mul_(1 - rate).add_(s.mean(1), alpha=rate)

    def step(self, grads: Grads, lrs: Sequence[float], mask: torch.Tensor | None = None) -> None:
        """Gradient-descent update with per-layer learning rates; ``mask [B]`` (bool/float)
        freezes the networks where it is 0. Clipping follows the update."""
        m = None if mask is None else mask.to(self.weights[0]).view(-1, 1)
        by_update = self.config.clip_mode == "update"
        c_w, c_b = self.config.clip_bounds("weight"), self.config.clip_bounds("bias")
        for layer, lr in enumerate(lrs):
            if lr == 0:
                continue
            gw = grads.weights[layer]
            if m is not None:
                gw = gw * m.unsqueeze(-1)
            direct = None
            if self.stab is not None:  # the notebook scales weight updates by 1 - S, bias updates by sum_in(1 - S)
                direct = 1 - self.stab[layer]
                gw = gw * direct
            if by_update and c_w[layer] is not None:
                self.weights[layer].sub_((gw * lr).clamp_(-c_w[layer], c_w[layer]))
            else:
                self.weights[layer].sub_(gw, alpha=lr)
            gb = grads.biases[layer]
            if gb is not None:
                gb = gb if m is None else gb * m
                if direct is not None:
                    gb = gb * direct.sum(1)
                if by_update and c_b[layer] is not None:
                    self.biases[layer].sub_((gb * lr).clamp_(-c_b[layer], c_b[layer]))
                else:
                    self.biases[layer].sub_(gb, alpha=lr)
        self.clip_()

    def clip_(self) -> None:
        """Clamp weights and biases to their bounds (``clip_mode="weights"`` only); zero dropped weights."""
        if self.masks is not None:
            for w, keep in zip(self.weights, self.masks):
                if keep is not None:
                    w.mul_(keep)
        if self.config.clip_mode != "weights":
            return
        for params, bounds in ((self.weights, self.config.clip_bounds("weight")), (self.biases, self.config.clip_bounds("bias"))):
            for p, c in zip(params, bounds):
                if p is not None and c is not None:
                    p.clamp_(-c, c)

    # ------------------------------------------------------------------ training
    def train_steps(self, x: torch.Tensor, target: torch.Tensor, steps: int, lrs: Sequence[float],
                    mode: str = "batch", point_weight: torch.Tensor | None = None,
                    mask: torch.Tensor | None = None, order_seed: int | None = None) -> torch.Tensor:
        """Train for ``steps`` iterations and return the final SSE ``[B]``.

        ``mode="batch"``: one update on the gradient summed over all points per iteration.
        ``mode="example"``: per iteration, one update per point (in a fixed order, shuffled each
        iteration when ``order_seed`` is given).
        """
        if len(lrs) != self.config.num_layers:
            raise ValueError(f"need one learning rate per layer ({self.config.num_layers}); got {len(lrs)}")
        x = self._expand(x)
        target = target.to(x)
        if target.ndim == 2:
            target = target.unsqueeze(0).expand(self.batch, -1, -1)
        if mode == "batch":
            for _ in range(steps):
                acts = self.forward(x)
                self.update_stability(acts)
                self.step(self.backward(acts, target, point_weight), lrs, mask)
        elif mode == "example":
            g = None if order_seed is None else torch.Generator().manual_seed(order_seed)
            n = x.shape[1]
            for _ in range(steps):
                order = torch.randperm(n, generator=g) if g is not None else torch.arange(n)
                for i in order.tolist():
                    pw = None if point_weight is None else (point_weight[..., i:i + 1])
                    acts = self.forward(x[:, i:i + 1])
                    self.update_stability(acts)
                    self.step(self.backward(acts, target[:, i:i + 1], pw), lrs, mask)
        else:
            raise ValueError(f"unknown training mode {mode!r}; use 'batch' (full batch) or 'example' (per example)")
        return self.sse(x, target)

    def snapshot(self, index: int = 0) -> dict[str, list[torch.Tensor]]:
        """Copies of network ``index``'s weights and biases (for drawing and animation)."""
        return {"weights": [w[index].detach().cpu().clone() for w in self.weights],
                "biases": [None if b is None else b[index].detach().cpu().clone() for b in self.biases]}
