"""Choosing text settings on validation data only (never a test split): the numbers behind
docs/text.md's "Choosing encoder and settings on validation data".

BANKING77 has no validation split: a fixed 20% of each intent's training utterances (seed 0) is
scored, and the K-shot support and the unlabelled pool come from the other 80%. CLINC150 uses its
``val`` split; out-of-scope: per K-shot seed the threshold is chosen on the first half of each
intent's val utterances (in-scope accuracy within 2 points of no rejection) and applied to the
other half plus ``oos_val`` (OOS recall, AUROC). Mean over K-shot seeds 0..N-1. Each variant is a
set of :func:`fewshot.text.setfit.build_text_classifier` params; embeddings come from the cache.

    python benchmarks/text_select.py --encoder minilm+mpnet --variants self_training,center
"""

from __future__ import annotations

import os

# scikit-learn's L-BFGS runs in BLAS (NumPy's and SciPy's OpenBLAS): one thread, set before either
# loads, so a fit's CPU seconds are one core's like the encoder's (torch.set_num_threads(1) below)
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fewshot.text import evaluate_kshot, load_encoder, load_text_dataset  # noqa: E402
from fewshot.text.partial import warm_states  # noqa: E402
from fewshot.text.setfit import PRESETS, build_text_classifier  # noqa: E402

# the CLI default before its k-NN vote (Dec 2026), which the variants build on (knn0.3 is the default now)
BASE = {key: value for key, value in PRESETS["self_training"][1].items() if key != "knn_vote"}
#: variant name -> (head, params)
VARIANTS = {
    "self_training": ("logreg", BASE),
    "center": ("logreg", {**BASE, "center": True}),
    "C100": ("logreg", {**BASE, "C": 100.0}),
    "center+C100": ("logreg", {**BASE, "center": True, "C": 100.0}),
    "rounds3": ("logreg", {**BASE, "self_train_rounds": 3}),
    "center+rounds3": ("logreg", {**BASE, "center": True, "self_train_rounds": 3}),
    "share1.0": ("logreg", {**BASE, "self_train": 1.0}),  # pseudo-label up to U / way items per class, not 0.75 of that
    "share1.0+C100": ("logreg", {**BASE, "self_train": 1.0, "C": 100.0}),
    # the head's probabilities mixed with a k-NN vote over support + pseudo-labelled pool (kNN-LM interpolation)
    "knn0.3": ("logreg", {**BASE, "knn_vote": 0.3}),
    "share1.0+knn0.15": ("logreg", {**BASE, "self_train": 1.0, "knn_vote": 0.15}),
    "share1.0+knn0.3": ("logreg", {**BASE, "self_train": 1.0, "knn_vote": 0.3}),
    "share1.0+knn0.3+k5": ("logreg", {**BASE, "self_train": 1.0, "knn_vote": 0.3, "knn_k": 5}),
    "share1.0+knn0.3+k20": ("logreg", {**BASE, "self_train": 1.0, "knn_vote": 0.3, "knn_k": 20}),
    # the vote's inverse temperature (default 20)
    "knn0.3+s10": ("logreg", {**BASE, "knn_vote": 0.3, "knn_scale": 10.0}),
    "share1.0+knn0.3+s10": ("logreg", {**BASE, "self_train": 1.0, "knn_vote": 0.3, "knn_scale": 10.0}),
    "share1.0+knn0.3+s40": ("logreg", {**BASE, "self_train": 1.0, "knn_vote": 0.3, "knn_scale": 40.0}),
    "center+share1.0+knn0.3": ("logreg", {**BASE, "center": True, "self_train": 1.0, "knn_vote": 0.3}),
    # pseudo-labels by label propagation over the support + pool's 10-NN graph (Iscen et al. 2019), or its mean with the head's
    "propagation": ("logreg", {**BASE, "self_train_by": "propagation"}),
    "both": ("logreg", {**BASE, "self_train_by": "both"}),
    "share1.0+propagation": ("logreg", {**BASE, "self_train": 1.0, "self_train_by": "propagation"}),
    "share1.0+both": ("logreg", {**BASE, "self_train": 1.0, "self_train_by": "both"}),
    # SupCon on the top 2 transformer layers of each encoder (the lower ones run once per text), on the
    # support + label names (+ the frozen self-training's pseudo-labelled pool), then self_training's head
    "tune2": ("setfit", {**BASE, "loss": "supcon", "tune_layers": 2, "pseudo_label": True, "steps": 200,
                         "batch_size": 32, "lr": 1e-4}),
    "tune3": ("setfit", {**BASE, "loss": "supcon", "tune_layers": 3, "pseudo_label": True, "steps": 200,
                         "batch_size": 32, "lr": 1e-4}),  # a quarter of mpnet's 12 layers (Lee et al. 2019)
    "tune2_support": ("setfit", {**BASE, "loss": "supcon", "tune_layers": 2, "steps": 200, "batch_size": 32, "lr": 1e-4}),
}
RESULTS = Path(__file__).resolve().parent / "results"


def validation_splits(name: str, data_dir: str | None) -> dict:
    """``train`` (support + pool), ``val`` (scored), and for CLINC150 ``threshold`` / ``oos`` data."""
    splits = load_text_dataset(name, data_dir)
    if name == "clinc150":
        val = splits["val"].in_scope()
        y = val.y.numpy()
        first = np.concatenate([np.flatnonzero(y == c)[: (y == c).sum() // 2] for c in range(val.num_classes)])
        rest = np.setdiff1d(np.arange(len(val)), first)
        return {"train": splits["train"], "val": val.subset(rest), "threshold": val.subset(np.sort(first)),
                "oos": splits["oos_val"]}
    train = splits["train"]
    y, rng = train.y.numpy(), np.random.default_rng(0)
    held = np.concatenate([rng.choice(np.flatnonzero(y == c), int(round(0.2 * (y == c).sum())), replace=False)
                           for c in range(train.num_classes)])
    keep = np.setdiff1d(np.arange(len(train)), held)
    return {"train": train.subset(keep), "val": train.subset(np.sort(held))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", default="minilm")
    ap.add_argument("--datasets", default="banking77,clinc150")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--shots", default="5,10")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=str(RESULTS / "text_select.json"))
    args = ap.parse_args()
    enc = load_encoder(args.encoder)
    out = Path(args.out)
    rows = json.loads(out.read_text()) if out.exists() else []
    for dataset in args.datasets.split(","):
        s = validation_splits(dataset, args.data_dir)
        for layers in sorted({VARIANTS[v][1].get("tune_layers", 0) for v in args.variants.split(",")} - {0}):
            # the frozen layers' token states of every text, once, before any fit is timed
            c0 = time.process_time()
            texts = sorted({t for part in s.values() for t in part.texts})
            warm_states(enc, layers, texts)
            print(f"{dataset}: token states below the top {layers} layers of {len(texts)} texts in "
                  f"{time.process_time() - c0:.0f} CPU s", flush=True)
        for shot in map(int, args.shots.split(",")):
            for variant in args.variants.split(","):
                head, params = VARIANTS[variant]
                load0 = os.getloadavg()[0]
                res = evaluate_kshot(lambda seed: build_text_classifier(enc, head, **params), s["train"], s["val"], shot,
                                     range(args.seeds), val=s.get("threshold"), oos_test=s.get("oos"))
                row = {"dataset": dataset, "shot": shot, "variant": variant, "params": {"head": head, **params},
                       "encoder": args.encoder, "seeds": args.seeds, "accuracy": res.accuracy, "ci95": res.ci95,
                       "fit_cpu_s": res.fit_cpu_seconds, "load": [load0, os.getloadavg()[0]],
                       "oos": {k: {m: o[m] for m in ("oos_recall", "in_scope_accuracy", "auroc")} for k, o in (res.oos or {}).items()},
                       "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
                rows = [r for r in rows if (r["dataset"], r["shot"], r["variant"], r["encoder"]) != (dataset, shot, variant, args.encoder)]
                rows.append(row)
                out.write_text(json.dumps(rows, indent=1))
                oos = "".join(f"  OOS[{k}] {100 * o['oos_recall']:.1f} at {100 * o['in_scope_accuracy']:.1f}"
                              for k, o in row["oos"].items())
                print(f"{dataset} {shot}-shot {args.encoder} {variant}: {100 * res.accuracy:.2f} ± {100 * res.ci95:.2f}"
                      f"  fit {res.fit_cpu_seconds:.1f} CPU s{oos}", flush=True)


if __name__ == "__main__":
    main()
