"""DistributedDataParallel under torchrun (env:// rendezvous, so the same command goes multi-node).

Each rank trains on its shard of the resident data; metrics are all-reduced so every rank sees the same
numbers (and so takes the same early-stopping and divergence decisions); only rank 0 writes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1 or dist.is_initialized()


def launched_by_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def env_rank() -> int:
    """This process's global rank (0 outside torchrun)."""
    return int(os.environ.get("RANK", 0))


def setup(device_type: str) -> tuple[DistEnv, torch.device]:
    """Join the process group torchrun describes; returns the env and this rank's device."""
    if not launched_by_torchrun():
        raise RuntimeError("trainer.strategy=ddp needs torchrun, e.g. "
                           "torchrun --nproc_per_node=2 train.py trainer.strategy=ddp")
    env = DistEnv(int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"]))
    if device_type == "cuda":
        torch.cuda.set_device(env.local_rank)
        device = torch.device("cuda", env.local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method="env://")
    return env, device


def all_reduce_sum(*tensors: torch.Tensor) -> None:
    """Sum each tensor over the ranks in place (one collective for all of them); no-op when not distributed."""
    if not dist.is_initialized():
        return
    flat = torch.cat([t.reshape(-1).float() for t in tensors])
    dist.all_reduce(flat)
    offset = 0
    for t in tensors:
        t.copy_(flat[offset:offset + t.numel()].view_as(t))
        offset += t.numel()


def reduce_steps(losses: torch.Tensor, corrects: torch.Tensor, sizes: list[int]):
    """Per-step (mean loss, correct count, sample count) of this rank → those of the global batch."""
    counts = torch.tensor(sizes, dtype=torch.float, device=losses.device)
    losses = losses * counts
    all_reduce_sum(losses, corrects, counts)
    return losses / counts, corrects, counts.tolist()


def agree_on_stop(local: int | None) -> int | None:
    """The stop signal any rank received (the largest signal number), or None: every rank stops together."""
    flag = torch.tensor([float(local or 0)])
    if dist.get_backend() == "nccl":
        flag = flag.cuda()
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item()) or None


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
