"""Boolean functions of a few inputs: learnability of all of them (experiment 1) and few-shot
learning of a new one, one data point at a time (experiment 2)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .network import BatchedMLP, NetConfig, layer_lrs


# ---------------------------------------------------------------------- enumeration
def truth_table_inputs(n_inputs: int = 3) -> torch.Tensor:
    """The ``2^n`` binary input vectors ``[2^n, n]`` as 0/1, row ``j`` = ``j`` in binary (most
    significant bit first): ``000, 001, ..., 111``."""
    j = torch.arange(2**n_inputs)
    return torch.stack([(j >> (n_inputs - 1 - i)) & 1 for i in range(n_inputs)], 1).float()


def random_inputs(bits: int, points: int = 8, seed: int = 0) -> torch.Tensor:
    """``points`` distinct random binary vectors ``[points, bits]`` (0/1): the notebook's
    ``test_from_random_input``, which replaces the truth table's inputs by random ``i_bits``-bit ones."""
    if points > 2**bits:
        raise ValueError(f"cannot draw {points} distinct inputs of {bits} bits (only {2 ** bits} exist)")
    g = torch.Generator().manual_seed(seed)
    codes = torch.randperm(2**bits, generator=g)[:points]
    return torch.stack([(codes >> (bits - 1 - i)) & 1 for i in range(bits)], 1).float()


def all_boolean_functions(n_inputs: int = 3) -> torch.Tensor:
    """Every boolean function of ``n_inputs`` inputs as its truth table ``[2^(2^n), 2^n]`` (0/1):
    function ``f`` outputs bit ``j`` of ``f`` on input row ``j`` of :func:`truth_table_inputs`."""
    points = 2**n_inputs
    f = torch.arange(2**points)
    return torch.stack([(f >> j) & 1 for j in range(points)], 1).float()


def function_name(table: torch.Tensor) -> str:
    """Truth table as a bit string, output on ``000`` first: ``"01101001"`` is 3-input parity."""
    return "".join(str(int(v)) for v in table.flatten().tolist())


def zero_at_origin(tables: torch.Tensor) -> torch.Tensor:
    """``[F]`` bool: the functions with ``f(0...0) = 0`` (half of them)."""
    return tables[:, 0] == 0


def point_errors(net: BatchedMLP, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Squared error of every network on every point ``[B, P]``, on the 0/1 scale whatever the
    coding (±1 errors are halved), so thresholds mean the same for every network."""
    diff = net(net.config.encode(x)) - net.config.encode(targets)
    if net.config.signed:
        diff = diff / 2.0
    return (diff * diff).sum(-1)


# ---------------------------------------------------------------------- experiment 1
@dataclass
class LearnabilityResult:
    """Outcome of training one network per function.

    ``iterations[f]`` is the first check (every ``log_every`` iterations) at which the SSE was
    ≤ threshold (-1: never within the largest budget); ``level[f]`` the smallest ``k`` with
    ``iterations[f] ≤ base * 2^k`` (-1: never). ``curve_iters``/``curves [F, T]`` log the SSE
    (NaN once learnt), ``final_sse`` the last one."""

    tables: torch.Tensor
    level: torch.Tensor
    iterations: torch.Tensor
    final_sse: torch.Tensor
    budgets: list[int]
    curve_iters: list[int]
    curves: torch.Tensor
    seconds: float
    settings: dict = field(default_factory=dict)

    @property
    def learnt(self) -> torch.Tensor:
        return self.level >= 0


def learnability(config: NetConfig, tables: torch.Tensor | None = None, lr: float = 0.5, levels: int = 8,
                 base: int = 5000, threshold: float = 0.25, seed: int = 0, mode: str = "batch",
                 slow_factor: float = 1.0, log_every: int = 500, device: str | torch.device = "cpu") -> LearnabilityResult:
    """Train one network per truth table (all at once) with budgets ``base * 2^k``, ``k < levels``.

    Training is continuous and checked every ``log_every`` iterations; a network stops at its
    first check with SSE ≤ threshold, so one run of the largest budget gives every level.
    """
    n_inputs = config.sizes[0]
    if config.sizes[-1] != 1:
        raise ValueError(f"boolean functions have one output; got sizes {config.sizes}")
    x = truth_table_inputs(n_inputs).to(device)
    tables = (all_boolean_functions(n_inputs) if tables is None else tables).to(device)
    n_fun = tables.shape[0]
    lrs = layer_lrs(lr, config.num_layers, slow_factor)
    net = BatchedMLP.create(config, n_fun, seed=seed, device=device)
    active = torch.arange(n_fun, device=device)
    level = torch.full((n_fun,), -1, dtype=torch.long)
    iters = torch.full((n_fun,), -1, dtype=torch.long)
    final = torch.full((n_fun,), float("nan"))
    budgets = [base * 2**k for k in range(levels)]
    curve_iters, curves = [0], [point_errors(net, x, tables.unsqueeze(-1)).sum(1).cpu()]
    t0 = time.perf_counter()
    done = 0
    target = config.encode(tables.unsqueeze(-1))
    while done < budgets[-1] and len(active):
        n = min(log_every, budgets[-1] - done)
        net.train_steps(config.encode(x), target[active], n, lrs, mode=mode)
        done += n
        sse = point_errors(net, x, tables[active].unsqueeze(-1)).sum(1).cpu()
        act_cpu = active.cpu()
        row = torch.full((n_fun,), float("nan"))
        row[act_cpu] = sse
        curve_iters.append(done)
        curves.append(row)
        final[act_cpu] = sse
        hit = sse <= threshold
        if hit.any():  # learnt networks stop training, which shrinks the batch
            iters[act_cpu[hit]] = done
            keep = torch.nonzero(~hit).flatten()
            net = net.select(keep.to(device))
            active = active[keep.to(device)]
    for k in reversed(range(levels)):
        level[(iters >= 0) & (iters <= budgets[k])] = k
    return LearnabilityResult(tables.cpu(), level, iters, final, budgets, curve_iters, torch.stack(curves, 1),
                              time.perf_counter() - t0,
                              {"config": config, "lr": lr, "threshold": threshold, "seed": seed, "mode": mode, "base": base})


def learnability_restarts(config: NetConfig, tables: torch.Tensor | None = None, lr: float = 2.0, levels: int = 8,
                          base: int = 5000, threshold: float = 0.25, seed: int = 0, slow_factor: float = 1.0,
                          inputs: torch.Tensor | None = None, device: str | torch.device = "cpu") -> LearnabilityResult:
    """The notebook's protocol: for ``k = 0, 1, ...`` every function not yet learnt gets a
    *fresh* network trained full-batch for ``base * 2^k`` iterations and counts as learnt at
    level ``k`` when its final SSE ≤ ``threshold`` (the notebook: ``setup_net(); train(5000 * 2**k);
    errsum <= 0.25``). Unlike :func:`learnability`, a level is a new initialisation, not more
    iterations of the same run. ``iterations`` holds the budget of the level that succeeded.
    ``inputs [P, d]``: other input points than the truth table (``tables`` then label those P points).
    """
    n_inputs = config.sizes[0]
    if config.sizes[-1] != 1:
        raise ValueError(f"boolean functions have one output; got sizes {config.sizes}")
    x = (truth_table_inputs(n_inputs) if inputs is None else inputs).to(device)
    if x.shape[1] != n_inputs:
        raise ValueError(f"inputs have {x.shape[1]} bits but the network has {n_inputs} inputs")
    tables = (all_boolean_functions(n_inputs) if tables is None else tables).to(device)
    if tables.shape[1] != x.shape[0]:
        raise ValueError(f"tables give {tables.shape[1]} outputs for {x.shape[0]} input points")
    n_fun = tables.shape[0]
    lrs = layer_lrs(lr, config.num_layers, slow_factor)
    level = torch.full((n_fun,), -1, dtype=torch.long)
    iters = torch.full((n_fun,), -1, dtype=torch.long)
    final = torch.full((n_fun,), float("nan"))
    budgets = [base * 2**k for k in range(levels)]
    active = torch.arange(n_fun)
    target = config.encode(tables.unsqueeze(-1))
    curve_iters, curves = [], []
    t0 = time.perf_counter()
    for k, budget in enumerate(budgets):
        if not len(active):
            break
        net = BatchedMLP.create(config, len(active), seed=seed + 1000 * k, device=device)
        net.train_steps(config.encode(x), target[active.to(device)], budget, lrs, mode="batch")
        sse = point_errors(net, x, tables[active.to(device)].unsqueeze(-1)).sum(1).cpu()
        final[active] = sse
        row = torch.full((n_fun,), float("nan"))
        row[active] = sse
        curve_iters.append(budget)
        curves.append(row)
        hit = sse <= threshold
        level[active[hit]] = k
        iters[active[hit]] = budget
        active = active[~hit]
    return LearnabilityResult(tables.cpu(), level, iters, final, budgets, curve_iters, torch.stack(curves, 1),
                              time.perf_counter() - t0,
                              {"config": config, "lr": lr, "threshold": threshold, "seed": seed, "protocol": "restart",
                               "base": base})


# ---------------------------------------------------------------------- experiment 2
@dataclass
class FewShotResult:
    """Per network: ``shots`` (presentations of a wrongly answered point), ``steps`` (gradient
    steps), ``success`` (all points below the threshold), ``presentations [B, P]`` per point."""

    shots: torch.Tensor
    steps: torch.Tensor
    success: torch.Tensor
    presentations: torch.Tensor
    iterations: int


def threshold_fewshot(net: BatchedMLP, x: torch.Tensor, targets: torch.Tensor, lrs: Sequence[float],
                      threshold: float = 0.3, max_steps: int = 200, max_presentations: int = 50,
                      order: torch.Tensor | None = None, seed: int = 0) -> FewShotResult:
    """Teach each network its own function one data point at a time.

    Every network walks its own cyclic ``order [B, P]`` of the points (random per network unless
    given). It skips points whose squared error (0/1 scale) is already below ``threshold``;
    a point it gets wrong is *presented* (one shot): single-example gradient steps until its
    error falls below ``threshold`` or ``max_steps`` steps were taken. The loop stops with
    success as soon as all points are below the threshold, and with failure when a point would be
    presented more than ``max_presentations`` times. ``x [P, d]`` (0/1), ``targets [B, P, 1]`` (0/1).
    Networks are trained in place.
    """
    B, P = net.batch, x.shape[0]
    dev = net.device
    x, targets = x.to(dev), targets.to(dev)
    if targets.shape[:2] != (B, P):
        raise ValueError(f"targets must be [B={B}, P={P}, outputs]; got {tuple(targets.shape)}")
    if order is None:
        g = torch.Generator().manual_seed(seed)
        order = torch.stack([torch.randperm(P, generator=g) for _ in range(B)])
    order = order.to(dev)
    xe, te = net.config.encode(x), net.config.encode(targets)
    rows = torch.arange(B, device=dev)
    pos = torch.full((B,), -1, dtype=torch.long, device=dev)  # position in `order` of the current/last point
    in_pres = torch.zeros(B, dtype=torch.bool, device=dev)
    done = torch.zeros(B, dtype=torch.bool, device=dev)
    success = torch.zeros(B, dtype=torch.bool, device=dev)
    pres_steps = torch.zeros(B, dtype=torch.long, device=dev)
    steps = torch.zeros(B, dtype=torch.long, device=dev)
    presentations = torch.zeros(B, P, dtype=torch.long, device=dev)
    offsets = torch.arange(1, P + 1, device=dev)
    it = 0
    while not bool(done.all()):
        it += 1
        err = point_errors(net, x, targets)  # [B, P]
        point = order[rows, pos.clamp_min(0)]
        cur = err[rows, point]
        # a presentation ends when its point is learnt or its step budget is spent
        in_pres &= ~((cur < threshold) | (pres_steps >= max_steps))
        idle = ~in_pres & ~done
        all_ok = (err < threshold).all(1)
        success |= idle & all_ok
        done |= idle & all_ok
        idle &= ~all_ok
        if bool(idle.any()):
            cand = (pos.unsqueeze(1) + offsets) % P  # next positions in cyclic order [B, P]
            wrong = err.gather(1, order.gather(1, cand)) >= threshold
            first = wrong.float().argmax(1)  # first wrongly answered point after the current one
            new_pos = cand[rows, first]
            new_point = order[rows, new_pos]
            exhausted = idle & (presentations[rows, new_point] >= max_presentations)
            done |= exhausted
            start = idle & ~exhausted
            pos = torch.where(start, new_pos, pos)
            presentations[rows[start], new_point[start]] += 1
            pres_steps = torch.where(start, torch.zeros_like(pres_steps), pres_steps)
            in_pres |= start
        stepping = in_pres & ~done
        if not bool(stepping.any()):
            continue
        point = order[rows, pos.clamp_min(0)]
        acts = net.forward(xe[point].unsqueeze(1))
        net.step(net.backward(acts, te[rows, point].unsqueeze(1)), lrs, mask=stepping)
        pres_steps += stepping.long()
        steps += stepping.long()
    return FewShotResult(presentations.sum(1).cpu(), steps.cpu(), success.cpu(), presentations.cpu(), it)


@dataclass
class FewShotFunctionResult:
    condition: str
    result: FewShotResult
    pretrained_ok: int
    seconds: float  # the few-shot loop only
    pretrain_seconds: float = 0.0


def fewshot_function_experiment(config: NetConfig, repetitions: int = 1000, lr: float = 0.5, new_lr: float = 0.5,
                                slow_factors: Sequence[float] = (1.0, 0.1, 0.0), pretrain_steps: int = 20000,
                                threshold: float = 0.3, max_steps: int = 200, max_presentations: int = 50,
                                seed: int = 0, device: str | torch.device = "cpu") -> list[FewShotFunctionResult]:
    """Experiment 2: pre-train ``repetitions`` networks, each on its own random function (full
    batch, SSE ≤ 0.25), re-initialise the last layer, then teach a different random function with
    :func:`threshold_fewshot` for each first-layer slow-down factor; plus a from-scratch baseline."""
    n_inputs = config.sizes[0]
    x = truth_table_inputs(n_inputs)
    tables = all_boolean_functions(n_inputs)
    g = torch.Generator().manual_seed(seed)
    old = torch.randint(len(tables), (repetitions,), generator=g)
    new = (old + torch.randint(1, len(tables), (repetitions,), generator=g)) % len(tables)  # always differs
    order = torch.stack([torch.randperm(len(x), generator=g) for _ in range(repetitions)])
    t0 = time.perf_counter()
    base = BatchedMLP.create(config, repetitions, seed=seed, device=device)
    sse = base.train_steps(config.encode(x), config.encode(tables[old].unsqueeze(-1)), pretrain_steps,
                           layer_lrs(lr, config.num_layers), mode="batch")
    if config.signed:
        sse = sse / 4.0
    ok = torch.nonzero(sse.cpu() <= 0.25).flatten()
    pre_s = time.perf_counter() - t0
    if len(ok) == 0:
        raise RuntimeError("no network learnt its pre-training function; raise pretrain_steps or lr")
    base = base.select(ok)
    base.reinit_layer(-1, seed=seed + 1)
    new_t = tables[new[ok]].unsqueeze(-1)
    out = []
    for factor in slow_factors:
        net = base.clone()
        t1 = time.perf_counter()
        res = threshold_fewshot(net, x, new_t, layer_lrs(new_lr, config.num_layers, factor), threshold, max_steps,
                                max_presentations, order=order[ok])
        name = f"pre-trained, first-layer lr x{factor:g}"
        out.append(FewShotFunctionResult(name, res, len(ok), time.perf_counter() - t1, pre_s))
    scratch = BatchedMLP.create(config, len(ok), seed=seed + 2, device=device)
    t1 = time.perf_counter()
    res = threshold_fewshot(scratch, x, new_t, layer_lrs(new_lr, config.num_layers), threshold, max_steps,
                            max_presentations, order=order[ok])
    out.append(FewShotFunctionResult("from scratch (no pre-training)", res, len(ok), time.perf_counter() - t1))
    return out


# ---------------------------------------------------------------------- the notebook's few-shot loop
@dataclass
class NotebookFewShotResult:
    """Per chain and test ``[B, L]``: ``ready`` (the last epoch, 1-based, in which a point still had
    a squared error above the threshold; 0 = none), ``error`` (the notebook's "Error": summed squared
    error of the 8 points at their first try in the last epoch), ``steps`` (gradient steps), and the
    functions taught ``[B, L]`` (index into :func:`all_boolean_functions`)."""

    ready: torch.Tensor
    error: torch.Tensor
    steps: torch.Tensor
    functions: torch.Tensor


def notebook_fewshot(config: NetConfig, chains: int = 10, tests: int = 31, lr: float = 1.0, slow_factor: float = 0.1,
                     end: float = 0.7, max_try: int = 100, epochs: int = 30, seed: int = 0,
                     functions: torch.Tensor | None = None) -> NotebookFewShotResult:
    """The notebook's few-shot cell (``multi_test``), ``chains`` independent copies at once.

    A chain starts from a fresh network; test ``l`` resets the last layer and teaches a random
    function with f(000) = 0 (the notebook's ``randrange(0, 127)``), keeping the rest of the network
    from test ``l - 1``. Each of ``epochs`` epochs walks the 8 points in order; a point is trained on
    alone, one step after another, until its error *before* the step is below ``end`` in absolute
    value (``abs(error) < few_shot_end``), at most ``max_try + 1`` steps. Every visit takes at least
    one step (the notebook steps before it checks).
    """
    if config.sizes[0] != 3 or config.sizes[-1] != 1:
        raise ValueError(f"the notebook's few-shot loop is for 3-input, 1-output networks; got sizes {config.sizes}")
    x = truth_table_inputs(3)
    tables = all_boolean_functions(3)
    g = torch.Generator().manual_seed(seed)
    if functions is None:
        functions = torch.randint(0, 127, (chains, tests), generator=g) * 2  # bit 0 (the output on 000) is 0
    net = BatchedMLP.create(config, chains, seed=seed)
    lrs = layer_lrs(lr, config.num_layers, slow_factor)
    xe = config.encode(x)
    ready = torch.zeros(chains, tests, dtype=torch.long)
    error = torch.zeros(chains, tests)
    steps = torch.zeros(chains, tests, dtype=torch.long)
    for t in range(tests):
        if t > 0:
            net.reinit_layer(-1, seed=seed + 7919 * t)
        target = config.encode(tables[functions[:, t]].unsqueeze(-1))  # [B, 8, 1]
        for epoch in range(epochs):
            first = torch.zeros(chains)
            for i in range(len(x)):
                active = torch.ones(chains, dtype=torch.bool)
                for k in range(max_try + 1):
                    acts = net.forward(xe[i:i + 1])
                    err = (acts[-1] - target[:, i:i + 1]).flatten()
                    if k == 0:
                        first += err.pow(2)
                    if k == 0 and config.stability is not None:  # the notebook: forward(dostability=first)
                        net.update_stability(acts)
                    ready[:, t] = torch.where(active & (err.pow(2) > end), epoch + 1, ready[:, t])
                    net.step(net.backward(acts, target[:, i:i + 1]), lrs, mask=active)
                    steps[:, t] += active.long()
                    active &= err.abs() >= end
                    if not bool(active.any()):
                        break
            error[:, t] = first
    return NotebookFewShotResult(ready, error, steps, functions)
