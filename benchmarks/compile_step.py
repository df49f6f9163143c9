"""Helper of benchmarks/throughput.py: eager against ``torch.compile`` (inductor) in one fresh
process, on the Conv4 ProtoNet training step (20-way 1-shot 5-query Omniglot 28×28, channels_last,
Adam) or the evaluation embedding (eval mode, a chunk of 256 images, as cached evaluation embeds).

    python benchmarks/compile_step.py train|eval default|max-autotune-no-cudagraphs STEPS THREADS [PRECISION]

The two models (same initial weights) take turns call by call, so load on a shared machine hits
both alike. Prints one JSON line: ``eager_first_s`` and ``compiled_first_s`` (the first call;
compilation included), the median wall and process-CPU seconds per call over ``STEPS`` turns after
two warm-up calls (``*_s`` and ``*_cpu_s``), and ``cpu_s`` (the whole measurement, this process and
its finished children: the C++ compiler with ``TORCHINDUCTOR_COMPILE_THREADS=1``). Run it with an
empty ``TORCHINDUCTOR_CACHE_DIR`` to time a cold compilation (what a user's first run pays).
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time

import torch


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the C++ compiler runs in children)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    what, mode, steps, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    precision = sys.argv[5] if len(sys.argv) > 5 else "float32"
    torch.set_num_threads(threads)
    from fewshot.data import load_omniglot
    from fewshot.engine.batches import EpisodeBatches
    from fewshot.engine.config import TrainConfig
    from fewshot.engine.precision import BackboneAutocast
    from fewshot.methods import ProtoNet
    from fewshot.nn.backbones import Conv4

    data = load_omniglot("background", exclude_alphabets=["heldout"], rotations=True)
    batches = EpisodeBatches(data, TrainConfig(way=20, shot=1, query=5, seed=0))
    x = data.items(torch.arange(256)).contiguous(memory_format=torch.channels_last)

    def make(compiled: bool):
        torch.manual_seed(0)
        method = ProtoNet(Conv4()).to(memory_format=torch.channels_last)
        if compiled:  # what TrainConfig(compile=True) does, with a choice of mode
            method.backbone.compile(mode=None if mode == "default" else mode, dynamic=False)
        if what == "eval":
            method.eval()

            def embed(i: int) -> None:
                with torch.inference_mode():
                    method.embed(x)
            return embed
        opt = torch.optim.Adam(method.parameters(), lr=1e-3)
        low_precision = BackboneAutocast(method.backbone, precision)
        method.train()

        def call(i: int) -> None:
            batch = batches(i)
            opt.zero_grad(set_to_none=True)
            with low_precision:
                method.training_step(batch)
            opt.step()
        return call

    if what not in ("train", "eval"):
        raise SystemExit(f"unknown {what!r}: train or eval")
    calls = {"eager": make(False), "compiled": make(True)}
    c0, res = cpu_seconds(), {}
    for name, call in calls.items():
        t = time.perf_counter()
        call(0)
        res[f"{name}_first_s"] = time.perf_counter() - t
    wall: dict[str, list[float]] = {n: [] for n in calls}
    cpu: dict[str, list[float]] = {n: [] for n in calls}
    for i in range(1, steps + 3):
        for name, call in calls.items():
            t, c = time.perf_counter(), time.process_time()
            call(i)
            wall[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)
    for name in calls:
        res[f"{name}_s"] = statistics.median(wall[name][2:])
        res[f"{name}_cpu_s"] = statistics.median(cpu[name][2:])
    res["cpu_s"] = cpu_seconds() - c0
    print(json.dumps(res))


if __name__ == "__main__":
    main()
