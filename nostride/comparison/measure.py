"""Latency of a model at batch 1, measured on the study's device."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn

__all__ = ["measure_latency"]


@torch.inference_mode()
def measure_latency(model: nn.Module, img_size: int, device: torch.device, repeats: int = 20,
                    warmup: int = 3) -> float:
    """Median milliseconds of one forward pass of a (1, 3, S, S) image (eval mode, no gradients).

    On a CPU it runs on one thread: batch-1 latency with several threads mostly measures how busy
    the other cores are (on a shared machine, ten times slower and as noisy).
    """
    if device.type == "cpu":
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return _measure(model, img_size, device, repeats, warmup)
        finally:
            torch.set_num_threads(threads)
    return _measure(model, img_size, device, repeats, warmup)


def _measure(model: nn.Module, img_size: int, device: torch.device, repeats: int, warmup: int) -> float:
    model = model.to(device).eval()
    x = torch.randn(1, 3, img_size, img_size, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        model(x)
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model(x)
        sync()
        times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)
