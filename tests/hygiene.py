"""What a test run may not touch: the checkout, the shared datasets and the user's caches.

``isolate_environment`` points every cache and settings variable nostride and its optional
packages read (nostride, XDG, torch hub, Hugging Face, Keras, matplotlib, ultralytics) at one
temporary folder for the whole run, and ``HOME`` at an empty one, so nothing can land in the user's
home: a file that appears in the stand-in home was written by code that ignores the variables.
``snapshot`` records the files of the folders a run must leave alone; ``changes`` names what
differs afterwards.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CACHE_VARIABLES", "changes", "isolate_environment", "shadow_tree", "snapshot"]

# variable -> sub-folder of the run's temporary folder
CACHE_VARIABLES = {
    "NOSTRIDE_CACHE": "nostride",
    "XDG_CACHE_HOME": "xdg-cache",
    "XDG_CONFIG_HOME": "xdg-config",
    "XDG_DATA_HOME": "xdg-data",
    "TORCH_HOME": "torch",
    "HF_HOME": "huggingface",
    "KERAS_HOME": "keras",
    "MPLCONFIGDIR": "matplotlib",
    "YOLO_CONFIG_DIR": "ultralytics",  # ultralytics' settings.json and fonts
}
# folders (beside the checkout) that the tests' own bookkeeping may write
_RUN_ARTEFACTS = {".pytest_cache", "__pycache__", ".git", ".venv"}


def isolate_environment(root: Path) -> dict[str, str]:
    """Set every variable of :data:`CACHE_VARIABLES` to a folder below ``root / "cache"`` and ``HOME`` to
    the empty ``root / "home"`` (code that writes below ``~`` without asking a variable lands there);
    returns the old values (``""`` for unset ones)."""
    old = {"HOME": os.environ.get("HOME", "")}
    (root / "home").mkdir(parents=True, exist_ok=True)
    os.environ["HOME"] = str(root / "home")
    for var, sub in CACHE_VARIABLES.items():
        old[var] = os.environ.get(var, "")
        (root / "cache" / sub).mkdir(parents=True, exist_ok=True)
        os.environ[var] = str(root / "cache" / sub)
    os.environ.setdefault("YOLO_OFFLINE", "1")  # never contact the network
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    return old


def snapshot(folders: list[Path], skip: set[str] = _RUN_ARTEFACTS) -> dict[str, tuple[int, int]]:
    """path -> (size, modification time) of every file and folder below ``folders`` (absent ones
    count as empty), leaving out folders named in ``skip``."""
    out: dict[str, tuple[int, int]] = {}
    for folder in folders:
        if not folder.exists():
            continue
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames[:] = [d for d in dirnames if d not in skip]
            for name in filenames + dirnames:
                p = os.path.join(dirpath, name)
                try:
                    st = os.lstat(p)
                except OSError:
                    continue
                out[p] = (st.st_size if not os.path.isdir(p) else 0, st.st_mtime_ns)
    return out


def changes(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> list[str]:
    """``"added X"``, ``"removed X"``, ``"changed X"`` lines (folders whose listing changed show up as
    changed; their new files as added)."""
    lines = [f"added {p}" for p in sorted(after.keys() - before.keys())]
    lines += [f"removed {p}" for p in sorted(before.keys() - after.keys())]
    lines += [f"changed {p}" for p in sorted(before.keys() & after.keys())
              if before[p] != after[p] and not os.path.isdir(p)]
    return lines


def shadow_tree(src: Path, dst: Path) -> Path:
    """``dst`` laid out as ``src`` with real folders and symbolic links to its files: reads see the
    real data, files that tools write beside it (label caches) land in ``dst``."""
    for dirpath, dirnames, filenames in os.walk(src):
        rel = Path(dirpath).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for name in filenames:
            link = dst / rel / name
            if not link.exists():
                link.symlink_to(Path(dirpath) / name)
    return dst
