"""Chapter 2's matching-network exercise on Omniglot: 20-way 1-shot, dropout in the embedding,
learning rate reduced on a validation plateau. One `fewshot train` command, then `fewshot eval`:

    python benchmarks/matching_omniglot_book.py [--episodes 3000] [--dropout 0.1] [--out runs/matching-book]
        [--results benchmarks/results/matching_omniglot_book.md]

runs (and prints) exactly

    fewshot train --method matching --dataset omniglot --split background --exclude-alphabets heldout \\
        --no-rotations --way 20 --shot 1 --query 5 --dropout 0.1 --lr 0.001 --schedule plateau \\
        --plateau-factor 0.5 --plateau-patience 2 --val-every 200 --val-tasks 100 --episodes 3000 \\
        --seed 0 --threads 1 --quiet --out runs/matching-book
    fewshot eval runs/matching-book --dataset omniglot --split background --alphabets heldout \\
        --way 20 --shot 1 --query 5 --tasks 1000 --seed 0 --threads 1 --json

Matching network (cosine attention, no FCE) on a Conv4 embedding with dropout after every block;
Omniglot background set at 28×28 without the held-out alphabets and without rotated classes,
20-way 1-shot 5-query episodes, Adam 1e-3; every 200 episodes the accuracy on 100 fixed 20-way
1-shot tasks of the validation classes (10% of the training classes, held out) feeds the plateau
schedule (PyTorch's ReduceLROnPlateau, mode max: halved after more than 2 validations without
improvement); the best validation checkpoint is tested on 1,000 20-way 1-shot tasks of the held-out
alphabets (``fewshot.data.HELDOUT_ALPHABETS``). Writes benchmarks/results/matching_omniglot_book.md
with the process CPU time of both commands (1 torch thread) and the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(args: list[str]) -> tuple[str, float]:
    """``fewshot ARGS`` in a child process: its stdout and its CPU seconds."""
    print("fewshot " + shlex.join(args), flush=True)
    c0 = children_cpu()
    out = subprocess.run([sys.executable, "-m", "fewshot", *args], check=True, capture_output=True, text=True).stdout
    return out, children_cpu() - c0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=3000)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--val-every", type=int, default=200)
    ap.add_argument("--test-tasks", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/matching-book")
    ap.add_argument("--results", default=str(HERE / "results" / "matching_omniglot_book.md"))
    args = ap.parse_args()
    data = ["--dataset", "omniglot", "--split", "background"]
    where = [] if os.environ.get("FEWSHOT_DATA") else ["--data-dir", str(HERE.parent.parent / "shared" / "data")]
    train = ["train", "--method", "matching", *data, "--exclude-alphabets", "heldout", "--no-rotations",
             "--way", "20", "--shot", "1", "--query", "5", "--dropout", str(args.dropout), "--lr", "0.001",
             "--schedule", "plateau", "--plateau-factor", "0.5", "--plateau-patience", "2",
             "--val-every", str(args.val_every), "--val-tasks", "100", "--episodes", str(args.episodes),
             "--seed", str(args.seed), "--threads", "1", "--quiet", "--out", args.out]
    test = ["eval", args.out, *data, "--alphabets", "heldout", "--way", "20", "--shot", "1", "--query", "5",
            "--tasks", str(args.test_tasks), "--seed", str(args.seed), "--threads", "1", "--json"]
    load0 = os.getloadavg()[0]
    _, train_cpu = run(train + where)
    out, test_cpu = run(test + where)
    res = json.loads(out)
    records = [json.loads(line) for line in (Path(args.out) / "metrics.jsonl").read_text().splitlines()]
    vals = [r for r in records if "val_accuracy" in r]
    last = json.loads((Path(args.out) / "last.json").read_text())["state"]
    best = json.loads((Path(args.out) / "best.json").read_text())["state"]
    lines = ["# Chapter 2: matching network on Omniglot, 20-way 1-shot, dropout, plateau schedule", "",
             "```", "fewshot " + shlex.join(train), "fewshot " + shlex.join(test), "```", "",
             f"Conv4 embedding with dropout {args.dropout} after every block, cosine attention (no FCE), Adam 1e-3, "
             f"plateau schedule (ReduceLROnPlateau on the validation accuracy: ×0.5 after more than 2 validations "
             f"without improvement) on 100 fixed 20-way 1-shot tasks of held-out validation classes every "
             f"{args.val_every} episodes; {args.episodes} training episodes (20-way 1-shot, 5 queries per class) of "
             "the background set without the held-out alphabets, no rotations, 28×28.", "",
             f"**Test: {100 * res['accuracy']:.1f} ± {100 * res['ci95']:.1f}%** on {res['tasks']} 20-way 1-shot tasks "
             f"(5 queries per class) of the held-out alphabets, best validation checkpoint (step {best['step']}, "
             f"{100 * best['best_val']:.1f}% on validation); final learning rate {last['schedule']['lr']:g}.", "",
             "| episode | validation accuracy | learning rate of the episodes before |", "|---:|---:|---:|"]
    for before, r in zip([0] + [v["step"] for v in vals], vals):  # the rate is constant between validations
        lr = next((f"{x['lr']:g}" for x in records if "lr" in x and before < x["step"] <= r["step"]), "")
        lines.append(f"| {r['step']} | {100 * r['val_accuracy']:.1f}% | {lr} |")
    lines += ["", f"Process CPU: training {train_cpu:.0f} s, test {test_cpu:.0f} s; 1 torch thread; load average "
              f"{load0:.2f} at start, {os.getloadavg()[0]:.2f} at end; torch {version('torch')}. Vinyals et al. (2016) report 93.8% (20-way "
              "1-shot, Omniglot evaluation alphabets, far longer training).", ""]
    text = "\n".join(lines)
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
