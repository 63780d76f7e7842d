"""Shared fixtures: where the real datasets are, and helpers to skip when they are absent."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
# ../shared/data beside the checkout; NOSTRIDE_SHARED_DATA overrides it
SHARED_DATA = Path(os.environ.get("NOSTRIDE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real datasets folder (../shared/data); skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (set NOSTRIDE_SHARED_DATA)")
    return SHARED_DATA


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# Small tensors and models on the shared 2-core CI machine: intra-op (OpenMP) threads only add
# contention and spin-waiting, often several times slower under load. Modules opt in with
# `pytestmark = pytest.mark.usefixtures("one_thread_module")` or a test argument `one_thread`.
@pytest.fixture
def one_thread() -> Iterator[None]:
    """torch on one intra-op thread for this test (restored after)."""
    with _torch_threads(1):
        yield


@pytest.fixture(scope="module")
def one_thread_module() -> Iterator[None]:
    """torch on one intra-op thread for a whole module, its module-scoped fixtures included."""
    with _torch_threads(1):
        yield
