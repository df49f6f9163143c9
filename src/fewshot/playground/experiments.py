"""The playground's experiments end to end: run, write markdown tables and PNG figures to a folder.

Each ``run_*`` returns the markdown it wrote (``<out>/results.md``) and is what the
``fewshot playground`` commands and ``benchmarks/playground.py`` call.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from .boolean import (all_boolean_functions, fewshot_function_experiment, function_name, learnability,
                      learnability_restarts, notebook_fewshot, point_errors, random_inputs, truth_table_inputs,
                      zero_at_origin)
from .network import BatchedMLP, NetConfig, layer_lrs

Log = Callable[[str], None]


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _cpu_note() -> str:
    return f"CPU, torch.set_num_threads({torch.get_num_threads()}), torch {torch.__version__}"


def _write(out: Path, text: str) -> str:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(text + "\n")
    return text


# ---------------------------------------------------------------------- experiment 1
#: name -> (config, learning rate, levels): sigmoid and tanh need different rates (tanh is 4x steeper).
BOOLEAN_SETTINGS = {
    "sigmoid, no bias": (NetConfig((3, 8, 1), "sigmoid", bias=False), 0.5, None),
    "sigmoid, bias": (NetConfig((3, 8, 1), "sigmoid", bias=True), 0.5, None),
    "tanh, no bias, 0/1 coding": (NetConfig((3, 8, 1), "tanh", bias=False), 0.1, 2),
    "tanh, no bias, ±1 coding": (NetConfig((3, 8, 1), "tanh", signed=True, bias=False), 0.1, 2),
}


def run_boolean(out: str | Path, settings: Sequence[str] = tuple(BOOLEAN_SETTINGS), levels: int = 8, base: int = 5000,
                threshold: float = 0.25, hidden: int = 8, seed: int = 0, mode: str = "batch",
                init_scale: float | tuple[float, ...] = 1.0, clip_weight: float | None = None,
                clip_bias: float | None = None, slow_factor: float = 1.0, log: Log = print) -> str:
    """Experiment 1: every 3-input boolean function, one network each, budgets ``base·2^k``.
    ``mode``/``init_scale``/``clip_*``/``slow_factor`` (first layer) apply to every setting."""
    from .draw import plot_history, plot_level_histogram

    out = Path(out)
    tables = all_boolean_functions(3)
    zero = zero_at_origin(tables)
    rows, never_lines, groups, results = [], [], {}, {}
    for name in settings:
        if name not in BOOLEAN_SETTINGS:
            raise ValueError(f"unknown setting {name!r}; choose from {'; '.join(map(repr, BOOLEAN_SETTINGS))} (separate several with ';')")
        cfg, lr, cap = BOOLEAN_SETTINGS[name]
        cfg = NetConfig((3, hidden, 1), cfg.activation, cfg.signed, cfg.bias, init_scale, clip_weight, clip_bias)
        lv = levels if cap is None else min(levels, cap)
        res = learnability(cfg, tables, lr=lr, levels=lv, base=base, threshold=threshold, seed=seed, mode=mode,
                           slow_factor=slow_factor)
        results[name] = res
        groups[name] = res.level.numpy()
        learnt = res.learnt
        counts = [int((res.level == k).sum()) for k in range(levels)]
        it = res.iterations[learnt].float()
        rows.append([name, lr, f"{base * 2 ** (lv - 1):,}", f"{int(learnt[zero].sum())}/128", f"{int(learnt[~zero].sum())}/128",
                     *[(c if k < lv else "–") for k, c in enumerate(counts)], int((~learnt).sum()),
                     f"{float(it.median()):.0f}" if len(it) else "–", f"{res.seconds:.1f}"])
        never = [function_name(t) for t in res.tables[~learnt]]
        if never and len(never) <= 40:
            never_lines.append(f"- **{name}** never learnt: " + ", ".join(f"`{n}`" for n in never))
        elif never:
            z = int((~learnt & zero).sum())
            never_lines.append(f"- **{name}** never learnt: {len(never)} functions ({z} with f(000)=0, {len(never) - z} with f(000)=1)")
        log(f"{name}: learnt {int(learnt.sum())}/256 (f(000)=0: {int(learnt[zero].sum())}, f(000)=1: "
            f"{int(learnt[~zero].sum())}) in {res.seconds:.1f}s")
    hist = plot_level_histogram(groups, levels, out / "boolean_levels.png", base)
    # training history: parity, the slowest functions learnt and a few never learnt, in the first setting
    first = results[settings[0]]
    slow = [int(i) for i in torch.argsort(first.iterations, descending=True) if first.iterations[i] >= 0][:4]
    never = [int(i) for i in torch.nonzero(~first.learnt).flatten()[:3]]
    picked = list(dict.fromkeys([0b10010110, *slow, *never]))
    labels = [function_name(first.tables[i]) + (" (never)" if first.level[i] < 0 else "") for i in picked]
    plot_history(first.curve_iters, first.curves[picked].numpy(), out / "boolean_history.png", labels=labels,
                 threshold=threshold, title=f"{settings[0]}: SSE while learning (a network stops once learnt)", log_x=True)
    headers = ["setting", "lr", "max budget", "learnt f(000)=0", "learnt f(000)=1", *[f"k={k}" for k in range(levels)],
               "never", "median iters", "time (s)"]
    text = "\n".join([
        "## Experiment 1: learnability of the 256 boolean functions of 3 inputs",
        "",
        f"One 3-{hidden}-1 network per function (all trained at once), "
        f"{'full-batch' if mode == 'batch' else 'per-example'} gradient descent on the summed squared "
        f"error, checked every 500 iterations; k = smallest k with SSE ≤ {threshold} within {base}·2^k iterations. "
        f"Init uniform ±{init_scale}, clipping {clip_weight}/{clip_bias} (weights/biases), first-layer lr ×{slow_factor:g}, "
        f"seed {seed}. {_cpu_note()}.",
        "",
        markdown_table(headers, rows),
        "",
        *never_lines,
        "",
        f"Figures: `{hist.name}`, `boolean_history.png`.",
    ])
    (out / "boolean.json").write_text(json.dumps({n: {"level": r.level.tolist(), "iterations": r.iterations.tolist(),
                                                      "final_sse": [None if np.isnan(v) else v for v in r.final_sse.tolist()],
                                                      "seconds": r.seconds} for n, r in results.items()}))
    return _write(out, text)


# ---------------------------------------------------------------------- the notebook's table
#: The notebook's learnability cell: 3-8-8-1, no bias, its unit σ(3(z - 1)), ½-mean squared error,
#: lr 2 with the first layer ×0.1, init ``0.1 * (rand - 0.5)`` (= ±0.05), weights and biases clipped
#: to ±1 after every update, the 128 functions with f(000) = 0, fresh networks for 5000·2^k iterations.
NOTEBOOK = {"config": NetConfig((3, 8, 8, 1), "sigmoid", bias=False, init_scale=0.05, clip_weight=1.0, clip_bias=1.0,
                                gain=3.0, shift=1.0, loss="half_mean"),
            "lr": 2.0, "slow_factor": 0.1}
#: The notebook's own result: every one of the 128 learnt; functions per level k.
NOTEBOOK_LEVELS = {0: 106, 1: 12, 2: 6, 3: 3, 4: 1, 5: 0, 6: 0, 7: 0}


def run_learnability(out: str | Path, config: NetConfig = NOTEBOOK["config"], lr: float = NOTEBOOK["lr"],
                     slow_factor: float = NOTEBOOK["slow_factor"], levels: int = 8, base: int = 5000,
                     threshold: float = 0.25, functions: str = "zero-at-origin", protocol: str = "restart",
                     random_bits: int | None = None, seed: int = 0, log: Log = print) -> str:
    """Learnability of boolean functions in any configuration (default: the notebook's), with the
    per-level counts of the notebook's table. ``protocol``: ``restart`` (a fresh network per
    budget, the notebook's) or ``continuous`` (one run checked every 500 iterations)."""
    out = Path(out)
    x = truth_table_inputs(config.sizes[0]) if random_bits is None else random_inputs(random_bits, 8, seed)
    tables = all_boolean_functions(3)
    if functions == "zero-at-origin":
        tables = tables[zero_at_origin(tables)]
    elif functions != "all":
        raise ValueError(f"functions must be 'zero-at-origin' (the notebook's 128) or 'all'; got {functions!r}")
    if protocol == "restart":
        res = learnability_restarts(config, tables, lr=lr, levels=levels, base=base, threshold=threshold, seed=seed,
                                    slow_factor=slow_factor, inputs=x)
    elif protocol == "continuous":
        if random_bits is not None:
            raise ValueError("--random-inputs needs --protocol restart")
        res = learnability(config, tables, lr=lr, levels=levels, base=base, threshold=threshold, seed=seed,
                           slow_factor=slow_factor)
    else:
        raise ValueError(f"protocol must be 'restart' or 'continuous'; got {protocol!r}")
    counts = {k: int((res.level == k).sum()) for k in range(levels)}
    learnt = int(res.learnt.sum())
    log(f"learnt {learnt}/{len(tables)}; per level {counts} ({res.seconds:.1f}s)")
    never = [function_name(t) for t in res.tables[~res.learnt]]
    cfg = config
    clip = f"weights ≤ {cfg.clip_weight}, biases ≤ {cfg.clip_bias} ({cfg.clip_mode})" if (cfg.clip_weight or cfg.clip_bias) else "none"
    desc = (f"{'-'.join(map(str, cfg.sizes))}, {cfg.activation}(gain·(z − shift)) with gain {cfg.gain:g}, shift {cfg.shift:g}, "
            f"{'bias' if cfg.bias else 'no bias'}, loss {cfg.loss}, lr {lr:g} (first layer ×{slow_factor:g}), init ±"
            f"{'/'.join(f'{a:g}' for a in cfg.init_scale)}, clipping {clip}"
            + (f", drop weights {cfg.drop_weights}" if cfg.drop_weights else "")
            + (f", stability term (rate {cfg.stability:g})" if cfg.stability else "")
            + (f", 8 random {random_bits}-bit inputs" if random_bits else ""))
    rows = [["this run", f"{learnt}/{len(tables)}", *[counts[k] for k in range(levels)], len(never), f"{res.seconds:.1f}"]]
    text = "\n".join([
        "## Learnability of boolean functions (the notebook's table)", "",
        f"{desc}; {functions} functions; protocol {protocol}: level k = "
        + ("the first fresh network trained for " if protocol == "restart" else "learnt within ")
        + f"{base}·2^k full-batch iterations with final SSE ≤ {threshold}; seed {seed}. {_cpu_note()}.", "",
        markdown_table(["run", "learnt", *[f"k={k}" for k in range(levels)], "never", "time (s)"], rows), "",
        ("Never learnt: " + ", ".join(f"`{n}`" for n in never[:40]) + (" …" if len(never) > 40 else "")) if never else
        "Every function was learnt.",
    ])
    (out / "learnability.json").parent.mkdir(parents=True, exist_ok=True)
    (out / "learnability.json").write_text(json.dumps({"level": res.level.tolist(), "functions": [function_name(t) for t in res.tables],
                                                       "final_sse": [None if np.isnan(v) else v for v in res.final_sse.tolist()],
                                                       "counts": counts, "seconds": res.seconds}))
    return _write(out, text)


#: The notebook's few-shot cell as printed in its README (31 tests): "Ready" and "Error" per test.
NOTEBOOK_FEWSHOT_READY = [1, 2, 1, 2, 2, 7, 1, 0, 1, 2, 1, 2, 3, 1, 5, 3, 3, 1, 3, 5, 2, 3, 8, 30, 5, 5, 3, 2, 4, 4, 3]
NOTEBOOK_FEWSHOT_ERROR = [1.501, 1.679, 0.396, 0.504, 0.268, 1.339, 1.701, 0.010, 1.147, 1.153, 0.209, 0.297, 0.307, 0.298,
                          0.292, 0.131, 0.125, 0.103, 0.024, 0.174, 0.091, 0.181, 0.240, 1.769, 0.045, 0.071, 0.045, 0.491,
                          0.082, 0.076, 0.114]


def run_notebook_fewshot(out: str | Path, config: NetConfig = NOTEBOOK["config"], chains: int = 10, tests: int = 31,
                         lr: float = 1.0, slow_factor: float = 0.1, end: float = 0.7, max_try: int = 100, epochs: int = 30,
                         seed: int = 0, log: Log = print) -> str:
    """The notebook's few-shot cell (see :func:`notebook_fewshot`) beside its printed results."""
    out = Path(out)
    t0 = time.perf_counter()
    res = notebook_fewshot(config, chains, tests, lr, slow_factor, end, max_try, epochs, seed)
    secs = time.perf_counter() - t0

    def summary(name, ready, error, steps="–"):
        ready, error = torch.as_tensor(ready).float(), torch.as_tensor(error).float()
        return [name, len(ready), f"{float(ready.median()):.0f}", f"{float(ready.mean()):.2f}",
                int((ready >= epochs).sum()), f"{float(error.median()):.3f}", steps]

    rows = [summary("the notebook (its README, one chain)", NOTEBOOK_FEWSHOT_READY, NOTEBOOK_FEWSHOT_ERROR),
            summary(f"fewshot, {chains} chains", res.ready.flatten(), res.error.flatten(), f"{float(res.steps.float().mean()):.0f}")]
    log(f"median Ready {rows[1][2]} (notebook {rows[0][2]}), {secs:.1f}s")
    text = "\n".join([
        "## The notebook's few-shot cell", "",
        f"{'-'.join(map(str, config.sizes))} network as in the learnability table (unit σ({config.gain:g}(z − {config.shift:g})), "
        f"{'no ' if not config.bias else ''}bias, loss {config.loss}), lr {lr:g} with the first layer ×{slow_factor:g}; "
        f"{chains} chains of {tests} tests: each test resets the last layer and teaches a random function with f(000) = 0, "
        f"keeping the rest of the network from the previous test; {epochs} epochs over the 8 points in order, each point "
        f"trained alone until |error| < {end:g} before the step (≤ {max_try + 1} steps, at least one). *Ready* = the last "
        f"epoch in which a point's squared error exceeded {end:g} ({epochs} = never settled); *Error* = the 8 points' summed "
        f"squared error at their first try in the last epoch. {_cpu_note()}; {secs:.1f}s.", "",
        markdown_table(["run", "tests", "median Ready", "mean Ready", f"Ready = {epochs}", "median Error", "steps per test"], rows),
    ])
    return _write(out, text)


# ---------------------------------------------------------------------- experiment 2
def run_fewshot_function(out: str | Path, repetitions: int = 1000, hidden: int = 8, threshold: float = 0.3,
                         max_steps: int = 200, max_presentations: int = 50, slow_factors: Sequence[float] = (1.0, 0.1, 0.0),
                         new_lr: float = 0.5, seed: int = 0, log: Log = print) -> str:
    """Experiment 2: few-shot learning of a new function, one data point at a time."""
    from .draw import plot_shots_histogram

    out = Path(out)
    cfg = NetConfig((3, hidden, 1), "sigmoid", bias=True)
    t0 = time.perf_counter()
    results = fewshot_function_experiment(cfg, repetitions, new_lr=new_lr, slow_factors=slow_factors, threshold=threshold,
                                          max_steps=max_steps, max_presentations=max_presentations, seed=seed)
    total = time.perf_counter() - t0
    rows, hist = [], {}
    for r in results:
        ok = r.result.success
        shots = r.result.shots[ok].float()
        steps = r.result.steps[ok].float()
        rows.append([r.condition, len(ok), f"{100 * ok.float().mean():.1f}%",
                     f"{float(shots.median()):.0f}" if len(shots) else "–", f"{float(shots.mean()):.2f}" if len(shots) else "–",
                     f"{float(shots.quantile(0.9)):.0f}" if len(shots) else "–",
                     f"{float(steps.mean()):.0f}" if len(steps) else "–", f"{r.seconds:.1f}"])
        hist[r.condition] = r.result.shots[ok].numpy()
        log(f"{r.condition}: success {100 * ok.float().mean():.1f}%, median shots {rows[-1][3]}")
    fig = plot_shots_histogram(hist, out / "fewshot_function_shots.png")
    text = "\n".join([
        "## Experiment 2: few-shot learning of a new boolean function",
        "",
        f"{repetitions} repetitions; each pre-trains a 3-{hidden}-1 sigmoid network with bias on a random function "
        f"(full batch, lr 0.5, 20,000 iterations, kept if SSE ≤ 0.25: {results[0].pretrained_ok} kept), re-initialises "
        f"the last layer, then learns a different random function one point at a time: a point it gets wrong "
        f"(squared error ≥ {threshold}) is presented (one shot) and trained on alone (lr {new_lr}, ≤ {max_steps} steps) until "
        f"its error < {threshold}; success when all 8 points are below {threshold}, failure when a point would be presented "
        f"more than {max_presentations} times. Shots are counted over successful runs. {_cpu_note()}; total {total:.1f}s "
        f"(pre-training {results[0].pretrain_seconds:.1f}s; the time column is the few-shot loop).",
        "",
        markdown_table(["condition", "runs", "success", "median shots", "mean shots", "90% shots", "mean steps", "time (s)"], rows),
        "",
        f"Figure: `{fig.name}`.",
    ])
    return _write(out, text)


# ---------------------------------------------------------------------- experiment 3
def run_new_digit(out: str | Path, data_dir: str | None = None, source: str = "auto", pool: int | None = None, hidden: int = 128,
                  shots: Sequence[int] = (1, 2, 5, 10), repeats: Sequence[int] = (1, 5, 20), draws: int = 5,
                  retrain_draws: int = 1, epochs: int = 15, slow_factor: float = 0.01, seed: int = 0, log: Log = print,
                  emnist: str | None = None) -> str:
    """Experiment 3: pre-train on nine digits, teach the tenth from a few examples (``emnist``: the
    EMNIST gzip.zip for ``source="emnist-digits"``/``"emnist-letters"``)."""
    from .digits import NewDigitConfig, load_digit_data, new_digit_experiment
    from .draw import plot_new_digit

    out = Path(out)
    data = load_digit_data(data_dir, source, pool=pool, seed=seed, emnist=emnist)
    log(f"data: {data.source}: {len(data.y_train)} train / {len(data.y_test)} test, {data.x_train.shape[1]} inputs")
    cfg = NewDigitConfig(hidden=hidden, epochs=epochs, repeats=tuple(repeats), slow_factor=slow_factor, shots=tuple(shots),
                         draws=draws, retrain_draws=retrain_draws, seed=seed)
    t0 = time.perf_counter()
    res = new_digit_experiment(data, cfg, log=log)
    total = time.perf_counter() - t0
    rows = [[r["method"], r["shot"], r["runs"], f"{100 * r['new']:.1f} ± {100 * r['new_ci']:.1f}",
             f"{100 * r['old']:.1f} ± {100 * r['old_ci']:.1f}",
             f"{100 * r['drop']:.1f}" if "drop" in r else f"{100 * (res['old_before'] - r['old']):.1f}"] for r in res["rows"]]
    fig = plot_new_digit(res["rows"], res["old_before"], out / "new_digit.png")
    secs = ", ".join(f"{k} {v:.1f}s" for k, v in res["seconds"].items())
    sizes = "-".join(str(s) for s in res["sizes"])
    text = "\n".join([
        "## Experiment 3: few-shot learning of a new digit",
        "",
        f"Data: {data.source}: {len(data.y_train)} images to train, {len(data.y_test)} to test. Ten {sizes} sigmoid networks, "
        f"each pre-trained on nine digits (one per held-out digit; mini-batch 16, lr 0.5, {epochs} epochs, squared error "
        f"on one-hot targets): old-nine test accuracy {100 * res['old_before']:.2f}% before teaching. "
        f"Each run draws the given number of training examples of the held-out digit ({draws} draws × 10 digits = runs; "
        f"retraining: {retrain_draws} draw(s)). *incremental*: the new digit's output unit is re-initialised and trained on "
        f"the examples one at a time (each reused ×n, lr {cfg.teach_lr:g}) while the hidden layer and the other output units learn "
        f"{slow_factor:g}× slower; *+ rehearsal*: the same with a memory of as many stored examples of each old digit, "
        f"the new examples repeated ×9 per round so that new and old are equally frequent. *prototype*: nearest class mean on the pre-trained hidden layer, the new class's mean from the few "
        f"examples. *retrain from scratch*: a fresh network trained on the old data plus the few examples (weighted "
        f"×{max(repeats)} per epoch). Accuracy = 10-way arg-max accuracy on the test half: on the new digit, and on the old "
        f"nine; drop = old-nine accuracy lost against the pre-trained network. ± = 95% CI over runs. {_cpu_note()}; "
        f"total {total:.1f}s ({secs}).",
        "",
        markdown_table(["method", "shots", "runs", "new digit acc %", "old nine acc %", "drop (points)"], rows),
        "",
        f"Figure: `{fig.name}`.",
    ])
    (out / "new_digit.json").write_text(json.dumps({"rows": res["rows"], "old_before": res["old_before"],
                                                    "seconds": res["seconds"], "source": data.source}))
    return _write(out, text)


# ---------------------------------------------------------------------- drawing
def run_draw(out: str | Path, function: str = "01101001", hidden: int = 8, activation: str = "sigmoid", bias: bool = True,
             signed: bool = False, steps: int = 20000, lr: float | None = None, frames: int = 24, gif: bool = True,
             seed: int = 0, log: Log = print) -> str:
    """Train one network on ``function`` (truth table, output on 000 first) and draw it."""
    from .draw import animate_network, draw_network, plot_history

    if len(function) != 8 or set(function) - {"0", "1"}:
        raise ValueError(f"function must be 8 bits (outputs on 000..111), e.g. 01101001 for parity; got {function!r}")
    out = Path(out)
    cfg = NetConfig((3, hidden, 1), activation, signed=signed, bias=bias)
    lr = lr if lr is not None else (0.5 if activation == "sigmoid" else 0.1)
    x = truth_table_inputs(3)
    target = torch.tensor([float(c) for c in function]).unsqueeze(-1)
    net = BatchedMLP.create(cfg, 1, seed=seed)
    lrs = layer_lrs(lr, cfg.num_layers)
    draw_network(net, x, target, out / "network_start.png", title=f"f = {function}, before training")
    marks = np.unique(np.geomspace(1, steps, frames).astype(int))
    snaps, labels, hist_it, hist = [net.snapshot()], ["iteration 0"], [0], [float(point_errors(net, x, target[None]).sum())]
    done = 0
    t0 = time.perf_counter()
    every = max(steps // 400, 1)
    while done < steps:
        n = min(every, steps - done)
        net.train_steps(cfg.encode(x), cfg.encode(target), n, lrs)
        done += n
        hist_it.append(done)
        hist.append(float(point_errors(net, x, target[None]).sum()))
        if len(snaps) <= len(marks) and (marks <= done).sum() >= len(snaps):
            snaps.append(net.snapshot())
            labels.append(f"iteration {done:,}, SSE {hist[-1]:.3f}")
    secs = time.perf_counter() - t0
    draw_network(net, x, target, out / "network_end.png", title=f"f = {function}, after {steps:,} iterations, SSE {hist[-1]:.3f}")
    plot_history(hist_it, np.array([hist]), out / "history.png", labels=[f"f = {function}"], threshold=0.25)
    files = ["network_start.png", "network_end.png", "history.png"]
    if gif:
        worst = int(point_errors(BatchedMLP(cfg, [w.unsqueeze(0) for w in snaps[0]["weights"]],
                                            [None if b is None else b.unsqueeze(0) for b in snaps[0]["biases"]]),
                                 x, target[None])[0].argmax())
        animate_network(snaps, net, x, target, out / "training.gif", point=worst, labels=labels)
        files.append("training.gif")
    log(f"f = {function}: SSE {hist[-1]:.4f} after {steps} iterations ({secs:.1f}s); wrote {', '.join(files)} to {out}")
    text = "\n".join([f"## Drawing: f = {function}", "",
                      f"3-{hidden}-1 {activation} network{'' if bias else ' without bias'}, lr {lr}, {steps:,} full-batch "
                      f"iterations in {secs:.1f}s: final SSE {hist[-1]:.4f}.", "",
                      "Files: " + ", ".join(f"`{f}`" for f in files)])
    return _write(out, text)
