"""Data-parallel training across torchrun processes (gloo on CPU, nccl on CUDA), without a DDP wrapper.

The components train through ``compute_loss``-style methods, not ``forward``, so gradients are averaged
by hand: one flat all-reduce per optimiser step. Buffers that change outside the optimiser (the EMA
codebook) are broadcast from rank 0 after each step, so every rank holds identical weights. Each
collective is a no-op in a single process, so the training loop reads the same either way.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as tdist
from torch import nn

from model.device import resolve_device


@dataclass
class Dist:
    """This process's place in the group and the collectives the trainer needs."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def on(self) -> bool:
        return self.world > 1

    def share(self, total: int) -> int:
        """This rank's part of a batch or budget of ``total`` (rounded up, at least 1)."""
        return max(1, math.ceil(total / self.world))

    def barrier(self) -> None:
        if self.on:
            tdist.barrier()

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.on:
            return obj
        box = [obj]
        tdist.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.on:
            return [obj]
        gathered: list[Any] = [None] * self.world
        tdist.all_gather_object(gathered, obj)
        return gathered

    def sum_int(self, n: int) -> int:
        if not self.on:
            return n
        t = torch.tensor([n], dtype=torch.long, device=self.device)  # nccl needs CUDA tensors
        tdist.all_reduce(t)
        return int(t.item())

    def any_flag(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any."""
        if not self.on:
            return flag
        t = torch.tensor([int(flag)], dtype=torch.int32, device=self.device)
        tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
        return bool(t.item())

    def average_grads(self, params: list[nn.Parameter]) -> None:
        """Average the gradients of ``params`` over ranks (a missing gradient counts as zeros)."""
        if not self.on:
            return
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        grads = [p.grad for p in params]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1).float() for g in grads])
        tdist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset:offset + n].view_as(g))
            offset += n

    def broadcast_module(self, module: nn.Module, buffers_only: bool = False) -> None:
        """Rank 0's parameters (unless ``buffers_only``) and buffers of ``module`` on every rank."""
        if not self.on:
            return
        with torch.no_grad():
            for t in list([] if buffers_only else module.parameters()) + list(module.buffers()):
                tdist.broadcast(t.data, src=0)

    def close(self) -> None:
        """Leave the process group if this process created it."""
        if self.owns_group and tdist.is_initialized():
            tdist.destroy_process_group()


def setup_distributed(device_name: str) -> Dist:
    """Join the torchrun process group when WORLD_SIZE > 1 and pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_name)
    if world <= 1:
        return Dist(device=device)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    owns = not tdist.is_initialized()
    if owns:
        tdist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(tdist.get_rank(), tdist.get_world_size(), local, owns, device)
