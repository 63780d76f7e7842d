"""A study's folder: which study it holds (its identity, in ``study.json``), found again or made anew.

A study is its task and the training options every run shares; the same options under the same
name continue the study in its folder, other options go to NAME2, NAME3, ... Options that change
how fast runs go but not what they compute (device, DataLoader workers, the image cache) are left
out, so adding ``--set cache=ram`` or moving to another device continues a study.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..utils.atomic import atomic_write_text
from ..utils.paths import increment_path

__all__ = ["STUDY_VERSION", "find_study", "open_study", "same_study", "study_identity"]

STUDY_VERSION = 1

# options that change how fast runs go, not what they compute: not part of a study's identity
_NOT_IDENTITY = ("device", "workers", "cache")


def same_study(stored: Any, identity: dict[str, Any]) -> bool:
    """Whether a study card's identity is this one's (earlier versions kept ``cache`` among detection's
    task options, and in the identity: a cache never changes what a run computes)."""
    if not isinstance(stored, dict):
        return False
    common = dict(stored.get("common") or {})
    for key in _NOT_IDENTITY:
        common.pop(key, None)
    if isinstance(common.get("task_options"), dict):
        common["task_options"] = {k: v for k, v in common["task_options"].items() if k != "cache"}
        if not common["task_options"]:
            common.pop("task_options")
    return {**stored, "common": common} == identity


def find_study(project: str | Path, name: str, identity: dict[str, Any]) -> Path | None:
    """The existing folder PROJECT/NAME[k] of the study with this identity, or ``None``."""
    path = Path(project) / name
    for p in [path] + [Path(f"{path}{k}") for k in range(2, 10000)]:
        if not p.exists():
            return None
        try:
            if same_study(json.loads((p / "study.json").read_text()).get("identity"), identity):
                return p
        except (OSError, ValueError):
            continue
    return None


def open_study(project: str | Path, name: str, identity: dict[str, Any]) -> tuple[Path, bool]:
    """The study folder: PROJECT/NAME continued when it holds the same study, else a new NAME2, NAME3..."""
    path = Path(project) / name
    candidates = [path] + [Path(f"{path}{k}") for k in range(2, 10000)]
    for p in candidates:
        card = p / "study.json"
        if not p.exists():
            break
        if card.is_file():
            try:
                if same_study(json.loads(card.read_text()).get("identity"), identity):
                    return p, True
            except ValueError:
                pass
    p = increment_path(path, exist_ok=False)
    atomic_write_text(p / "study.json", json.dumps({"identity": identity, "version": STUDY_VERSION}, indent=2))
    return p, False


def study_identity(task: str, common: dict[str, Any]) -> dict[str, Any]:
    """What makes two studies the same: the task and the shared training options, less those that
    change only speed."""
    return {"task": task, "common": {k: common[k] for k in sorted(common) if k not in _NOT_IDENTITY}}
