"""Probe (not adopted in the library): second-order MAML's meta-batch as ONE grouped convolution.

The T tasks' fast weights are stacked (``[T, *shape]``) and each Conv4 layer runs once for all tasks:
inputs laid out ``[N, T*C, H, W]``, weights ``[T*out, C, k, k]``, ``groups=T``; per-task BatchNorm
with batch statistics is plain ``F.batch_norm`` over the ``T*C`` channels (each task's channel is
normalised over that task's own batch); the head is an ``einsum``. The inner gradients come from one
``autograd.grad`` of the summed task losses (the tasks are independent, so ``d sum / d w_t = d loss_t
/ d w_t``), with ``create_graph=True``. Compared per task against the library's per-task loop and its
``torch.func.vmap`` path (``vectorize_tasks``), each setting in a fresh process (its own peak memory),
and checked to give the loop's meta-gradients.

    python benchmarks/maml_grouped.py [--tasks 4,8,16] [--threads 1,2] [--steps 3] [--device cpu]

Writes benchmarks/results/maml_grouped.md (hold the shared benchmark lock: `flock /work/bench.lock ...`).
On one CPU core it measured no faster than the loop (docs/optimization.md); kept to re-measure where
the per-task loop is launch-bound (a GPU) or at more threads.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
MODES = ("loop", "grouped", "vmap")


def grouped_logits(method, params: dict[str, torch.Tensor], x: torch.Tensor, tasks: int) -> torch.Tensor:
    """Logits ``[N, T, way]`` of a Conv4 + linear head method for ``x [N, T*C, H, W]`` with fast weights
    ``params[name] [T, *shape]``."""
    h = x
    for i, block in enumerate(method.backbone.encoder):
        conv, bn = block[0], block[1]
        w, b = params[f"backbone.encoder.{i}.0.weight"], params[f"backbone.encoder.{i}.0.bias"]
        h = F.conv2d(h, w.reshape(-1, *w.shape[2:]), b.reshape(-1), padding=conv.padding, groups=tasks)
        h = F.batch_norm(h, None, None, params[f"backbone.encoder.{i}.1.weight"].reshape(-1),
                         params[f"backbone.encoder.{i}.1.bias"].reshape(-1), True, 0.0, bn.eps)
        h = F.max_pool2d(F.relu(h), 2)
    z = h.reshape(h.shape[0], tasks, -1)
    return torch.einsum("ntd,tkd->ntk", z, params["head.weight"]) + params["head.bias"]


def grouped_step(method, batch) -> torch.Tensor:
    """The meta-gradient of the mean query loss (into ``.grad``), as ``method.training_step(batch)``."""
    tasks, way = len(batch), batch[0].way

    def layout(xs: list[torch.Tensor]) -> torch.Tensor:  # T x [N, C, H, W] -> [N, T*C, H, W]
        x = torch.stack(xs)
        return x.transpose(0, 1).reshape(x.shape[1], -1, *x.shape[3:])

    def loss_sum(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # sum over tasks of each task's mean
        n = logits.shape[0]
        return F.cross_entropy(logits[..., :way].transpose(0, 1).reshape(-1, way), y.reshape(-1), reduction="sum") / n

    sx, qx = layout([e.support_x for e in batch]), layout([e.query_x for e in batch])
    sy, qy = torch.stack([e.support_y for e in batch]), torch.stack([e.query_y for e in batch])
    params = {n: p.unsqueeze(0).expand(tasks, *p.shape) for n, p in method.adapted_params().items()}
    for _ in range(method.inner_steps):
        grads = torch.autograd.grad(loss_sum(grouped_logits(method, params, sx, tasks), sy), list(params.values()),
                                    create_graph=not method.first_order)
        params = {n: p - method.inner_lr * g for (n, p), g in zip(params.items(), grads)}
    loss = loss_sum(grouped_logits(method, params, qx, tasks), qy) / tasks
    loss.backward()
    return loss.detach()


def setup(device: str):
    from fewshot.methods import build_method
    from fewshot.nn.backbones import Conv4
    from fewshot.tasks.episodes import Episode

    torch.manual_seed(0)
    method = build_method("maml", Conv4(), way=5)  # second order, 1 inner step of 0.4 (the paper's Omniglot set-up)
    method._require_head(torch.rand(2, 1, 28, 28))
    method.to(device)

    def episode() -> Episode:
        y = torch.arange(5, device=device)
        return Episode(torch.rand(5, 1, 28, 28, device=device), y, torch.rand(25, 1, 28, 28, device=device),
                       y.repeat_interleave(5), y, y, y)

    return method, episode


def child(mode: str, tasks: int, steps: int, device: str) -> dict:
    method, episode = setup(device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    if mode == "check":  # same batch, same initial weights: meta-gradients of the loop and the grouped step
        batch = [episode() for _ in range(tasks)]
        method.zero_grad()
        method.training_step(batch)
        ref = {n: p.grad.clone() for n, p in method.named_parameters() if p.grad is not None}
        method.zero_grad()
        grouped_step(method, batch)
        diff = max(float((p.grad - ref[n]).abs().max()) for n, p in method.named_parameters() if n in ref)
        return {"max_abs_diff": diff, "max_abs_grad": max(float(g.abs().max()) for g in ref.values())}
    method.vectorize_tasks = mode == "vmap"
    opt = torch.optim.Adam(method.parameters(), 1e-3)
    wall, cpu = [], []
    for _ in range(steps + 1):  # the first is a warm-up
        batch = [episode() for _ in range(tasks)]
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        opt.zero_grad()
        grouped_step(method, batch) if mode == "grouped" else method.training_step(batch)
        opt.step()
        sync()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    median = lambda v: sorted(v[1:])[len(v[1:]) // 2]  # noqa: E731
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"wall_s": median(wall), "cpu_s": median(cpu), "peak_mb": peak}


def run_child(args: list[str], threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(HERE.parent / "src")}
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", default="4,8,16")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(HERE / "results" / "maml_grouped.md"))
    ap.add_argument("--child", nargs=4, metavar=("MODE", "TASKS", "STEPS", "DEVICE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        mode, tasks, steps, device = args.child
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        print(json.dumps(child(mode, int(tasks), int(steps), device)))
        return
    start_load, t0 = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg()), time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    rows = []
    for threads in map(int, args.threads.split(",")):
        for tasks in map(int, args.tasks.split(",")):
            check = run_child(["check", str(tasks), "0", args.device], threads)
            res = {m: run_child([m, str(tasks), str(args.steps), args.device], threads) for m in MODES}
            lo = res["loop"]
            row = (f"| {threads} | {tasks} | " + " | ".join(f"{1000 * res[m]['wall_s'] / tasks:.1f} ({1000 * res[m]['cpu_s'] / tasks:.1f})"
                                                           for m in MODES)
                   + f" | {lo['wall_s'] / res['grouped']['wall_s']:.2f}× ({lo['cpu_s'] / res['grouped']['cpu_s']:.2f}×)"
                   + f" | {lo['wall_s'] / res['vmap']['wall_s']:.2f}× | "
                   + " | ".join(f"{res[m]['peak_mb']:.0f}" for m in MODES)
                   + f" | {check['max_abs_diff']:.1e} (of {check['max_abs_grad']:.1f}) |")
            rows.append(row)
            print(row, flush=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    lines = ["# Second-order MAML meta-batches: per-task loop, one grouped convolution, one vmap", "",
             f"One run of `python benchmarks/maml_grouped.py {' '.join(sys.argv[1:])}` on {args.device} "
             f"({os.cpu_count()} cores, shared with other jobs). Load average (1/5/15 min) at start {start_load}, at end "
             "{:.2f} {:.2f} {:.2f}; ".format(*os.getloadavg()) + f"{time.perf_counter() - t0:.0f} s wall, {cpu:.0f} s CPU "
             "(the child processes).", "",
             "Conv4 (64 filters) + linear head, 5-way 1-shot 5-query 28×28 episodes of random pixels (the time depends "
             f"only on the shapes), 1 inner step of 0.4; median of {args.steps} optimiser steps (Adam) after one warm-up; "
             "each setting in a fresh process (peak: ru_maxrss on CPU, max allocated on CUDA). ms per task: wall "
             "(process CPU). Grouped: every layer once for all tasks (`groups=T` convolution over stacked fast weights, "
             "BatchNorm over the T×C channels, one autograd call over the summed task losses). Gradient check: largest "
             "absolute difference between the grouped and the loop meta-gradients of one meta-batch.", "",
             "| threads | tasks/step | loop ms/task | grouped ms/task | vmap ms/task | grouped speed-up wall (CPU) | "
             "vmap speed-up | loop peak MB | grouped peak MB | vmap peak MB | grouped − loop gradient |",
             "|---|---|---|---|---|---|---|---|---|---|---|", *rows]
    Path(args.out).parent.mkdir(exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
