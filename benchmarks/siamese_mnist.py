"""Three Siamese architectures side by side on MNIST pairs, and a 2-D embedding of the digits.

    python benchmarks/siamese_mnist.py [--steps 1500] [--seeds 0,1,2]

Data: the MNIST test set (IDX files in the shared data): images 0..7999 are the training pool,
8000..9999 the test pool. Every architecture trains on balanced same/different pairs
(``fewshot.tasks.pairs.PairSampler``, 64 pairs per step, Adam 1e-3) of digits 0–6 only, with an MLP
tower 784-128-64, and is then measured on

* verification accuracy on 2,000 balanced test-pool pairs of the seen digits 0–6 and of the
  unseen digits 7–9 (threshold on the pair score chosen on 2,000 training pairs, for every model);
* 3-way 1-shot classification of the unseen digits 7, 8, 9 (300 tasks, 5 queries per class).

Architectures (the tutorial's three, plus Koch et al.'s L1 head for reference):
  A. two separate towers, embeddings concatenated into a dense head, binary cross-entropy;
  B. shared weights, concatenated into a dense head, binary cross-entropy;
  C. shared weights, euclidean-distance output, contrastive loss (margin 1).
Also writes a 2-D embedding plot: a shared MLP 784-128-128-2 trained with the contrastive loss on all
ten digits, test-pool digits scattered (benchmarks/results/siamese_mnist_2d.png).
Writes benchmarks/results/siamese_mnist.md. CPU budget: 1 torch thread.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ARCHS = {
    "A. separate towers + concat + dense (BCE)": {"objective": "bce", "head_type": "concat", "shared": False},
    "B. shared towers + concat + dense (BCE)": {"objective": "bce", "head_type": "concat", "shared": True},
    "C. shared towers + euclidean distance (contrastive)": {"objective": "contrastive", "shared": True},
    "(Koch) shared towers + L1 head (BCE)": {"objective": "bce", "head_type": "l1", "shared": True},
}


def train_pairs(model, sampler, steps: int, pairs: int = 64, lr: float = 1e-3) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for step in range(steps):
        b = sampler.pairs(step, pairs)
        loss = model.pair_loss(b.x1, b.x2, b.same)
        opt.zero_grad()
        loss.backward()
        opt.step()


@torch.no_grad()
def pair_scores(model, batch) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    return model.pair_scores(batch.x1, batch.x2).numpy(), batch.same.numpy()


def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    cand = np.unique(scores)
    accs = [((scores >= t) == (same > 0.5)).mean() for t in cand]
    return float(cand[int(np.argmax(accs))])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps-2d", type=int, default=3000)
    args = ap.parse_args()
    torch.set_num_threads(1)

    from fewshot.nn.backbones import MLP
    from fewshot.data import LabeledDataset, load_mnist
    from fewshot.tasks.episodes import TaskSet
    from fewshot.engine.evaluate import evaluate
    from fewshot.methods import SiameseNet
    from fewshot.tasks.pairs import PairSampler
    from fewshot.engine.plots import plot_embeddings
    from fewshot.utils import mean_ci95

    data_dir = os.environ.get("FEWSHOT_DATA") or str(HERE.parent.parent / "shared" / "data")
    mnist = load_mnist(data_dir)
    pool = {name: LabeledDataset(mnist.x[sl], mnist.y[sl], mnist.class_names, info=dict(mnist.info))
            for name, sl in (("train", slice(0, 8000)), ("test", slice(8000, 10000)))}
    seen, unseen = list(range(7)), [7, 8, 9]
    train_sampler = PairSampler(pool["train"], seed=0, classes=seen)
    calib = PairSampler(pool["train"], seed=1, classes=seen).pairs(0, 2000)
    test_seen = PairSampler(pool["test"], seed=2, classes=seen).pairs(0, 2000)
    test_unseen = PairSampler(pool["test"], seed=3, classes=unseen).pairs(0, 2000)
    unseen_ds = pool["test"].subset_classes(unseen)
    tasks = TaskSet.generate(unseen_ds, way=3, shot=1, query=5, tasks=300, seed=0)
    seeds = [int(s) for s in args.seeds.split(",")]

    t0 = time.perf_counter()
    rows = []
    for name, kw in ARCHS.items():
        res: dict[str, list[float]] = {"seen": [], "unseen": [], "oneshot": []}
        t_arch = time.perf_counter()
        for seed in seeds:
            torch.manual_seed(seed)
            model = SiameseNet(MLP(784, (128, 64)), feature_dim=64, **kw)
            train_pairs(model, train_sampler, args.steps)
            thr = best_threshold(*pair_scores(model, calib))
            for key, batch in (("seen", test_seen), ("unseen", test_unseen)):
                s, same = pair_scores(model, batch)
                res[key].append(float(((s >= thr) == (same > 0.5)).mean()))
            res["oneshot"].append(evaluate(model, tasks.episodes(unseen_ds), "cpu").accuracy)
        n_params = sum(p.numel() for p in model.parameters())
        rows.append((name, n_params, time.perf_counter() - t_arch, {k: mean_ci95(v) for k, v in res.items()}, res))
        print(name, {k: f"{100 * np.mean(v):.1f}" for k, v in res.items()}, flush=True)

    # 2-D embedding of all ten digits (the seed book's exercise)
    torch.manual_seed(0)
    net2d = SiameseNet(MLP(784, (128, 128, 2)), objective="contrastive", margin=1.0)
    train_pairs(net2d, PairSampler(pool["train"], seed=4), args.steps_2d)
    net2d.eval()
    with torch.no_grad():
        z = net2d.embed(pool["test"].items(torch.arange(len(pool["test"]))))
    png = plot_embeddings(z, pool["test"].y.numpy(), HERE / "results" / "siamese_mnist_2d.png",
                          title=f"Siamese (contrastive) 2-D embedding, MNIST test pool, {args.steps_2d} steps")
    z_tr = None
    with torch.no_grad():
        z_tr = net2d.embed(pool["train"].items(torch.arange(len(pool["train"]))))
    from sklearn.neighbors import KNeighborsClassifier

    knn_acc = KNeighborsClassifier(5).fit(z_tr.numpy(), pool["train"].y.numpy()).score(z.numpy(), pool["test"].y.numpy())

    lines = ["# Siamese architectures on MNIST pairs", "",
             f"MLP tower 784-128-64; {args.steps} steps × 64 balanced pairs of digits 0–6 (training pool: MNIST test images "
             f"0–7999), Adam 1e-3; mean ± 95% CI over seeds {seeds}. Verification: 2,000 balanced pairs from images "
             "8000–9999, threshold chosen on 2,000 training pairs. One-shot: 3-way 1-shot on unseen digits 7/8/9, "
             "300 tasks. CPU budget: 1 torch thread.", "",
             "| architecture | parameters | verification, seen digits % | verification, unseen digits % | 3-way 1-shot, unseen digits % | time (s) |",
             "|---|---|---|---|---|---|"]
    for name, n_params, secs, stats, _ in rows:
        cells = [f"{100 * m:.1f} ± {100 * c:.1f}" for m, c in (stats["seen"], stats["unseen"], stats["oneshot"])]
        lines.append(f"| {name} | {n_params:,} | " + " | ".join(cells) + f" | {secs:.0f} |")
    lines += ["", f"2-D embedding ({png.name}): shared MLP 784-128-128-2, contrastive loss (margin 1), {args.steps_2d} "
              f"steps on pairs of all ten digits; 5-NN accuracy in that 2-D space on the test pool: {100 * knn_acc:.1f}%.",
              "", f"Total wall time: {time.perf_counter() - t0:.0f} s."]
    text = "\n".join(lines) + "\n"
    print(text)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "siamese_mnist.md").write_text(text)


if __name__ == "__main__":
    main()
