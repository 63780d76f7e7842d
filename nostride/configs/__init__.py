"""The training recipes shipped with nostride (the paper's, and CPU-sized smoke runs): ``--config NAME``.

Each is a YAML file of ``nostride train`` options; ``--config resnet18_spd_cifar10`` (or the file
name, or ``configs/resnet18_spd_cifar10.yaml`` as in a checkout) finds one from any folder. Dataset
paths in them (``data: data/cifar10``) are relative to where the command runs; ``--data`` overrides
them.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CONFIG_DIR", "packaged_configs", "find_config"]

CONFIG_DIR = Path(__file__).resolve().parent


def packaged_configs() -> list[str]:
    """Names of the shipped recipes."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def find_config(config: str | os.PathLike) -> Path:
    """``config`` itself when it is a file, else the shipped recipe of that name (``NAME``,
    ``NAME.yaml`` or ``configs/NAME.yaml``).

    Raises:
        FileNotFoundError: neither (the message lists the shipped recipes).
    """
    path = Path(config)
    if path.is_file():
        return path
    packaged = CONFIG_DIR / f"{path.name[:-5] if path.name.endswith('.yaml') else path.name}.yaml"
    if packaged.is_file() and (path.parent == Path(".") or path.parent.name == "configs"):
        return packaged
    raise FileNotFoundError(f"config file not found: {path} (shipped recipes, by name: "
                            f"{', '.join(packaged_configs())})")
