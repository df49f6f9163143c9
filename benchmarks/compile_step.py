"""Helper of benchmarks/throughput.py: the Conv4 ProtoNet training step (20-way 1-shot 5-query
Omniglot 28×28, channels_last, Adam) or the evaluation embedding (eval mode, chunks of 256 images,
as cached evaluation embeds), eager or through ``torch.compile`` (inductor), in a fresh process.

    python benchmarks/compile_step.py train|eval eager|default|max-autotune-no-cudagraphs STEPS THREADS [PRECISION]

Prints one JSON line: ``first_s`` (the first call: compilation included), ``step_s`` (median of
``STEPS`` calls after two more warm-up calls), ``cpu_s`` (from the first call on, this process and
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

    torch.manual_seed(0)
    method = ProtoNet(Conv4()).to(memory_format=torch.channels_last)
    if mode != "eager":  # what TrainConfig(compile=True) does, with a choice of mode
        method.backbone.compile(mode=None if mode == "default" else mode, dynamic=False)
    data = load_omniglot("background", exclude_alphabets=["heldout"], rotations=True)
    if what == "train":
        batches = EpisodeBatches(data, TrainConfig(way=20, shot=1, query=5, seed=0))
        opt = torch.optim.Adam(method.parameters(), lr=1e-3)
        low_precision = BackboneAutocast(method.backbone, precision)
        method.train()

        def call(i: int) -> None:
            batch = batches(i)
            opt.zero_grad(set_to_none=True)
            with low_precision:
                method.training_step(batch)
            opt.step()
    elif what == "eval":
        x = data.items(torch.arange(256)).contiguous(memory_format=torch.channels_last)
        method.eval()

        def call(i: int) -> None:
            with torch.inference_mode():
                method.embed(x)
    else:
        raise SystemExit(f"unknown {what!r}: train or eval")
    c0, t0 = cpu_seconds(), time.perf_counter()
    call(0)
    first = time.perf_counter() - t0
    times = []
    for i in range(1, steps + 3):
        t = time.perf_counter()
        call(i)
        times.append(time.perf_counter() - t)
    print(json.dumps({"first_s": first, "step_s": statistics.median(times[2:]), "cpu_s": cpu_seconds() - c0}))


if __name__ == "__main__":
    main()
