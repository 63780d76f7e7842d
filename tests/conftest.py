"""Shared fixtures: where the real datasets are, and helpers to skip when they are absent.

The whole run is kept off the user's files: every cache and settings variable points at one
temporary folder (:mod:`hygiene`), tests get the real datasets through a writable shadow of them,
and the run fails at the end if it wrote into the checkout, the shared datasets or the user's
caches.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hygiene  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
# ../shared/data beside the checkout; NOSTRIDE_SHARED_DATA overrides it
SHARED_DATA = Path(os.environ.get("NOSTRIDE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
# one temporary folder for the run: every cache variable points below it (set at import, before
# any test module imports torch hub, matplotlib or ultralytics, which read them once)
RUN_TMP = Path(tempfile.mkdtemp(prefix="nostride-tests-"))
_OLD_ENV = hygiene.isolate_environment(RUN_TMP)
# the stand-in home starts empty: whatever appears there ignored the cache variables (the real home
# is not watched: other processes of the same user may write there while the tests run)
_WATCHED = [REPO_ROOT, SHARED_DATA, RUN_TMP / "home"]
_BEFORE = hygiene.snapshot(_WATCHED)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when it left files in the checkout, the shared datasets or the user's caches."""
    found = hygiene.changes(_BEFORE, hygiene.snapshot(_WATCHED))
    shutil.rmtree(RUN_TMP, ignore_errors=True)
    if found:
        shown = "\n  ".join(found[:20]) + (f"\n  ... and {len(found) - 20} more" if len(found) > 20 else "")
        print(f"\nthe tests wrote outside their temporary folders ({len(found)} paths; the checkout and "
              f"{SHARED_DATA} must stay as they were, and nothing may write below ~ without asking a cache "
              f"variable; ~ was {RUN_TMP / 'home'}):\n  {shown}", file=sys.stderr)
        if session.exitstatus == 0:
            session.exitstatus = 1


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _no_leaked_progress_ticker():
    """A study's progress ticker left running writes into later tests' output every 30 s: each test
    closes the ones it starts."""
    import threading

    yield
    leaked = [t for t in threading.enumerate() if t.name == "study-progress" and t.is_alive()]
    assert not leaked, "a StudyProgress was left running (call close())"


def shared_data_shadow() -> Path | None:
    """A writable stand-in for the real datasets folder (its folders real, its files links to the
    real ones), made once per run; ``None`` when the real data is absent."""
    if not SHARED_DATA.is_dir():
        return None
    dst = RUN_TMP / "shared" / "data"
    if not dst.is_dir():
        hygiene.shadow_tree(SHARED_DATA, dst)
    return dst


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real datasets (../shared/data) through a writable shadow, so label caches and other files
    tools write beside them stay in the run's temporary folder; skips the test when absent."""
    shadow = shared_data_shadow()
    if shadow is None:
        pytest.skip(f"real data not found at {SHARED_DATA} (set NOSTRIDE_SHARED_DATA)")
    return shadow


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
