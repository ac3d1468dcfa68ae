"""torchrun support for `evaluate`: disjoint shards per rank, summed confusion matrices, rank 0 writes.

`torchrun --nproc_per_node N -m llmseg.cli evaluate ...` (or `torchrun $(which llmseg) evaluate ...`)
sets RANK / WORLD_SIZE / LOCAL_RANK; `init_distributed` then joins the process group (NCCL for
CUDA devices, gloo otherwise). Without those variables everything runs single-process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def current() -> DistInfo:
    """The rank/world of an already initialised process group, else single-process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return DistInfo()


def init_distributed(device: str = "cpu", backend: str | None = None) -> DistInfo:
    """Join the torchrun process group if the environment asks for one (idempotent)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return current()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = backend or ("nccl" if str(device).startswith("cuda") else "gloo")
    dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistInfo(rank, world, local_rank, initialized_here=True)


def rank_device(device: str, info: DistInfo) -> str:
    """'cuda' under torchrun means this rank's GPU (cuda:LOCAL_RANK)."""
    if info.enabled and device == "cuda":
        return f"cuda:{info.local_rank}"
    return device


def shard(items: list[T], info: DistInfo) -> list[T]:
    """Rank r takes items r, r + W, r + 2W, ...: disjoint, covering, balanced."""
    return items[info.rank :: info.world_size] if info.enabled else list(items)


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's `obj`, in rank order (single-process: [obj])."""
    if not info.enabled:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.enabled:
        import torch.distributed as dist

        dist.barrier()


def shutdown(info: DistInfo) -> None:
    """Leave the process group if `init_distributed` created it."""
    if info.initialized_here:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
