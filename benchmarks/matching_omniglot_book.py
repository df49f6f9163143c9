"""Chapter 2's matching-network exercise on Omniglot: 20-way 1-shot, dropout in the embedding,
learning rate reduced on a validation plateau.

    python benchmarks/matching_omniglot_book.py [--cpu-seconds 600] [--dropout 0.1]

Matching network (``fewshot.methods.MatchingNet``, cosine attention, no FCE) on a Conv4 embedding with
dropout after every block; Omniglot background set at 28×28 without the held-out alphabets for
training (20-way 1-shot episodes, 5 queries per class, Adam 1e-3); every ``--val-every`` episodes the
accuracy on 100 fixed 20-way 1-shot validation tasks of the training alphabets feeds PyTorch's
``ReduceLROnPlateau`` (factor 0.5, patience 2); the best validation state is tested on 1,000
20-way 1-shot tasks of the held-out alphabets (``fewshot.data.HELDOUT_ALPHABETS``).
Writes benchmarks/results/matching_omniglot_book.md. 1 torch thread.
"""

from __future__ import annotations

import argparse
import copy
import os
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


from fewshot.utils import process_cpu_seconds as cpu  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cpu-seconds", type=float, default=600)
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--val-every", type=int, default=200)
    ap.add_argument("--test-tasks", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from fewshot.data import load_omniglot
    from fewshot.engine.evaluate import evaluate
    from fewshot.methods import MatchingNet
    from fewshot.nn.backbones import Conv4
    from fewshot.tasks.episodes import EpisodeSampler, TaskSet

    load0, c0 = os.getloadavg()[0], cpu()
    data_dir = os.environ.get("FEWSHOT_DATA") or str(HERE.parent.parent / "shared" / "data")
    train = load_omniglot("background", data_dir, image_size=28, exclude_alphabets=["heldout"])
    test = load_omniglot("background", data_dir, image_size=28, alphabets=["heldout"])
    torch.manual_seed(args.seed)
    model = MatchingNet(Conv4(1, dropout=args.dropout))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=2)
    sampler = EpisodeSampler(train, 20, 1, 5, seed=args.seed)
    val_tasks = TaskSet.generate(train, 20, 1, 5, 100, seed=10_000 + args.seed)
    test_tasks = TaskSet.generate(test, 20, 1, 1, args.test_tasks, seed=20_000 + args.seed)
    best, best_state, log, ep, t0 = -1.0, None, [], 0, cpu()
    while cpu() - t0 < args.cpu_seconds:
        model.train()
        out = model.loss(sampler.episode(ep))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        ep += 1
        if ep % args.val_every == 0:
            acc = evaluate(model, val_tasks.episodes(train), "cpu").accuracy
            plateau.step(acc)
            log.append((ep, cpu() - t0, acc, opt.param_groups[0]["lr"]))
            print(log[-1], flush=True)
            if acc > best:
                best, best_state = acc, copy.deepcopy(model.state_dict())
    if best_state is not None:
        model.load_state_dict(best_state)
    res = evaluate(model, test_tasks.episodes(test), "cpu")
    lines = ["# Chapter 2: matching network on Omniglot, 20-way 1-shot, dropout, plateau schedule", "",
             f"`python benchmarks/matching_omniglot_book.py --cpu-seconds {args.cpu_seconds:.0f} --dropout {args.dropout}`: "
             f"Conv4 embedding with dropout {args.dropout} after every block, cosine attention (no FCE), Adam 1e-3, "
             f"ReduceLROnPlateau (factor 0.5, patience 2) on 100 fixed validation tasks every {args.val_every} episodes; "
             f"{ep} training episodes (20-way 1-shot, 5 queries per class) of the background set without the held-out "
             f"alphabets, 28×28.", "",
             f"**Test: {100 * res.accuracy:.1f} ± {100 * res.ci95:.1f}%** on {args.test_tasks} 20-way 1-shot tasks of the "
             f"held-out alphabets (best validation state, {100 * best:.1f}% on validation).", "",
             "| episode | CPU s | validation accuracy | learning rate |", "|---:|---:|---:|---:|"]
    lines += [f"| {e} | {c:.0f} | {100 * a:.1f}% | {lr:g} |" for e, c, a, lr in log]
    lines += ["", f"Process CPU {cpu() - c0:.0f}s, 1 torch thread, load average {load0:.2f} at start, "
              f"{os.getloadavg()[0]:.2f} at end; torch {torch.__version__}. Vinyals et al. (2016) report 93.8% "
              "(20-way 1-shot, Omniglot evaluation alphabets, far longer training).", ""]
    text = "\n".join(lines)
    (HERE / "results" / "matching_omniglot_book.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
