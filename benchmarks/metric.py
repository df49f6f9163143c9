"""The metric-based family on Omniglot under a small CPU budget, beside the published numbers.

    python benchmarks/metric.py [--episodes 300] [--tasks 100] [--methods all] [--out runs/bench-metric]

Training data: Omniglot background minus the project's held-out alphabets, 28×28, ×4 rotations.
Every trained method gets the same budget: ``--episodes`` episodes of 20-way 1-shot 3-query,
Adam 1e-3 with a cosine schedule, seed 0, 1 CPU thread, no validation. Raw-pixel baselines are
not trained. One model per method is evaluated in all four settings (the papers train one per
setting) on the same fixed task sets (seed 0) drawn from the held-out alphabets, 5 queries per class.

Published numbers (Vinyals split, 20 evaluation alphabets, full training of thousands of
episodes — not comparable one-to-one with this budget) are shown beside ours.
Writes benchmarks/results/metric.md. A run directory that already holds a trained model is reused.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
SETTINGS = [(5, 1), (5, 5), (20, 1), (20, 5)]

#: name -> (registered method, options, published 5w1s/5w5s/20w1s/20w5s and source)
METHODS: dict[str, tuple[str, dict, tuple | None, str]] = {
    "1nn-pixels": ("1nn", {}, None, ""),
    "nearest-prototype-pixels": ("nearest_prototype", {}, None, ""),
    "protonet": ("protonet", {}, (98.8, 99.7, 96.0, 98.9), "Snell et al. 2017"),
    "siamese (bce, Koch L1 head)": ("siamese", {"objective": "bce", "head": "l1"}, (97.3, 98.4, 88.1, 97.0),
                                    "Koch et al. 2015 via Vinyals et al."),
    "siamese (triplet, batch-hard)": ("siamese", {"objective": "triplet", "mining": "batch_hard"}, None, ""),
    "matching (FCE off)": ("matching", {"fce": False}, (98.1, 98.9, 93.8, 98.5), "Vinyals et al. 2016"),
    "matching (FCE on)": ("matching", {"fce": True}, None, "no Omniglot FCE number in the paper"),
    "matching (FCE off; learned scale from 10)": ("matching", {"fce": False, "scale": 10.0, "learn_scale": True}, None,
                                                  "variant: sharper attention"),
    "relation (MSE)": ("relation", {"objective": "mse"}, (99.6, 99.8, 97.6, 99.1), "Sung et al. 2018"),
    "relation (CE)": ("relation", {"objective": "ce"}, None, "variant: softmax cross-entropy"),
    "relation (MSE; sum over shots)": ("relation", {"objective": "mse", "class_pool": "sum"}, (99.6, 99.8, 97.6, 99.1),
                                       "Sung et al. 2018"),
}

#: variants evaluated with the weights trained for another entry: name -> (entry, attributes set after loading).
#: Relation nets trained 1-shot: mean and sum of the support maps agree there, they differ at 5-shot.
EVAL_VARIANTS = {"relation (MSE; sum over shots)": ("relation (MSE)", {"class_pool": "sum"})}


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")


def write_table(rows: list, args, train, test, held_out: list[str], final: bool) -> str:
    """Markdown table of ``rows``; written after every method so a cut run still leaves its numbers."""
    lines = [
        "# Metric-based family on Omniglot (held-out background alphabets)", "",
        f"Training: background minus held-out alphabets ({train.num_classes} classes with ×4 rotations), 28×28; "
        f"each trained method: **{args.episodes} episodes** of {args.way}-way 1-shot {args.query}-query, Adam 1e-3, cosine "
        "schedule, seed 0, default backbone (Conv4; Sung's 4-layer encoder for relation). "
        f"CPU budget: 1 torch thread on a shared 2-core machine ({platform.processor() or platform.machine()}).", "",
        f"Evaluation: {args.tasks} fixed tasks per setting (seed 0, 5 queries per class) from "
        f"{', '.join(held_out)} ({test.num_classes} classes, classes drawn across alphabets); "
        "accuracy % ± 95% CI. Published numbers (in brackets) are for the Vinyals split after full training.", "",
        "| method | train episodes | train time (s) | eval time (s) | 5-way 1-shot | 5-way 5-shot | 20-way 1-shot | 20-way 5-shot | published from |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, _, _, trained, train_s, eval_s, accs, published, source in rows:
        cells = []
        for i, key in enumerate(SETTINGS):
            a, c = accs[key]
            cells.append(f"{a:.1f} ± {c:.1f}" + (f" ({published[i]})" if published else ""))
        lines.append(f"| {name} | {args.episodes if trained else 0} | {train_s:.0f} | {eval_s:.0f} | " + " | ".join(cells)
                     + f" | {source} |")
    text = "\n".join(lines) + "\n"
    (HERE / "results").mkdir(exist_ok=True)
    name = args.results or ("metric" if args.methods == "all" and final else "metric_partial")
    (HERE / "results" / f"{name}.md").write_text(text)
    return text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=300)
    ap.add_argument("--way", type=int, default=20)
    ap.add_argument("--query", type=int, default=3)
    ap.add_argument("--tasks", type=int, default=100)
    ap.add_argument("--methods", default="all", help="comma list of names in METHODS, or all")
    ap.add_argument("--out", default="runs/bench-metric")
    ap.add_argument("--results", default=None, help="name of the results file (default: metric, or metric_partial for a subset)")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from fewshot.engine.build import build_run
    from fewshot.engine.checkpoint import load_checkpoint
    from fewshot.data import HELDOUT_ALPHABETS, load_omniglot, with_rotations
    from fewshot.tasks.episodes import TaskSet
    from fewshot.engine.evaluate import evaluate
    from fewshot.engine.config import TrainConfig

    data_dir = os.environ.get("FEWSHOT_DATA") or str(HERE.parent.parent / "shared" / "data")
    train = with_rotations(load_omniglot("background", data_dir, exclude_alphabets=["heldout"]))
    test = load_omniglot("background", data_dir, alphabets=["heldout"])
    tasksets = {(w, s): TaskSet.generate(test, w, s, 5, args.tasks, seed=0) for w, s in SETTINGS}
    names = list(METHODS) if args.methods == "all" else [n.strip() for n in args.methods.split(",")]
    rows = []
    for name in names:
        method_name, options, published, source = METHODS[name]
        base, attrs = EVAL_VARIANTS.get(name, (name, {}))
        out = Path(args.out) / slug(base)
        t0 = time.perf_counter()
        cfg = TrainConfig(steps=args.episodes, way=args.way, shot=1, query=args.query, val_tasks=0, seed=0,
                          device="cpu", progress=False, log_every=25, checkpoint_every=100)
        trainer = build_run(method_name, train, cfg, out, params=options)
        trained = any(p.requires_grad for p in trainer.method.parameters())
        if not (out / "last.json").exists():
            trainer.fit()
            (out / "bench_train_seconds.txt").write_text(f"{time.perf_counter() - t0:.1f}")
        timing = out / "bench_train_seconds.txt"  # a reused run reports the time it took when trained
        train_s = float(timing.read_text()) if timing.exists() else time.perf_counter() - t0
        method, info = load_checkpoint(out, "last")
        for key, value in attrs.items():
            setattr(method, key, value)
        accs = {}
        t1 = time.perf_counter()
        for key, taskset in tasksets.items():
            res = evaluate(method, taskset.episodes(test), "cpu")
            accs[key] = (100 * res.accuracy, 100 * res.ci95)
        eval_s = time.perf_counter() - t1
        rows.append((name, method_name, options, trained, train_s, eval_s, accs, published, source))
        print(name, f"train {train_s:.0f}s eval {eval_s:.0f}s", {f"{w}w{s}s": f"{a:.1f}±{c:.1f}" for (w, s), (a, c) in accs.items()},
              flush=True)
        write_table(rows, args, train, test, list(HELDOUT_ALPHABETS), final=False)
    print(write_table(rows, args, train, test, list(HELDOUT_ALPHABETS), final=True))

if __name__ == "__main__":
    main()
