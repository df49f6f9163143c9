"""Chapter 2: the Siamese MNIST CNN in the text's configuration, its 2-D feature plot and
verification with a calibrated threshold.

    python benchmarks/siamese_mnist_cnn.py [--steps 1500]

Network: the registered backbone ``siamese_mnist`` (conv 20@5×5 – pool – conv 50@5×5 – pool – fc 500 –
ReLU – fc 10 – fc 2), shared twins, contrastive loss (margin 1), SGD lr 0.01 momentum 0.9, 64 balanced
pairs per step of all ten digits (training pool: MNIST test images 0–7999; the text trains on the
60,000 training images, which are not in the shared data). Measured on the pool 8000–9999:
verification accuracy on 2,000 balanced pairs with the threshold calibrated on 2,000 training pairs
(``fewshot.engine.verify``, as ``fewshot verify`` does), and 5-NN accuracy in the 2-D feature plane.
Writes benchmarks/results/siamese_mnist_cnn.md and siamese_mnist_cnn_2d.png. 1 torch thread.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


from fewshot.utils import process_cpu_seconds as cpu  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from sklearn.neighbors import KNeighborsClassifier

    from fewshot.data import LabeledDataset, load_mnist
    from fewshot.engine.plots import plot_embeddings
    from fewshot.engine.verify import calibrate_threshold, pair_score
    from fewshot.methods import SiameseNet
    from fewshot.nn.backbones import build_backbone
    from fewshot.tasks.pairs import PairSampler

    load0, c0 = os.getloadavg()[0], cpu()
    data_dir = os.environ.get("FEWSHOT_DATA") or str(HERE.parent.parent / "shared" / "data")
    mnist = load_mnist(data_dir)
    pool = {name: LabeledDataset(mnist.x[sl], mnist.y[sl], mnist.class_names, info=dict(mnist.info))
            for name, sl in (("train", slice(0, 8000)), ("test", slice(8000, 10000)))}
    torch.manual_seed(args.seed)
    model = SiameseNet(build_backbone("siamese_mnist"), objective="contrastive", margin=1.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    sampler = PairSampler(pool["train"], seed=args.seed)
    model.train()
    curve = []
    for step in range(args.steps):
        b = sampler.pairs(step, 64)
        loss = model.pair_loss(b.x1, b.x2, b.same)
        opt.zero_grad()
        loss.backward()
        opt.step()
        curve.append(float(loss))
        if (step + 1) % 250 == 0:
            print(f"step {step + 1}: loss {sum(curve[-250:]) / 250:.4f}", flush=True)
    train_cpu = cpu() - c0
    model.eval()
    with torch.no_grad():
        calib = PairSampler(pool["train"], seed=args.seed + 1).pairs(0, 2000)
        thr, calib_acc = calibrate_threshold(pair_score(model, calib.x1, calib.x2), calib.same)
        test = PairSampler(pool["test"], seed=args.seed + 2).pairs(0, 2000)
        s = pair_score(model, test.x1, test.x2)
        same = test.same > 0.5
        acc = float(((s >= thr) == same).float().mean())
        z_te = model.embed(pool["test"].items(torch.arange(len(pool["test"]))))
        z_tr = model.embed(pool["train"].items(torch.arange(len(pool["train"]))))
    knn = KNeighborsClassifier(5).fit(z_tr.numpy(), pool["train"].y.numpy()).score(z_te.numpy(), pool["test"].y.numpy())
    png = plot_embeddings(z_te, pool["test"].y.numpy(), HERE / "results" / "siamese_mnist_cnn_2d.png",
                          title=f"Siamese MNIST CNN, 2-D features of the test pool, {args.steps} SGD steps")
    lines = ["# Chapter 2: the Siamese MNIST CNN (conv 20@5×5, conv 50@5×5, fc 500, 10, 2)", "",
             f"`python benchmarks/siamese_mnist_cnn.py --steps {args.steps}`: shared twins of the `siamese_mnist` backbone, "
             f"contrastive loss (margin 1), SGD lr 0.01 momentum 0.9, {args.steps} steps × 64 balanced pairs of all ten digits "
             "(MNIST test images 0–7999; the text uses the 60,000 training images and 50,000 iterations). Seed "
             f"{args.seed}.", "",
             "| measure | value |", "|---|---|",
             f"| final training loss (mean of the last 250 steps) | {sum(curve[-250:]) / min(250, len(curve)):.4f} |",
             f"| threshold on −distance, calibrated on 2,000 training pairs | {thr:.4f} (balanced accuracy there {100 * calib_acc:.1f}%) |",
             f"| verification accuracy, 2,000 balanced pairs of images 8000–9999 | {100 * acc:.1f}% |",
             f"| 5-NN digit accuracy in the 2-D feature plane (test pool) | {100 * knn:.1f}% |", "",
             f"Process CPU {cpu() - c0:.0f}s (training {train_cpu:.0f}s), 1 torch thread, load average {load0:.2f} at start, "
             f"{os.getloadavg()[0]:.2f} at end; torch {torch.__version__}.", "", f"![2-D features]({png.name})", ""]
    text = "\n".join(lines)
    (HERE / "results" / "siamese_mnist_cnn.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
