"""Task-parallel training over processes with ``torch.distributed`` (gloo on CPU, NCCL on GPUs).

Launched by ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``...),
every process runs the same ``fewshot train`` command: each takes its share of the step's global
meta-batch (episode ``step * tasks_per_step + j`` for its ``j`` s, so the union is exactly the
single-process batch), back-propagates its tasks' mean loss, then one flat all-reduce averages
the gradients (and the logged loss and accuracy) before every process takes the same optimiser step.
An explicit all-reduce rather than ``DistributedDataParallel``: it serves every method alike,
second-order MAML and Reptile's hand-written ``.grad`` included, which DDP's hooks do not cover.
Process 0 alone validates, logs and writes checkpoints.
"""

from __future__ import annotations

import atexit
import gc
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..methods.base import StepOutput


@dataclass(frozen=True)
class Distributed:
    """This process's ``rank`` among ``world_size`` (``Distributed()``: a single process)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def share(self, n: int, what: str = "tasks_per_step") -> range:
        """This process's indices among ``n`` items split evenly over the processes."""
        if n % self.world_size:
            raise ValueError(f"{what}={n} cannot be split evenly over {self.world_size} processes; "
                             f"use a multiple of {self.world_size}")
        k = n // self.world_size
        return range(self.rank * k, (self.rank + 1) * k)

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def broadcast(self, module: nn.Module) -> None:
        """Give every process process 0's weights and buffers."""
        if self.active:
            for t in [*module.parameters(), *module.buffers()]:
                dist.broadcast(t.data, 0)

    def broadcast_float(self, value: float, device: str | torch.device = "cpu") -> float:
        """Process 0's ``value`` on every process (``device``: where NCCL wants the tensor)."""
        if not self.active:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=device)
        dist.broadcast(t, 0)
        return float(t.item())

    def average(self, params: Sequence[nn.Parameter], out: StepOutput) -> StepOutput:
        """Average the gradients of ``params`` and the step's loss and accuracy over the processes, in
        one all-reduce (a parameter keeps ``grad=None`` only if no process gave it a gradient)."""
        if not self.active:
            return out
        ref = params[0]
        parts = [p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel(), dtype=p.dtype, device=p.device)
                 for p in params]
        has = torch.tensor([p.grad is not None for p in params], dtype=ref.dtype, device=ref.device)
        stats = torch.stack([torch.as_tensor(v, dtype=ref.dtype, device=ref.device).reshape(()) for v in (out.loss, out.accuracy)])
        flat = torch.cat([*parts, stats, has])
        dist.all_reduce(flat)
        flat[:-len(params)] /= self.world_size
        offset = 0
        for p, given in zip(params, flat[-len(params):].tolist()):
            mean = flat[offset:offset + p.numel()].view(p.shape)
            if not given:
                p.grad = None
            elif p.grad is None:
                p.grad = mean.clone()
            else:
                p.grad.copy_(mean)  # keeps the gradient's memory layout
            offset += p.numel()
        return StepOutput(flat[offset].detach(), flat[offset + 1].detach())


def from_env(device: str | torch.device = "auto") -> Distributed:
    """Join the process group ``torchrun`` describes in the environment (a single process when
    ``WORLD_SIZE`` is unset or 1). GPUs: NCCL, one GPU per process (``cuda:LOCAL_RANK``); else gloo."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    if not dist.is_initialized():
        gpu = str(device).startswith("cuda") or (str(device) == "auto" and torch.cuda.is_available())
        if gpu:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if gpu else "gloo")
        atexit.register(close)  # a fallback: the train command closes the group itself when it is done
    return Distributed(dist.get_rank(), dist.get_world_size())


def close() -> None:
    """Leave the process group (a no-op outside one). Called while the interpreter is fully alive:
    a gloo group left to interpreter finalisation can abort the process (``terminate called without
    an active exception``) after its work is done; unreferenced work objects are collected first."""
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        # No barrier first: after a run, Trainer.fit has just ended with one (no process is still
        # sending); after an error in one process, a barrier here would pair with whichever barrier
        # the other process waits at (e.g. the second of Trainer._start) and let it run on, instead
        # of the other process failing at once when this one leaves.
        dist.destroy_process_group()
