"""Open-set rejection for images: how well does a query's score separate unseen classes from the
support classes? Top softmax probability (what `predict --reject-by probability` thresholds) vs the
distance to the nearest prototype calibrated on the support set (`predict --reject-by distance`,
:class:`fewshot.methods.openset.PrototypeRejector`).

    flock /work/bench.lock python benchmarks/openset_images.py [--episodes 600] [--tasks 300]

A ProtoNet (Conv4, 28x28) is trained on Omniglot background minus the project's held-out alphabets
(``--episodes`` 20-way 1-shot episodes, otherwise defaults), then scored on the held-out alphabets:
each task has ``way`` known classes (support: ``shot`` each; queries: 5 each) and as many unseen
classes (5 queries each), plus one blank page and one noise image. Reported per setting: AUROC of
known-vs-unknown (mean over tasks ± 95% CI), and at distance thresholds: share of known queries
accepted, unknown queries / blank pages / noise rejected. Writes benchmarks/results/openset_images.md.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from fewshot.data import load_omniglot, with_rotations
from fewshot.data.omniglot import HELDOUT_ALPHABETS
from fewshot.engine.build import build_run
from fewshot.engine.config import TrainConfig
from fewshot.methods.openset import PrototypeRejector
from fewshot.utils import mean_ci95

HERE = Path(__file__).resolve().parent
THRESHOLDS = (1.5, 2.0, 2.5, 3.0)


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=600)
    ap.add_argument("--tasks", type=int, default=300)
    ap.add_argument("--data-dir", default=os.environ.get("FEWSHOT_DATA", str(HERE.parents[1] / "shared" / "data")))
    ap.add_argument("--out", default="runs/bench-openset", help="run folder: trained here unless it holds a checkpoint")
    args = ap.parse_args()
    torch.set_num_threads(1)
    load0, t0, c0 = os.getloadavg()[0], time.time(), cpu_s()
    data = load_omniglot("background", data_dir=args.data_dir)
    train = with_rotations(data.select_groups(HELDOUT_ALPHABETS, exclude=True))
    test = data.select_groups(HELDOUT_ALPHABETS)
    cfg = TrainConfig(steps=args.episodes, way=20, shot=1, query=5, val_tasks=0, device="cpu", progress=False,
                      checkpoint_every=args.episodes)
    out = Path(args.out)
    if (out / "best.json").exists() or (out / "last.json").exists():
        from fewshot.engine.checkpoint import load_checkpoint

        method, info = load_checkpoint(out, "best")
        trained = f"{info['state']['step']} steps on {info['data'].get('split')} (the run in {out})"
    else:
        trainer = build_run("protonet", train, cfg, out)
        trainer.fit()
        method = trainer.method.eval()
        trained = f"{args.episodes} episodes (20-way 1-shot, Omniglot background minus the held-out alphabets, rotations)"
    method.to(memory_format=torch.contiguous_format)
    train_cpu = cpu_s() - c0
    rng = np.random.default_rng(0)
    by_class = test.indices_by_class()
    blank = torch.zeros(1, 1, 28, 28)  # ink = 1 convention: an empty page
    noise = torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    rows = []
    for way, shot in [(1, 5), (5, 1), (5, 5), (20, 1)]:
        auc = {"probability": [], "distance": []}
        accept = {t: [] for t in THRESHOLDS}
        reject_unknown = {t: [] for t in THRESHOLDS}
        reject_blank = {t: [] for t in THRESHOLDS}
        reject_noise = {t: [] for t in THRESHOLDS}
        for _ in range(args.tasks):
            classes = rng.choice(test.num_classes, 2 * way, replace=False)
            sup, sy, known, unknown = [], [], [], []
            for j, c in enumerate(classes):
                idx = rng.permutation(by_class[c])
                if j < way:
                    sup += idx[:shot].tolist()
                    sy += [j] * shot
                    known += idx[shot:shot + 5].tolist()
                else:
                    unknown += idx[:5].tolist()
            with torch.inference_mode():
                sx = test.items(torch.tensor(sup))
                q = test.items(torch.tensor(known + unknown))
                y = torch.tensor(sy)
                proba = method.fit(sx, y).predict_proba(torch.cat([q, blank, noise]))
                rej = PrototypeRejector().fit(method.embed(sx), y)
                dist = rej.score(method.embed(torch.cat([q, blank, noise])))
            is_unknown = np.r_[np.zeros(len(known)), np.ones(len(unknown))]
            auc["probability"].append(roc_auc_score(is_unknown, 1 - proba[:-2].max(-1).values.numpy()))
            auc["distance"].append(roc_auc_score(is_unknown, dist[:-2].numpy()))
            d = dist.numpy()
            for t in THRESHOLDS:
                accept[t].append(float((d[:len(known)] <= t).mean()))
                reject_unknown[t].append(float((d[len(known):-2] > t).mean()))
                reject_blank[t].append(float(d[-2] > t))
                reject_noise[t].append(float(d[-1] > t))
        rows.append({"way": way, "shot": shot, **{f"auroc_{k}": mean_ci95(v) for k, v in auc.items()},
                     "at": {t: (np.mean(accept[t]), np.mean(reject_unknown[t]), np.mean(reject_blank[t]),
                                np.mean(reject_noise[t])) for t in THRESHOLDS}})
        print(rows[-1], flush=True)
    total_cpu, load1 = cpu_s() - c0, os.getloadavg()[0]
    lines = ["# Open-set rejection for images: known vs unseen classes", "",
             f"ProtoNet (Conv4, 28x28) trained {trained}, scored on the 6 held-out alphabets of background (in "
             "neither training set): each task has `way` known classes "
             f"and `way` unseen ones, 5 queries each, plus a blank page and a noise image; {args.tasks} tasks per setting.",
             f"`python benchmarks/openset_images.py --out {args.out} --tasks {args.tasks}`.", "",
             "## AUROC known vs unknown (mean over tasks ± 95% CI; 0.5 = chance)", "",
             "| setting | top probability | distance to prototype (calibrated on the support) |", "|---|---|---|"]
    for r in rows:
        (pa, pc), (da, dc) = r["auroc_probability"], r["auroc_distance"]
        lines.append(f"| {r['way']}-way {r['shot']}-shot | {pa:.3f} ± {pc:.3f} | {da:.3f} ± {dc:.3f} |")
    lines += ["", "(1-way: the probability is always 1.0, so it cannot rank anything: AUROC 0.5.)", "",
              "## Distance thresholds (`predict --threshold T`): share of known queries accepted / unseen-class "
              "queries, blank pages, noise rejected", "",
              "| setting | " + " | ".join(f"T = {t}" for t in THRESHOLDS) + " |", "|---|" + "---|" * len(THRESHOLDS)]
    for r in rows:
        lines.append(f"| {r['way']}-way {r['shot']}-shot | " + " | ".join(
            "{:.2f} / {:.2f} / {:.2f} / {:.2f}".format(*r["at"][t]) for t in THRESHOLDS) + " |")
    lines += ["", f"Process CPU time {total_cpu:.0f} s (training {train_cpu:.0f} s), torch threads 1, wall "
              f"{time.time() - t0:.0f} s; load average {load0:.2f} at start, {load1:.2f} at end."]
    (HERE / "results" / "openset_images.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
