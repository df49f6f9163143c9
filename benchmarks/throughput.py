"""Speed, measured side by side in one run: start-up, training (fewshot's Trainer against a plain
PyTorch loop, on 1 and 2 threads, interleaved rounds), evaluation (per-task path against cached
embeddings), MAML meta-batches (per-task loop against one vmap), and torch.distributed training
(1 against 2 processes, with a projection to more workers).

    FEWSHOT_DATA=../shared/data python benchmarks/throughput.py [--steps 30] [--rounds 2] [--sections ...]

Writes benchmarks/results/throughput.md (hold the shared benchmark lock: `flock /work/bench.lock ...`).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
SRC = str(HERE.parent / "src")
SECTIONS = ("startup", "train", "eval", "maml", "dist")


def cpu_seconds() -> float:
    """CPU time of this process and its finished children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def load() -> str:
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def run_python(args: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """Wall and CPU seconds of a fresh Python process, and its stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": SRC, **(env or {})})
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), out.stdout


# ----------------------------------------------------------------------------- start-up
def startup(rounds: int) -> list[str]:
    cases = [("`fewshot --help`", ["-m", "fewshot", "--help"]), ("`fewshot methods`", ["-m", "fewshot", "methods"]),
             ("`fewshot train --help`", ["-m", "fewshot", "train", "--help"]),
             ("`python -c 'import torch'` (the floor of any CLI that imports torch)", ["-c", "import torch"])]
    res: dict[str, list[tuple[float, float]]] = {}
    for _ in range(rounds + 1):
        for name, args in cases:
            res.setdefault(name, []).append(run_python(args)[:2])
    lines = ["## Start-up (fresh process each time)", "", f"Median of {rounds + 1} interleaved runs.", "",
             "| command | wall s | CPU s |", "|---|---|---|"]
    for name, v in res.items():
        lines.append(f"| {name} | {statistics.median(w for w, _ in v):.3f} | {statistics.median(c for _, c in v):.3f} |")
    return lines


# ----------------------------------------------------------------------------- training
def plain_loop(data, steps: int, seed: int) -> float:
    """The reference: a hand-written episodic ProtoNet loop (same sampler, Conv4 channels_last, Adam)."""
    from fewshot.nn.backbones import Conv4
    from fewshot.tasks.episodes import EpisodeSampler

    torch.manual_seed(seed)
    model = Conv4().to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sampler = EpisodeSampler(data, 20, 1, 5, seed=seed)
    n, t0 = 0, time.perf_counter()
    for i in range(steps):
        ep = sampler.episode(i)
        x = torch.cat([ep.support_x, ep.query_x]).contiguous(memory_format=torch.channels_last)
        z = model(x)
        logits = -torch.cdist(z[20:], z[:20]).pow(2)  # 1-shot: the support embeddings are the prototypes
        loss = F.cross_entropy(logits, ep.query_y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        n += x.shape[0]
    return n / (time.perf_counter() - t0)


def trainer_loop(data, steps: int, seed: int, precision: str = "float32") -> float:
    """fewshot's Trainer: images/s over its training loop."""
    from fewshot.engine.build import build_run
    from fewshot.engine.config import TrainConfig

    cfg = TrainConfig(steps=steps, way=20, shot=1, query=5, seed=seed, device="cpu", precision=precision,
                      val_tasks=0, progress=False, log_every=steps, checkpoint_every=10**9)
    with tempfile.TemporaryDirectory() as d:
        records = build_run("protonet", data, cfg, d, backbone=("conv4", {})).fit()
    return records[-1]["items_per_s"]


def training(data, steps: int, rounds: int) -> list[str]:
    lines = ["## Training: Conv4 ProtoNet, 20-way 1-shot 5-query Omniglot 28×28, channels_last", "",
             f"{rounds} interleaved rounds × {steps} optimiser steps (one episode each) per loop and thread count; "
             "median images/s (support + query images through forward + backward + Adam), min and max over the "
             "rounds; the ratio is of the medians. The plain loop is what one writes by hand with the same sampler "
             "and Conv4. `bfloat16`: `fewshot train --precision bfloat16`, the backbone's forward under CPU "
             "autocast (AVX-512 BF16 here), everything else float32.", "",
             "| threads | loop | median images/s | min | max | vs plain loop |", "|---|---|---|---|---|---|"]
    for threads in (1, 2):
        torch.set_num_threads(threads)
        res: dict[str, list[float]] = {}
        for r in range(rounds):
            for name, fn in [("plain PyTorch loop", lambda: plain_loop(data, steps, r)),
                             ("fewshot Trainer, float32", lambda: trainer_loop(data, steps, r)),
                             ("fewshot Trainer, `--precision bfloat16`", lambda: trainer_loop(data, steps, r, "bfloat16"))]:
                res.setdefault(name, []).append(fn())
                print(f"threads {threads} round {r}: {name}: {res[name][-1]:.0f} images/s", flush=True)
        ref = statistics.median(res["plain PyTorch loop"])
        for name, v in res.items():
            lines.append(f"| {threads} | {name} | {statistics.median(v):.0f} | {min(v):.0f} | {max(v):.0f} | "
                         f"{statistics.median(v) / ref:.2f}× |")
    return lines


def compiled(steps: int, modes: list[str], run_steps: int = 3000) -> list[str]:
    """Eager against torch.compile, taking turns in a fresh process with an empty inductor cache (a cold compile)."""
    child = HERE / "compile_step.py"
    lines = ["## torch.compile (inductor, CPU, 1 thread): Conv4 ProtoNet training step and evaluation embedding", "",
             "Per setting, one fresh process with an empty `TORCHINDUCTOR_CACHE_DIR` (a user's first run: cold "
             "compilation, one compile thread) holds an eager and a compiled model (same weights) that take turns "
             f"call by call; per call: median of {steps} turns after two warm-up calls, in process CPU time (robust "
             "to other jobs) and wall time. Compile s: the compiled model's first call minus the eager one's. "
             "Training: one 20-way 1-shot 5-query episode (120 images) + Adam; evaluation: 256 images in eval mode "
             "(a chunk of cached evaluation). Break-even: calls after which compiling has paid for itself (CPU "
             f"time); images/s over a {run_steps}-call run (the CLI's default `--episodes`): first call (wall) + "
             f"{run_steps - 1} × the CPU time per call. "
             "CPU s: the whole measurement, the C++ compiler included.", "",
             "| what | mode | precision | compile s | eager ms/call CPU (wall) | compiled ms/call CPU (wall) | "
             f"speed-up CPU (wall) | break-even calls | images/s over {run_steps} calls eager → compiled | CPU s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for what, images, precisions in (("train", 120, ("float32", "bfloat16")), ("eval", 256, ("float32",))):
        for precision in precisions:
            for mode in modes:
                with tempfile.TemporaryDirectory() as cache:
                    try:
                        out = run_python([str(child), what, mode, str(steps), "1", precision],
                                         env={"TORCHINDUCTOR_CACHE_DIR": cache, "OMP_NUM_THREADS": "1",
                                              "TORCHINDUCTOR_COMPILE_THREADS": "1"})[2]
                    except subprocess.CalledProcessError as exc:  # report, do not hide
                        lines.append(f"| {what} | {mode} | {precision} | failed: {exc.stderr.strip().splitlines()[-1][:200]} |")
                        continue
                r = json.loads(out.strip().splitlines()[-1])
                compile_s = r["compiled_first_s"] - r["eager_first_s"]
                gain = r["eager_cpu_s"] - r["compiled_cpu_s"]
                even = f"{compile_s / gain:.0f}" if gain > 0 else "never"
                total = {n: r[f"{n}_first_s"] + (run_steps - 1) * r[f"{n}_cpu_s"] for n in ("eager", "compiled")}
                lines.append(f"| {what} | {mode} | {precision} | {compile_s:.1f} | {1000 * r['eager_cpu_s']:.1f} "
                             f"({1000 * r['eager_s']:.1f}) | {1000 * r['compiled_cpu_s']:.1f} ({1000 * r['compiled_s']:.1f}) | "
                             f"{r['eager_cpu_s'] / r['compiled_cpu_s']:.2f}× ({r['eager_s'] / r['compiled_s']:.2f}×) | {even} | "
                             f"{run_steps * images / total['eager']:.0f} → {run_steps * images / total['compiled']:.0f} | "
                             f"{r['cpu_s']:.0f} |")
                print(lines[-1], flush=True)
    return lines


# ----------------------------------------------------------------------------- evaluation
def evaluation(test, tasks_small: int, tasks_large: int) -> list[str]:
    from fewshot.engine.evaluate import evaluate
    from fewshot.methods import ProtoNet
    from fewshot.nn.backbones import Conv4
    from fewshot.tasks.episodes import TaskSet

    torch.set_num_threads(2)
    torch.manual_seed(0)
    method = ProtoNet(Conv4())
    lines = ["## Evaluation: Conv4 ProtoNet on the held-out alphabets, 5 queries per class, 2 threads", "",
             "Per-task path: each task's support and query images embedded for that task (what `evaluate` does for a "
             "plain stream of episodes). Cached: each distinct image of the task set embedded once (`evaluate` over "
             "`task_set.episodes(data)` for `embedding_only` methods), time of embedding included.", "",
             "| task | per-task tasks/s | cached tasks/s | ratio | cached, " f"{tasks_large} tasks: tasks/s | ratio | same accuracy |",
             "|---|---|---|---|---|---|---|"]
    for way, shot in [(5, 1), (20, 1), (20, 5)]:
        small = TaskSet.generate(test, way, shot, 5, tasks_small, seed=0)
        large = TaskSet.generate(test, way, shot, 5, tasks_large, seed=0)
        t0 = time.perf_counter()
        slow = evaluate(method, list(small.episodes(test)))
        t1 = time.perf_counter()
        fast = evaluate(method, small.episodes(test))
        t2 = time.perf_counter()
        evaluate(method, large.episodes(test))
        t3 = time.perf_counter()
        per_task, cached, cached_large = tasks_small / (t1 - t0), tasks_small / (t2 - t1), tasks_large / (t3 - t2)
        lines.append(f"| {way}-way {shot}-shot | {per_task:.1f} | {cached:.1f} | {cached / per_task:.1f}× | "
                     f"{cached_large:.1f} | {cached_large / per_task:.1f}× | {slow.per_task == fast.per_task} |")
        print(lines[-1], flush=True)
    return lines


# ----------------------------------------------------------------------------- MAML meta-batches
MAML_CHILD = r"""
import json, resource, sys, time, torch
torch.set_num_threads(1)
from fewshot.methods import build_method
from fewshot.nn.backbones import Conv4
from fewshot.tasks.episodes import Episode
tasks, vectorize, steps = int(sys.argv[1]), sys.argv[2] == "vmap", int(sys.argv[3])
torch.manual_seed(0)
m = build_method("maml", Conv4(), way=5)  # second order, 1 inner step of 0.4 (the paper's Omniglot set-up)
m._require_head(torch.rand(2, 1, 28, 28))
m.vectorize_tasks = vectorize
opt = torch.optim.Adam(m.parameters(), 1e-3)
def episode():
    y = torch.arange(5)
    return Episode(torch.rand(5, 1, 28, 28), y, torch.rand(25, 1, 28, 28), y.repeat_interleave(5), y, y, y)
times = []
for s in range(steps + 1):
    batch = [episode() for _ in range(tasks)]
    t0 = time.perf_counter(); opt.zero_grad(); m.training_step(batch); opt.step(); times.append(time.perf_counter() - t0)
print(json.dumps({"step_s": sorted(times[1:])[len(times[1:]) // 2], "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def maml(steps: int) -> list[str]:
    lines = ["## MAML meta-batches: per-task loop against one vmap", "",
             "Second-order MAML, Conv4 (64 filters), 5-way 1-shot 5-query 28×28 episodes of random pixels (the time "
             f"depends only on the shapes), 1 inner step, 1 thread; median of {steps} optimiser steps after one "
             "warm-up; each setting in a fresh process so its peak resident memory (ru_maxrss) is its own.", "",
             "| tasks/step | loop ms/task | vmap ms/task | speed-up | loop peak MB | vmap peak MB |",
             "|---|---|---|---|---|---|"]
    for tasks in (4, 8, 16):
        res = {}
        for mode in ("loop", "vmap"):
            res[mode] = json.loads(run_python(["-c", MAML_CHILD, str(tasks), mode, str(steps)])[2].strip().splitlines()[-1])
        lo, vm = res["loop"], res["vmap"]
        lines.append(f"| {tasks} | {1000 * lo['step_s'] / tasks:.1f} | {1000 * vm['step_s'] / tasks:.1f} | "
                     f"{lo['step_s'] / vm['step_s']:.2f}× | {lo['maxrss_mb']:.0f} | {vm['maxrss_mb']:.0f} |")
        print(lines[-1], flush=True)
    return lines


# ----------------------------------------------------------------------------- distributed
def distributed(steps: int) -> list[str]:
    child = HERE / "distributed_step.py"
    lines = ["## torch.distributed: 1 against 2 processes (gloo, loopback, 1 thread each)", "",
             "Same global meta-batch split over the processes; per optimiser step: compute (this rank's tasks, "
             "forward + backward), the all-reduce of the gradients, and its volume. "
             f"Median of {steps} steps after one warm-up, rank 0's view.", "",
             "| method | global tasks/step | processes | step s | compute s | all-reduce s | all-reduce MB/step | speed-up |",
             "|---|---|---|---|---|---|---|---|"]
    measured = {}
    for name, tasks in (("protonet", 4), ("maml", 8)):
        base = None
        for world in (1, 2):
            out = run_python([str(child), name, str(tasks), str(world), str(steps)])[2]
            r = json.loads(out.strip().splitlines()[-1])
            measured[(name, world)] = r
            base = base or r["step_s"]
            lines.append(f"| {name} | {tasks} | {world} | {r['step_s']:.3f} | {r['compute_s']:.3f} | {r['allreduce_s']:.4f} | "
                         f"{r['allreduce_mb']:.2f} | {base / r['step_s']:.2f}× |")
            print(lines[-1], flush=True)
    lines += ["", "### Projection to more workers", "",
              "Task parallelism: each of W workers computes T/W tasks, then one ring all-reduce moves "
              "2·(W−1)/W × the gradient volume per worker. Projected step time = measured compute per task × T/W "
              "+ volume × 2(W−1)/W / bandwidth + 2(W−1) × latency, at 1.25 GB/s (10 Gb/s Ethernet) and 50 µs per hop "
              "(assumptions, not measurements). Global meta-batch T = W (one task per worker, the smallest) and T = 64.", "",
              "| method | W | T | compute s | all-reduce s | step s | speed-up vs W=1 at the same T |", "|---|---|---|---|---|---|---|"]
    for name, tasks in (("protonet", 4), ("maml", 8)):
        r = measured[(name, 1)]
        per_task, mb = r["compute_s"] / tasks, r["allreduce_mb"]
        for w in (8, 16, 32, 64):
            for t in (w, 64):
                comm = mb * 1e6 * 2 * (w - 1) / w / 1.25e9 + 2 * (w - 1) * 50e-6
                step = per_task * t / w + comm
                lines.append(f"| {name} | {w} | {t} | {per_task * t / w:.3f} | {comm:.4f} | {step:.3f} | {per_task * t / step:.1f}× |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--compile-steps", type=int, default=10, help="0: skip the torch.compile measurement")
    ap.add_argument("--compile-modes", default="default", help="comma list of torch.compile modes, e.g. "
                    "default,max-autotune-no-cudagraphs")
    ap.add_argument("--eval-tasks", type=int, default=200)
    ap.add_argument("--eval-tasks-large", type=int, default=1000)
    ap.add_argument("--maml-steps", type=int, default=3)
    ap.add_argument("--dist-steps", type=int, default=5)
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {', '.join(SECTIONS)}")
    ap.add_argument("--out", default=str(HERE / "results" / "throughput.md"))
    args = ap.parse_args()
    sections = args.sections.split(",")
    from fewshot.data import load_omniglot

    start_load, t0, c0 = load(), time.perf_counter(), cpu_seconds()
    lines: list[str] = []

    def write(done: bool) -> None:  # after every section: a run cut short keeps what it measured
        head = ["# Throughput: start-up, training, evaluation, MAML meta-batches, distributed", "",
                f"One run of `python benchmarks/throughput.py {' '.join(sys.argv[1:])}` on CPU ({os.cpu_count()} cores, "
                f"shared with other jobs). Load average (1/5/15 min) at start {start_load}, "
                f"{'at end' if done else 'when last written (run unfinished)'} {load()}; "
                f"{time.perf_counter() - t0:.0f} s wall, {cpu_seconds() - c0:.0f} s CPU (this process and its children). "
                "Torch threads per table. No GPU was available: the GPU column could not be measured.", ""]
        Path(args.out).parent.mkdir(exist_ok=True)
        Path(args.out).write_text("\n".join(head + lines) + "\n")

    if "startup" in sections:
        lines += startup(args.rounds) + [""]
        write(False)
    if "train" in sections or "eval" in sections:
        data = load_omniglot("background", exclude_alphabets=["heldout"], rotations=True)
        test = load_omniglot("background", alphabets=["heldout"])
    if "eval" in sections:
        lines += evaluation(test, args.eval_tasks, args.eval_tasks_large) + [""]
        write(False)
    if "maml" in sections:
        lines += maml(args.maml_steps) + [""]
        write(False)
    if "dist" in sections:
        lines += distributed(args.dist_steps) + [""]
        write(False)
    if "train" in sections:
        lines += training(data, args.steps, args.rounds) + [""]
        write(False)
        if args.compile_steps:
            lines += compiled(args.compile_steps, args.compile_modes.split(",")) + [""]
    write(True)
    print(Path(args.out).read_text())


if __name__ == "__main__":
    main()
