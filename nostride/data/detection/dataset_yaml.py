"""Dataset YAML files as YOLOv5 / ultralytics write them (``coco128.yaml``, ``coco.yaml``, ``VisDrone.yaml``).

Keys:

* ``path``: the dataset root. A relative root is taken relative to the YAML file's folder; when
  nothing exists there, relative to the working directory (YOLOv5 resolves it from where it runs,
  so its ``path: ../datasets/coco`` files keep working when run from the YOLOv5 folder).
* ``train``, ``val``, ``test``: each a folder of images, a ``.txt`` list of image paths, a COCO
  ``instances_*.json`` file, or a list of any of these; relative to ``path`` (or, failing that,
  to the YAML file's folder). ``test`` is optional; ``val`` may be missing for a training-only set.
* ``names``: a list, or a ``{id: name}`` mapping with ids ``0..nc-1``.
* ``nc`` (optional): checked against ``names``.
* ``download``: ignored with a one-line note (nothing is downloaded).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...utils.yamlio import read_yaml

__all__ = ["DetectionDataConfig", "load_data_yaml", "SPLITS"]

SPLITS = ("train", "val", "test")


@dataclass
class DetectionDataConfig:
    """A parsed dataset YAML with every split resolved to existing paths.

    Attributes:
        names: class names, index = class id.
        root: the dataset root (``path``), resolved.
        train, val, test: the split's sources (folders, ``.txt`` lists or COCO json files), each an
            existing absolute path; ``None`` when the YAML has no such split.
        yaml_file: the YAML file read (``None`` for a dict).
        extra: the YAML's other keys, untouched.
    """

    names: list[str]
    root: Path
    train: list[Path] | None = None
    val: list[Path] | None = None
    test: list[Path] | None = None
    yaml_file: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def nc(self) -> int:
        """Number of classes."""
        return len(self.names)

    def split(self, name: str) -> list[Path]:
        """The sources of split ``name`` (``"train"``, ``"val"`` or ``"test"``); a clear error if absent."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r} (expected one of {', '.join(SPLITS)})")
        sources = getattr(self, name)
        if not sources:
            where = self.yaml_file or "the dataset definition"
            raise ValueError(f"{where}: no '{name}' split defined (keys: {', '.join(s for s in SPLITS if getattr(self, s))})")
        return sources


def _nc(data: dict[str, Any], where: str) -> int | None:
    """The YAML's ``nc`` checked: absent, or a whole number of classes within the bound."""
    from ...utils.bounds import MAX_CLASSES, check_int

    nc = data.get("nc")
    if nc is None:
        return None
    if not isinstance(nc, (int, float)) or isinstance(nc, bool):
        raise ValueError(f"{where}: 'nc' must be the number of classes (a whole number), got {nc!r}")
    try:
        return check_int("'nc'", nc, 1, MAX_CLASSES, what=" (the number of classes)")
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def _names(data: dict[str, Any], where: str) -> list[str]:
    names = data.get("names")
    nc = _nc(data, where)
    if names is None:
        if nc is None:
            raise ValueError(f"{where}: no 'names' (a list of class names or an {{id: name}} mapping)")
        names = [f"class{i}" for i in range(nc)]
    if isinstance(names, dict):
        try:
            keys = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: 'names' mapping keys must be integer class ids, got {list(names)[:5]}") from None
        if keys != list(range(len(keys))):
            raise ValueError(f"{where}: 'names' ids must be 0..{len(keys) - 1} without gaps, got {keys[:10]}")
        names = [names[k] if k in names else names[str(k)] for k in keys]
    elif not isinstance(names, (list, tuple)):
        raise ValueError(f"{where}: 'names' must be a list or an {{id: name}} mapping, got {type(names).__name__}")
    names = [str(n) for n in names]
    if not names:
        raise ValueError(f"{where}: 'names' is empty")
    if nc is not None and nc != len(names):
        raise ValueError(f"{where}: nc is {nc} but 'names' lists {len(names)} classes")
    return names


def _resolve_root(value: Any, base: Path) -> Path:
    if value in (None, ""):
        return base
    p = Path(str(value)).expanduser()
    if p.is_absolute():
        return p
    if (base / p).exists():
        return (base / p).resolve()
    if p.exists():  # relative to the working directory, as YOLOv5 reads it
        return p.resolve()
    return (base / p).resolve()


def _resolve_split(key: str, value: Any, root: Path, base: Path, where: str) -> list[Path] | None:
    if value in (None, ""):
        return None
    items = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for item in items:
        p = Path(str(item)).expanduser()
        candidates = [p] if p.is_absolute() else [root / p, base / p]
        found = next((c for c in candidates if c.exists()), None)
        if found is None:
            raise FileNotFoundError(f"{where}: '{key}' path not found: {candidates[0]}")
        out.append(found.resolve())
    return out


def load_data_yaml(data: str | os.PathLike | dict[str, Any]) -> DetectionDataConfig:
    """Read a dataset YAML (or an equivalent dict) and resolve its splits.

    Args:
        data: path of the YAML file, or its content as a dict (relative paths then resolve against
            the working directory), or a built-in dataset (``"builtin:small-objects"``).

    Returns:
        A :class:`DetectionDataConfig`.

    Raises:
        FileNotFoundError: the YAML file, or a split's path, does not exist (the message names the
            key and the path).
        ValueError: malformed YAML, ``names`` / ``nc`` missing or inconsistent.
    """
    from ..builtin import is_builtin, resolve_builtin

    if is_builtin(data):  # builtin:small-objects[@options]: generated into the cache on first use
        data = resolve_builtin(str(data)) / "data.yaml"
    if isinstance(data, dict):
        content, yaml_file, base, where = dict(data), None, Path.cwd(), "dataset dict"
    else:
        yaml_file = Path(data).expanduser()
        if yaml_file.is_dir():
            raise ValueError(f"{yaml_file} is a folder; detection data is a dataset YAML file "
                             "(keys path, train, val, names; see docs/data.md)")
        if not yaml_file.is_file():
            raise FileNotFoundError(f"dataset YAML not found: {yaml_file}")
        where = str(yaml_file)
        content = read_yaml(yaml_file)
        if not isinstance(content, dict):
            raise ValueError(f"{yaml_file}: expected a mapping with keys path, train, val, names")
        yaml_file = yaml_file.resolve()
        base = yaml_file.parent
    names = _names(content, where)
    if content.get("download"):
        print(f"note: {where}: the 'download' key is ignored (nostride does not download datasets)", file=sys.stderr)
    root = _resolve_root(content.get("path"), base)
    splits = {k: _resolve_split(k, content.get(k), root, base, where) for k in SPLITS}
    if not any(splits.values()):
        raise ValueError(f"{where}: no 'train', 'val' or 'test' split given")
    extra = {k: v for k, v in content.items() if k not in (*SPLITS, "path", "names", "nc")}
    return DetectionDataConfig(names=names, root=root, yaml_file=yaml_file, extra=extra, **splits)
