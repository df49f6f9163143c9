"""The notebook's learnability table in its own configuration, the readings of its clipping and
the other settings that differ from fewshot's playground, and the few-shot-function experiment
with the notebook's and fewshot's thresholds and rates. Writes benchmarks/results/playground_notebook.md.

    python benchmarks/playground_notebook.py [--seeds 0,1,2] [--reading-levels 3] [--repetitions 1000]

Same code as `fewshot playground learnability` / `fewshot playground fewshot-function`.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace
from pathlib import Path

import torch

from fewshot.playground.boolean import all_boolean_functions, learnability_restarts, zero_at_origin
from fewshot.playground.experiments import NOTEBOOK, NOTEBOOK_LEVELS, markdown_table, run_fewshot_function

HERE = Path(__file__).resolve().parent


from fewshot.utils import process_cpu_seconds as cpu  # noqa: E402


#: name -> (changes to the notebook's NetConfig, lr, first-layer factor)
READINGS = {
    "notebook (clip the weights after each update, every layer)": ({}, 2.0, 0.1),
    "clip the update step instead": ({"clip_mode": "update"}, 2.0, 0.1),
    "clip only the last layer": ({"clip_weight": (None, None, 1.0), "clip_bias": (None, None, 1.0)}, 2.0, 0.1),
    "no clipping": ({"clip_weight": None, "clip_bias": None}, 2.0, 0.1),
    "first layer at full rate (×1)": ({}, 2.0, 1.0),
    "plain sigmoid σ(z) instead of σ(3(z − 1))": ({"gain": 1.0, "shift": 0.0}, 2.0, 0.1),
    "summed squared error instead of ½-mean": ({"loss": "sse"}, 2.0, 0.1),
    "init ±0.1 instead of ±0.05": ({"init_scale": 0.1}, 2.0, 0.1),
    "fewshot's earlier reading: σ(z), SSE, ±0.1, clip weights": ({"gain": 1.0, "shift": 0.0, "loss": "sse", "init_scale": 0.1}, 2.0, 1.0),
    "  … with the first layer ×0.1": ({"gain": 1.0, "shift": 0.0, "loss": "sse", "init_scale": 0.1}, 2.0, 0.1),
    "  … clipping the update instead": ({"gain": 1.0, "shift": 0.0, "loss": "sse", "init_scale": 0.1, "clip_mode": "update"}, 2.0, 1.0),
    "  … unclipped, init ±1": ({"gain": 1.0, "shift": 0.0, "loss": "sse", "init_scale": 1.0, "clip_weight": None,
                                "clip_bias": None}, 2.0, 1.0),
    "notebook + drop 90% of the weights of layers 1-2": ({"drop_weights": (0.9, 0.9)}, 2.0, 0.1),
    "notebook + the stability term (rate 0.1)": ({"stability": 0.1}, 2.0, 0.1),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--reading-levels", type=int, default=3)
    ap.add_argument("--repetitions", type=int, default=1000)
    ap.add_argument("--out", default="runs/bench-playground-notebook")
    ap.add_argument("--only", default="table,readings,fewshot")
    args = ap.parse_args()
    torch.set_num_threads(1)
    only = args.only.split(",")
    load0 = os.getloadavg()
    c0, t0 = cpu(), time.perf_counter()
    tables = all_boolean_functions(3)
    tables = tables[zero_at_origin(tables)]
    parts = []
    if "table" in only:
        rows = [["the notebook (its README)", "128/128", *NOTEBOOK_LEVELS.values(), 0, "–"]]
        for seed in [int(s) for s in args.seeds.split(",")]:
            c = cpu()
            r = learnability_restarts(NOTEBOOK["config"], tables, NOTEBOOK["lr"], levels=8, seed=seed,
                                      slow_factor=NOTEBOOK["slow_factor"])
            rows.append([f"fewshot, seed {seed}", f"{int(r.learnt.sum())}/128", *[int((r.level == k).sum()) for k in range(8)],
                         int((~r.learnt).sum()), f"{cpu() - c:.1f}"])
            print(rows[-1], flush=True)
        parts += ["## The notebook's table in its configuration", "",
                  "3-8-8-1, no bias, units σ(3(z − 1)), loss ½Σ(a−t)²/8, lr 2 with the first layer ×0.1, init "
                  "0.1·(rand − 0.5) = ±0.05, weights and biases clipped to ±1 after every update; the 128 functions with "
                  "f(000) = 0; level k = the first *fresh* network trained full-batch for 5000·2^k iterations with final "
                  "SSE ≤ 0.25 (`fewshot playground learnability`, defaults).", "",
                  markdown_table(["run", "learnt", *[f"k={k}" for k in range(8)], "never", "CPU s"], rows), ""]
    if "readings" in only:
        lv = args.reading_levels
        rows = []
        for name, (change, lr, slow) in READINGS.items():
            cfg = replace(NOTEBOOK["config"], **change)
            c = cpu()
            r = learnability_restarts(cfg, tables, lr, levels=lv, seed=0, slow_factor=slow)
            rows.append([name, f"{lr:g} (×{slow:g})", f"{int((r.level == 0).sum())}/128", f"{int(r.learnt.sum())}/128",
                         f"{cpu() - c:.1f}"])
            print(rows[-1], flush=True)
        parts += ["## Readings of the clipping, and the other differences", "",
                  f"One change at a time from the notebook's configuration (seed 0, same protocol), budgets up to "
                  f"{5000 * 2 ** (lv - 1):,} iterations (k < {lv}).", "",
                  markdown_table(["setting", "lr (first layer)", "learnt at k=0 (5,000 it.)",
                                  f"learnt by k={lv - 1}", "CPU s"], rows), ""]
    if "fewshot" in only:
        for thr, lr in ((0.3, 0.5), (0.1, 3.0)):
            c = cpu()
            parts.append(run_fewshot_function(Path(args.out) / f"fewshot-function-{thr:g}-{lr:g}", args.repetitions,
                                              threshold=thr, new_lr=lr))
            parts.append(f"\n(CPU {cpu() - c:.1f}s)\n")
    load1 = os.getloadavg()
    head = ["# The incremental-MLP notebook in its own configuration", "",
            f"Generated by `python benchmarks/playground_notebook.py --only {args.only}` "
            f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}); process CPU {cpu() - c0:.1f}s, wall "
            f"{time.perf_counter() - t0:.1f}s, torch threads {torch.get_num_threads()}, load average "
            f"{load0[0]:.2f} at start, {load1[0]:.2f} at end; torch {torch.__version__}.", ""]
    text = "\n".join(head + parts) + "\n"
    dest = HERE / "results" / ("playground_notebook.md" if args.only == ap.get_default("only")
                               else f"playground_notebook-{args.only.replace(',', '-')}.md")
    dest.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
