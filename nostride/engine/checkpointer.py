"""Training checkpoints: the full trainer state in the nostride format, loadable with weights_only=True.

Besides the model keys of :mod:`nostride.checkpoint` (model_name, model_kwargs, task, model, ema,
names, epoch), a training checkpoint holds ``optimizer``, ``scheduler``, ``scaler``, ``ema_updates``,
``best_fitness``, ``metrics`` (validation metrics of that epoch), ``config`` (plain dict of the
:class:`TrainConfig`) and ``rng`` (torch, cuda, numpy and python ``random`` states as tensors and
lists: NumPy arrays and tuples are converted so the file stays free of pickled objects).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["capture_rng_state", "restore_rng_state", "to_plain", "resolve_resume_path", "check_resumable",
           "absolute_data_path"]


def capture_rng_state() -> dict[str, Any]:
    """All RNG states as weights_only-safe data."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [str(kind), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": [int(version), list(internal), gauss_next],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state` (CUDA states are restored only when GPU counts match)."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


def to_plain(obj: Any) -> Any:
    """Tensors to lists/floats, tuples to lists, recursively (for metrics in YAML/JSON/checkpoints)."""
    if isinstance(obj, torch.Tensor):
        return obj.item() if obj.ndim == 0 else obj.tolist()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    return obj


def resolve_resume_path(resume: str | bool, project: str, name: str | None = None) -> Path:
    """Where ``--resume`` points: a ``last.pt`` file, a run folder (its ``weights/last.pt``), or
    ``True``: the most recent run under PROJECT (the newest ``weights/last.pt`` at any depth, as
    YOLOv5 does), or PROJECT/NAME when a ``name`` is given and that run exists."""
    if resume is True or resume == "True":
        own = Path(project) / name / "weights" / "last.pt" if name else None
        if own is not None and own.is_file():
            return own
        candidates = sorted(Path(project).glob("**/weights/last.pt"), key=lambda p: p.stat().st_mtime)
        if not candidates:
            raise FileNotFoundError(f"--resume: no weights/last.pt found under {project}")
        return candidates[-1]
    path = Path(resume)
    if path.is_dir():
        path = path / "weights" / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"--resume: checkpoint not found: {path}")
    return path


def check_resumable(ckpt: dict[str, Any], path: str | Path) -> None:
    """Raise a one-line ValueError unless ``ckpt`` holds a full training state (optimizer, scheduler)."""
    missing = [k for k in ("optimizer", "scheduler", "config") if not isinstance(ckpt.get(k), dict)]
    if not missing:
        return
    path = Path(path)
    if path.name == "best.pt" or ("optimizer" in missing and isinstance(ckpt.get("config"), dict)):
        raise ValueError(f"{path}: holds no optimizer state (best.pt keeps only the weights, for evaluation and "
                         f"deployment); resume from last.pt: nostride train --resume {path.with_name('last.pt')}")
    raise ValueError(f"{path}: not a training checkpoint (no {', '.join(missing)}); cannot resume from it "
                     "(start a new run from its weights with --weights instead)")


def absolute_data_path(data: str) -> str:
    """``data`` made absolute when it names an existing file or folder (so a run can be resumed or
    evaluated from another working directory); other sources (``builtin:NAME``...) unchanged."""
    if not data or not isinstance(data, str):
        return data
    scheme = data.split(":", 1)[0] if ":" in data else ""
    if len(scheme) > 1 and scheme.isidentifier() and not Path(data).exists():  # builtin:..., torchvision:...
        return data
    p = Path(data).expanduser()
    return str(p.resolve()) if p.exists() else data
