"""MAML's sine toy in the book's variant beside Finn et al.'s (one command).

    python benchmarks/sinusoid_book.py [--steps 1500] [--tasks 400]

Book variant: phase in {0, π}, x ~ U[-2π, 2π], A ~ U[0.1, 5], K = 4 support points, L1 loss,
5 inner SGD steps of 0.03. Finn et al. (2017, §5.1): phase ~ U[0, π], x ~ U[-5, 5], K = 10, MSE,
1 inner step of 0.01. Both: MLP 1-40-40-1 ReLU, second-order MAML, meta-batch 25, Adam 1e-3, the
same number of meta-steps; evaluated on fixed held-out tasks of their own family (100 random query
points) before adaptation and after their inner steps (and 10), in MSE and in L1.
Writes benchmarks/results/sinusoid_book.md and sinusoid_book_{book,finn}.png. 1 CPU thread.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from fewshot.data.sinusoid import SinusoidTasks
from fewshot.regression.sinusoid import RegressionTrainConfig, plot_sinusoid_adaptation, predictions_after, train_maml
from fewshot.utils import mean_ci95

HERE = Path(__file__).resolve().parent


from fewshot.utils import process_cpu_seconds as cpu  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1500, help="meta-training Adam steps per variant (Finn et al.: 70,000)")
    ap.add_argument("--tasks", type=int, default=400)
    args = ap.parse_args()
    torch.set_num_threads(1)
    load0, c0 = os.getloadavg()[0], cpu()
    variants = {
        "book": (SinusoidTasks.book(), RegressionTrainConfig(steps=args.steps, shot=4, query=4, inner_steps=5, inner_lr=0.03,
                                                              loss="l1", seed=0)),
        "finn": (SinusoidTasks(), RegressionTrainConfig(steps=args.steps, shot=10, query=10, inner_steps=1, inner_lr=0.01,
                                                         loss="mse", seed=0)),
    }
    rows = []
    for name, (family, cfg) in variants.items():
        c = cpu()
        model, losses = train_maml(cfg, family)
        train_cpu = cpu() - c
        test = family.sample(args.tasks, cfg.shot, 100, seed=1000)
        steps = sorted({0, cfg.inner_steps, 10})
        preds = predictions_after(model, test, steps, cfg.inner_lr, cfg.loss)
        for s in steps:
            err = preds[s] - test.query_y
            mse = mean_ci95((err ** 2).mean(dim=(1, 2)).numpy())
            l1 = mean_ci95(err.abs().mean(dim=(1, 2)).numpy())
            rows.append([name, s, mse, l1])
        plot_sinusoid_adaptation({f"MAML, {name} variant": model}, test, HERE / "results" / f"sinusoid_book_{name}.png",
                                 cfg.inner_lr, steps=steps, x_range=family.x_range, loss=cfg.loss)
        rows[-1].append(train_cpu)
        print(name, rows[-len(steps):], flush=True)

    def cell(v):
        return f"{v[0]:.3f} ± {v[1]:.3f}"

    lines = ["# MAML's sine toy: the book's variant beside Finn et al.'s", "",
             "Book: phase ∈ {0, π}, x ~ U[−2π, 2π], A ~ U[0.1, 5], K = 4, L1 loss, 5 inner steps of 0.03. "
             "Finn et al.: phase ~ U[0, π], x ~ U[−5, 5], K = 10, MSE, 1 inner step of 0.01. Both second-order MAML, "
             f"MLP 1-40-40-1 ReLU, meta-batch 25, Adam 1e-3, {args.steps} meta-steps (Finn et al.: 70,000); "
             f"{args.tasks} held-out tasks of the variant's own family, 100 random query points, mean ± 95% CI over tasks. "
             "Adaptation uses the variant's own loss and step size.", "",
             "| variant | inner steps at test | query MSE | query L1 |", "|---|---|---|---|"]
    lines += [f"| {r[0]} | {r[1]} | {cell(r[2])} | {cell(r[3])} |" for r in rows]
    lines += ["", f"Process CPU {cpu() - c0:.0f}s (1 torch thread), load average {load0:.2f} at start, "
              f"{os.getloadavg()[0]:.2f} at end; torch {torch.__version__}.", "",
              "![book](sinusoid_book_book.png)", "![finn](sinusoid_book_finn.png)", ""]
    text = "\n".join(lines)
    (HERE / "results" / "sinusoid_book.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
