"""Training throughput (images/s) of fewshot's Trainer against a plain PyTorch loop on the same
Conv4 ProtoNet and the same Omniglot episodes, and evaluation speed (tasks/s), measured side by
side in one process, interleaved in rounds so machine load affects both alike.

    FEWSHOT_DATA=../shared/data python benchmarks/throughput.py [--steps 60] [--rounds 3] [--threads 2]

Writes benchmarks/results/throughput.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from fewshot.nn.backbones import Conv4
from fewshot.data import load_omniglot
from fewshot.tasks.episodes import EpisodeSampler, TaskSet
from fewshot.engine.evaluate import evaluate
from fewshot.methods import ProtoNet
from fewshot.engine.build import build_run
from fewshot.engine.config import TrainConfig

HERE = Path(__file__).resolve().parent


def plain_loop(data, steps: int, seed: int, channels_last: bool) -> float:
    """The reference: a hand-written episodic ProtoNet loop with the same sampler and Adam."""
    torch.manual_seed(seed)
    model = Conv4()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sampler = EpisodeSampler(data, 20, 1, 5, seed=seed)
    n, t0 = 0, time.perf_counter()
    for i in range(steps):
        ep = sampler.episode(i)
        x = torch.cat([ep.support_x, ep.query_x])
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        z = model(x)
        protos = z[:20]  # 1-shot: the support embeddings are the prototypes
        logits = -torch.cdist(z[20:], protos).pow(2)
        loss = F.cross_entropy(logits, ep.query_y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        n += x.shape[0]
    return n / (time.perf_counter() - t0)


def library_loop(data, steps: int, seed: int, channels_last: bool) -> float:
    cfg = TrainConfig(steps=steps, way=20, shot=1, query=5, seed=seed, device="cpu", val_tasks=0, progress=False,
                      log_every=steps, checkpoint_every=10**9, channels_last=channels_last)
    with tempfile.TemporaryDirectory() as d:
        records = build_run("protonet", data, cfg, d, backbone=("conv4", {})).fit()
    return records[-1]["items_per_s"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-tasks", type=int, default=200)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = load_omniglot("background", exclude_alphabets=["heldout"], rotations=True)
    test = load_omniglot("background", alphabets=["heldout"])
    results: dict[str, list[float]] = {}
    for r in range(args.rounds):
        for name, fn, cl in [("plain PyTorch loop, channels_last", plain_loop, True),
                             ("fewshot Trainer, channels_last (default)", library_loop, True),
                             ("plain PyTorch loop, NCHW", plain_loop, False),
                             ("fewshot Trainer, NCHW", library_loop, False)]:
            results.setdefault(name, []).append(fn(data, args.steps, r, cl))
            print(f"round {r}: {name}: {results[name][-1]:.0f} images/s", flush=True)
    method = ProtoNet(Conv4())
    eval_rows = []
    for way, shot in [(5, 1), (20, 1), (20, 5)]:
        ts = TaskSet.generate(test, way, shot, 5, args.eval_tasks, seed=0)
        for cl in (True, False):
            t0 = time.perf_counter()
            evaluate(method, ts.episodes(test), channels_last=cl)
            eval_rows.append((f"{way}-way {shot}-shot", "channels_last" if cl else "NCHW", args.eval_tasks / (time.perf_counter() - t0)))
    ref = statistics.median(results["plain PyTorch loop, channels_last"])
    lines = [f"# Training throughput, Conv4 ProtoNet, 20-way 1-shot 5-query Omniglot 28×28 episodes",
             f"", f"{args.rounds} interleaved rounds × {args.steps} steps each, torch threads = {args.threads}, CPU. "
             f"Median images/s (support + query images through forward + backward + Adam).", "",
             "| loop | median images/s | min | max | vs plain channels_last |", "|---|---|---|---|---|"]
    for name, v in results.items():
        lines.append(f"| {name} | {statistics.median(v):.0f} | {min(v):.0f} | {max(v):.0f} | {statistics.median(v) / ref:.2f}× |")
    lines += ["", "## Evaluation speed (fit + predict per task, inference_mode)", "", "| task | layout | tasks/s |", "|---|---|---|"]
    lines += [f"| {t} | {lay} | {v:.1f} |" for t, lay, v in eval_rows]
    text = "\n".join(lines) + "\n"
    print(text)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "throughput.md").write_text(text)


if __name__ == "__main__":
    main()
