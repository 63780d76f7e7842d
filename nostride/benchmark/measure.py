"""Timing models interleaved, and the peak memory of one forward pass."""

from __future__ import annotations

import time
import weakref
from typing import Callable, Sequence

import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["interleaved_latencies", "peak_activation_bytes", "percentile", "sync"]


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work, so that a timer read afterwards covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation between order statistics."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no values")
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def interleaved_latencies(
    fns: dict[str, Callable[[], object]],
    device: torch.device,
    repeats: int,
    warmup: int = 3,
    on_round: Callable[[int], None] | None = None,
) -> dict[str, list[float]]:
    """Seconds of each call of each function, ``repeats`` calls each, timed round-robin.

    Every function is first called ``warmup`` times (allocator and kernel caches, cuDNN autotuning,
    torch.compile's compilation). Then round ``r`` times one call of each function, starting at a
    different function each round, so load from other processes, thermal state and cache effects
    hit all of them alike and their ratios stay meaningful on a shared machine.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for k in range(len(names)):
            name = names[(r + k) % len(names)]
            start = time.perf_counter()
            fns[name]()
            sync(device)
            times[name].append(time.perf_counter() - start)
        if on_round is not None:
            on_round(r)
    return times


class _LiveTensorBytes(TorchDispatchMode):
    """Bytes of the storages of operator outputs still alive, and their peak, while active."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, tuple[int, list[weakref.ref]]] = {}
        self.peak = 0

    def _prune(self) -> int:
        total = 0
        for key in list(self.live):
            nbytes, refs = self.live[key]
            refs[:] = [r for r in refs if r() is not None]
            if refs:
                total += nbytes
            else:
                del self.live[key]
        return total

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self._prune()  # before adding: a freed storage's address may be reused by this output
        for t in pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                storage = t.untyped_storage()
                entry = self.live.setdefault(storage.data_ptr(), (storage.nbytes(), []))
                entry[1].append(weakref.ref(t))
        self.peak = max(self.peak, self._prune())
        return out


def peak_activation_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Peak bytes of the tensors one call of ``fn`` creates (activations), not counting weights or input.

    CUDA: ``torch.cuda.max_memory_allocated`` over the call minus what was allocated before it (so
    it includes kernel workspaces). CPU: the peak total size of operator outputs alive at once,
    tracked at the dispatcher (PyTorch eager and TorchScript; scratch buffers inside kernels are
    not seen).
    """
    if device.type == "cuda":
        sync(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        result = fn()
        sync(device)
        peak = torch.cuda.max_memory_allocated(device) - before
        del result
        return int(peak)
    tracker = _LiveTensorBytes()
    with tracker:
        result = fn()
    del result
    return int(tracker.peak)
