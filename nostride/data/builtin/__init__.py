"""Built-in datasets, generated on the fly (seeded, no download) in the standard on-disk layouts.

``lowres``
    low-resolution classification whose classes differ in fine detail (image-folder layout).
``small-objects``
    small-object detection on cluttered backgrounds (YOLO layout with ``data.yaml`` plus COCO json).

``make_builtin(name, folder, **options)`` writes one (``nostride data make``); a data source
``"builtin:NAME"`` (or ``"builtin:NAME@key=value,..."``) is generated once into the cache folder
(``builtin/`` in :func:`nostride.utils.cache.user_cache_dir`: ``$NOSTRIDE_CACHE``, else
``$XDG_CACHE_HOME/nostride``, else ``~/.cache/nostride``) and read from there afterwards. docs/data.md has the
dataset cards.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ...utils.atomic import atomic_write_text
from ...utils.cache import user_cache_dir
from ...utils.specs import parse_spec
from .lowres import LOWRES_DEFAULTS, make_lowres
from .small_objects import SMALL_OBJECTS_DEFAULTS, make_small_objects

__all__ = ["BUILTIN_PREFIX", "BUILTINS", "BuiltinDataset", "builtin_img_size", "builtin_options", "cache_dir",
           "is_builtin", "make_builtin", "resolve_builtin"]

BUILTIN_PREFIX = "builtin:"
GENERATOR_VERSION = 1  # bump when a generator's output changes: cached copies are then made again
_CARD = "builtin.json"  # written last: its presence marks a complete dataset


@dataclass(frozen=True)
class BuiltinDataset:
    """A built-in dataset: its generator, task and defaults."""

    name: str
    task: str  # "classify" or "detect"
    make: Callable[..., Path]
    defaults: dict[str, Any]
    description: str


BUILTINS: dict[str, BuiltinDataset] = {
    "lowres": BuiltinDataset("lowres", "classify", make_lowres, LOWRES_DEFAULTS,
                             "32 px patches of 10 fine textures (1-3 pixel periods) on cluttered backgrounds"),
    "small-objects": BuiltinDataset("small-objects", "detect", make_small_objects, SMALL_OBJECTS_DEFAULTS,
                                    "256 px images with 3-12 small look-alike shapes (8 classes) on cluttered "
                                    "backgrounds; YOLO layout + COCO json"),
}


def is_builtin(source: Any) -> bool:
    """True for a ``"builtin:NAME..."`` data source."""
    return isinstance(source, str) and source.startswith(BUILTIN_PREFIX)


def builtin_options(name: str, **options: Any) -> dict[str, Any]:
    """The full option set of built-in ``name`` (defaults < ``options``), checked against its generator.

    Raises:
        ValueError: unknown dataset or option (the message lists what exists).
    """
    if name not in BUILTINS:
        raise ValueError(f"unknown built-in dataset {name!r}; available: {', '.join(BUILTINS)}")
    ds = BUILTINS[name]
    accepted = [p for p in inspect.signature(ds.make).parameters if p not in ("root", "progress")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"built-in dataset {name!r} has no option {', '.join(map(repr, unknown))}; "
                         f"options: {', '.join(accepted)}")
    merged = {**ds.defaults, **options}
    for k, v in merged.items():  # keep the defaults' types (e.g. difficulty=1 -> 1.0) so cache keys agree
        d = ds.defaults.get(k)
        if isinstance(d, float) and isinstance(v, int) and not isinstance(v, bool):
            merged[k] = float(v)
        elif d is not None and not isinstance(v, type(d)):
            raise ValueError(f"built-in dataset {name!r}: option {k} must be {type(d).__name__}, got {v!r}")
    from ...utils.bounds import MAX_SEED, check_float, check_img_size, check_int

    for k, v in merged.items():  # sizes and counts a generator can make without exhausting memory or disk
        what = f"built-in dataset {name!r}: option {k}"
        if k == "img_size":
            check_img_size(v, what)
        elif k == "seed":
            check_int(what, v, 0, MAX_SEED)
        elif isinstance(v, int) and not isinstance(v, bool):
            check_int(what, v, 0, _MAX_IMAGES, what=" (images)")
        elif isinstance(v, float):
            check_float(what, v, 0, None)
    return merged


_MAX_IMAGES = 1_000_000  # per class or split of a generated dataset


def builtin_img_size(source: Any) -> int | None:
    """The image size a ``"builtin:NAME[@options]"`` source is generated at (None for other sources)."""
    if not is_builtin(source):
        return None
    name, options = parse_spec(source[len(BUILTIN_PREFIX):], "data source")
    size = builtin_options(name, **options).get("img_size")
    return int(size) if size is not None else None


def _print_progress(name: str) -> Callable[[int, int], None]:
    start = time.monotonic()

    def report(done: int, total: int) -> None:
        if sys.stderr.isatty():
            print(f"\rgenerating {name}: {done}/{total} images ({time.monotonic() - start:.0f}s)", end="",
                  file=sys.stderr, flush=True)
    return report


def make_builtin(name: str, root: str | os.PathLike, *, quiet: bool = False, **options: Any) -> Path:
    """Write built-in dataset ``name`` into the folder ``root`` (which must be empty or absent) and a
    ``builtin.json`` card recording how it was made; returns ``root``.

    Args:
        name: ``"lowres"`` or ``"small-objects"`` (see :data:`BUILTINS`).
        options: generator options (image size, images per split, difficulty, seed, ...).
    """
    opts = builtin_options(name, **options)
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise ValueError(f"{root}: folder is not empty; choose a new folder for the dataset")
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # thousands of tiny tensor ops: threads only add contention
    try:
        BUILTINS[name].make(root, progress=None if quiet else _print_progress(name), **opts)
    finally:
        torch.set_num_threads(threads)
    if not quiet and sys.stderr.isatty():
        print(file=sys.stderr)
    card = {"name": name, "task": BUILTINS[name].task, "options": opts, "generator_version": GENERATOR_VERSION,
            "seconds": round(time.monotonic() - t0, 1)}
    atomic_write_text(root / _CARD, json.dumps(card, indent=2))
    return root


def cache_dir() -> Path:
    """Where ``builtin:`` datasets are generated: ``builtin/`` in the user cache folder
    (:func:`nostride.utils.cache.user_cache_dir`)."""
    return user_cache_dir() / "builtin"


def resolve_builtin(source: str, quiet: bool = False) -> Path:
    """The folder of ``"builtin:NAME[@options]"``, generated into :func:`cache_dir` on first use.

    Concurrent callers (e.g. parallel compare jobs) are safe: each generates into its own temporary
    folder and the first to finish renames it into place.
    """
    if not is_builtin(source):
        raise ValueError(f"not a built-in data source: {source!r} (expected builtin:NAME)")
    name, options = parse_spec(source[len(BUILTIN_PREFIX):], "data source")
    opts = builtin_options(name, **options)
    key = hashlib.sha1(json.dumps([name, opts, GENERATOR_VERSION], sort_keys=True).encode()).hexdigest()[:10]
    target = cache_dir() / f"{name}-{key}"
    if (target / _CARD).is_file():
        return target
    tmp = target.parent / f".{target.name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    if not quiet:
        print(f"{source}: generating into {target} (once; later runs read it from there)", flush=True)
    make_builtin(name, tmp, quiet=quiet, **opts)
    try:
        os.rename(tmp, target)
    except OSError:  # another process finished first (or a stale incomplete copy is in the way)
        if (target / _CARD).is_file():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            shutil.rmtree(target, ignore_errors=True)
            os.rename(tmp, target)
    return target
