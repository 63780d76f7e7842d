"""Devices, DDP set-up (torchrun), samplers, seeding and cross-rank reductions."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from ..utils.device import select_device as _select_device
from ..utils.workers import worker_init_fn  # noqa: F401  (re-exported: the engine's loaders use it)

__all__ = [
    "DistInfo", "dist_info", "setup_distributed", "cleanup_distributed", "select_device", "ShardSampler",
    "all_gather_object", "all_reduce_sum", "barrier", "broadcast_object", "broadcast_state", "is_dist", "lost_peer",
    "seed_everything", "configure_determinism", "worker_init_fn", "PeerLostError",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a (possibly single-process) run."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info() -> DistInfo:
    """Ranks from the environment that ``torchrun`` sets (RANK, LOCAL_RANK, WORLD_SIZE)."""
    return DistInfo(int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)),
                    int(os.environ.get("WORLD_SIZE", 1)))


def select_device(device: str | torch.device | None = "", local_rank: int = 0) -> torch.device:
    """This process's device: :func:`nostride.utils.select_device` with ``cuda`` meaning ``cuda:LOCAL_RANK``.

    A CUDA device is also made the current one (``torch.cuda.set_device``), as NCCL and
    ``torch.cuda`` calls without an index expect under ``torchrun``.

    Raises ``ValueError`` when the requested device does not exist here.
    """
    dev = _select_device(device, local_rank=local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    return dev


def setup_distributed(info: DistInfo, device: torch.device) -> None:
    """Join the process group (NCCL on CUDA, Gloo otherwise) when launched with WORLD_SIZE > 1."""
    if not info.distributed or (dist.is_available() and dist.is_initialized()):
        return
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but torch.distributed is not available in this PyTorch build")
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(backend=backend, **kwargs)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class ShardSampler(Sampler[int]):
    """Splits ``range(n)`` over ranks WITHOUT padding (rank r gets r, r + W, r + 2W, ...).

    Unlike ``DistributedSampler`` (which repeats samples so all ranks get the same count), every
    sample is seen exactly once over all ranks, so validation metrics summed over ranks are exact.
    """

    def __init__(self, n: int, rank: int = 0, world_size: int = 1) -> None:
        self.n, self.rank, self.world_size = n, rank, world_size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world_size))


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if is_dist():
        dist.barrier()


def all_gather_object(obj: object) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` (``[obj]`` without a process group)."""
    if not is_dist():
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: object, src: int = 0) -> object:
    """Rank ``src``'s ``obj`` on every rank (``obj`` itself without a process group).

    For decisions every rank must take alike (whether a collective runs at all): a file check
    on each rank can see another answer than rank 0's while rank 0 is still writing.
    """
    if not is_dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


# what Gloo and NCCL say when a collective fails because another rank's process is gone
_PEER_GONE = ("connection closed by peer", "connection reset by peer", "broken pipe", "communicator was aborted",
              "remote process exited", "socket closed")


class PeerLostError(RuntimeError):
    """Another process of a distributed run ended; this one stops too.

    ``grace``: seconds to wait before this process exits, so that a launcher watching its processes
    (torchrun) sees the one that failed first and names it as the root cause, not this one.
    """

    grace = 5.0


def lost_peer(error: BaseException) -> bool:
    """Whether ``error`` is a collective that failed because another process of the group ended."""
    if not (dist.is_available() and isinstance(error, RuntimeError)):
        return False
    dist_error = getattr(dist, "DistNetworkError", None)
    if dist_error is not None and isinstance(error, dist_error):
        return True
    text = str(error).lower()
    return any(s in text for s in _PEER_GONE)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks (no-op without a process group)."""
    if is_dist():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


@torch.no_grad()
def broadcast_state(module: torch.nn.Module, src: int = 0) -> None:
    """Copy ``module``'s buffers (BN running stats) from rank ``src`` so every rank evaluates the same model."""
    if is_dist():
        for b in module.buffers():
            dist.broadcast(b, src)


def seed_everything(seed: int) -> None:
    """Seed python ``random``, NumPy and torch (CPU and every GPU)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def configure_determinism(deterministic: bool) -> None:
    """Deterministic algorithms (warn-only for ops without a deterministic version) and cuDNN flags."""
    if deterministic:
        # cuBLAS needs a fixed workspace for reproducible GEMMs; set before the first CUDA matmul
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if deterministic or torch.are_deterministic_algorithms_enabled():  # the call imports the compiler stack (s)
        torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
