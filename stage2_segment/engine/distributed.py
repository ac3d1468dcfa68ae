"""torchrun support for `evaluate`: disjoint shards per rank, summed confusion matrices, rank 0 writes.

`torchrun --nproc_per_node N -m llmseg.cli evaluate ...` (or `torchrun $(which llmseg) evaluate ...`)
sets RANK / WORLD_SIZE / LOCAL_RANK; `init_distributed` then joins the process group (NCCL for
CUDA devices, gloo otherwise). Without those variables everything runs single-process.

Each rank must build its model on its own GPU, so the device is settled before the backbone is
built: `device_for_rank` (pure) maps the configured device and the rank to `cuda:LOCAL_RANK`.
Rules under torchrun (WORLD_SIZE > 1): `cuda` -> `cuda:LOCAL_RANK`; `cpu` (or any non-CUDA
device) is kept; an explicit `cuda:N` is refused, since every rank would share GPU N (choose GPUs
with CUDA_VISIBLE_DEVICES instead). A single process keeps the configured device as given.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from llmseg.errors import ConfigError

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


def env_info(environ: Mapping[str, str] | None = None) -> DistInfo:
    """Rank and world as torchrun announces them in the environment (before any process group exists)."""
    env = os.environ if environ is None else environ
    world = int(env.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    return DistInfo(int(env.get("RANK", "0")), world, int(env.get("LOCAL_RANK", "0")))


def device_for_rank(device: str, info: DistInfo, *, cuda_available: bool, cuda_count: int) -> str:
    """The device this rank builds its model on and computes with (see the module docstring for the rules)."""
    device = str(device)
    if not info.enabled or not device.startswith("cuda"):
        return device
    if device != "cuda":
        raise ConfigError(
            f"--device {device} names one GPU, but torchrun started {info.world_size} ranks that would all share it: "
            "pass --device cuda (rank r uses cuda:LOCAL_RANK) and choose the GPUs with CUDA_VISIBLE_DEVICES"
        )
    if not cuda_available:
        raise ConfigError("--device cuda under torchrun, but this process sees no CUDA GPU: use --device cpu")
    if not 0 <= info.local_rank < cuda_count:
        raise ConfigError(
            f"LOCAL_RANK {info.local_rank} has no GPU: this node shows {cuda_count}; "
            "start at most that many processes per node (torchrun --nproc_per_node)"
        )
    return f"cuda:{info.local_rank}"


def this_rank_device(device: str) -> str:
    """`device_for_rank` for this process: torchrun's environment and the CUDA devices it can see."""
    info = env_info()
    if not info.enabled or not str(device).startswith("cuda"):
        return str(device)
    # lazy import: start-up time (llmseg --help imports this module for `evaluate`; torch loads on use)
    import torch

    available = torch.cuda.is_available()
    return device_for_rank(device, info, cuda_available=available, cuda_count=torch.cuda.device_count() if available else 0)


def current() -> DistInfo:
    """The rank/world of an already initialised process group, else single-process."""
    # lazy import: start-up time (llmseg --help imports this module for `evaluate`; torch loads on use)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return DistInfo()


def init_distributed(device: str = "cpu", backend: str | None = None) -> DistInfo:
    """Join the torchrun process group if the environment asks for one (idempotent)."""
    # lazy import: start-up time (llmseg --help imports this module for `evaluate`; torch loads on use)
    import torch
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
    if backend == "nccl":
        torch.cuda.set_device(local_rank)  # NCCL collectives run on the current device: this rank's GPU
    dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistInfo(rank, world, local_rank, initialized_here=True)


def rank_device(device: str, info: DistInfo) -> str:
    """'cuda' under torchrun means this rank's GPU (cuda:LOCAL_RANK); a resolved `cuda:N` is kept."""
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
    # lazy import: start-up time (llmseg --help imports this module for `evaluate`; torch loads on use)
    import torch.distributed as dist

    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.enabled:
        # lazy import: start-up time (llmseg --help imports this module for `evaluate`; torch loads on use)
        import torch.distributed as dist

        dist.barrier()


def shutdown(info: DistInfo) -> None:
    """Leave the process group if `init_distributed` created it."""
    if info.initialized_here:
        # lazy import: start-up time (llmseg --help imports this module for `evaluate`; torch loads on use)
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
