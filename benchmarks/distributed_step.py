"""Helper of benchmarks/throughput.py: time one distributed training step split into compute and
all-reduce, for ``world`` processes on loopback (gloo, 1 thread each).

    python benchmarks/distributed_step.py protonet|maml GLOBAL_TASKS WORLD STEPS   # prints one JSON line
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def worker(rank: int, world: int, port: int, name: str, tasks: int, steps: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from fewshot.engine.distributed import Distributed
    from fewshot.methods import build_method
    from fewshot.nn.backbones import Conv4
    from fewshot.tasks.episodes import Episode

    d = Distributed(rank, world)
    torch.manual_seed(0)
    way, query = (20, 5) if name == "protonet" else (5, 5)
    method = build_method(name, Conv4(), **({"way": 5} if name == "maml" else {}))
    if name == "maml":
        method._require_head(torch.rand(2, 1, 28, 28))
    method = method.to(memory_format=torch.channels_last)
    params = [p for p in method.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, 1e-3)
    y = torch.arange(way)

    def episode() -> Episode:
        cl = torch.channels_last
        return Episode(torch.rand(way, 1, 28, 28).contiguous(memory_format=cl), y,
                       torch.rand(way * query, 1, 28, 28).contiguous(memory_format=cl), y.repeat_interleave(query), y, y, y)

    rows = []
    for _ in range(steps + 1):
        batch = [episode() for _ in d.share(tasks)]
        d.barrier()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        out = method.training_step(batch)
        t1 = time.perf_counter()
        d.average(params, out)
        t2 = time.perf_counter()
        opt.step()
        rows.append((time.perf_counter() - t0, t1 - t0, t2 - t1))
    if rank == 0:
        rows = rows[1:]
        queue.put({"step_s": statistics.median(r[0] for r in rows), "compute_s": statistics.median(r[1] for r in rows),
                   "allreduce_s": statistics.median(r[2] for r in rows) if world > 1 else 0.0,
                   "allreduce_mb": (sum(p.numel() for p in params) + 2 + len(params)) * 4 / 1e6})
    dist.destroy_process_group()


def main() -> None:
    name, tasks, world, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    mp.start_processes(worker, (world, port, name, tasks, steps, queue), nprocs=world, start_method="spawn", join=True)
    print(json.dumps(queue.get()))


if __name__ == "__main__":
    main()
