"""Shared fixtures: where the real datasets are, and helpers to skip when they are absent."""

from __future__ import annotations

import os
from pathlib import Path

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
