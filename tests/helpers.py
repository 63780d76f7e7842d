"""Helpers shared by several test modules (imported as ``helpers``: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters in every ``BatchNorm2d`` of ``model``.

    Folding or copying BatchNorm must not be tested against the trivial initial state (mean 0,
    variance 1, weight 1, bias 0), which hides swapped or missing terms. Returns ``model``.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                    m.bias.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return model


def run_under_memory_cap(
    imports: str, body: str, extra_mb: int, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Run the Python code ``body`` in a fresh process whose address space is capped at its size
    after ``imports`` (run first, uncapped) plus ``extra_mb`` MB, on one thread. Skips the test
    without /proc (Linux).

    Memory bombs are tested this way: without the check under test, the process runs out of memory
    (``MemoryError``) instead of refusing the input quickly.
    """
    if not Path("/proc/self/statm").exists():
        pytest.skip("needs /proc (Linux) for the memory cap")
    preamble = textwrap.dedent(imports) + textwrap.dedent(f"""
        import resource
        with open("/proc/self/statm") as f:
            vm = int(f.read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (vm + {int(extra_mb)} * 2**20, resource.RLIM_INFINITY))
    """)
    return subprocess.run([sys.executable, "-c", preamble + textwrap.dedent(body)], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})


def image_folder(root: Path, train_counts=(8, 8, 4), test_counts=(5, 5, 5), size: int = 8) -> Path:
    """A PNG image folder (``train/classK``, ``test/classK``); uneven class sizes give odd
    validation and test counts, and each class its own brightness."""
    from torchvision.io import write_png

    g = torch.Generator().manual_seed(0)
    for split, counts in (("train", train_counts), ("test", test_counts)):
        for c, n in enumerate(counts):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(n):
                img = (torch.rand(3, size, size, generator=g) * 80 + 60 * c).to(torch.uint8)
                write_png(img, str(d / f"{i}.png"))
    return root
