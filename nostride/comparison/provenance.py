"""What makes a study reproducible, recorded in its report: library versions, device, threads per run,
the exact command and a digest of the data."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any
from ..utils.numbers import plural

__all__ = ["versions", "data_digest", "study_provenance", "provenance_markdown", "python_call", "run_environments"]

# files that tools write next to data (label caches, a built-in set's card with its generation time):
# not part of the data
_SKIP_SUFFIXES = (".nostride-cache.npz", ".cache")
_SKIP_NAMES = {"builtin.json"}
CONTENT_LIMIT = 2 << 30  # above 2 GiB the digest covers file names and sizes, not contents (minutes of reading)


def versions() -> dict[str, str]:
    """nostride, torch, torchvision, numpy and Python versions of this process."""
    import numpy
    import torch
    import torchvision

    import nostride

    return {"nostride": nostride.__version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "numpy": numpy.__version__, "python": platform.python_version()}


def _data_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or name in _SKIP_NAMES or name.endswith(_SKIP_SUFFIXES):
                continue
            files.append(Path(dirpath) / name)
    return files


def _data_roots(data: str) -> list[Path]:
    """The files and folders that hold ``data``: a built-in set's generated folder, a dataset YAML and
    its root, an image folder or archive."""
    from nostride.data.builtin import is_builtin, resolve_builtin

    if is_builtin(data):
        return [resolve_builtin(data, quiet=True)]
    path = Path(data)
    if path.is_file() and path.suffix in (".yaml", ".yml"):
        from nostride.data.detection import load_data_yaml

        root = load_data_yaml(str(path)).root
        return [path] + ([root] if root.exists() and root.resolve() != path.parent.resolve() else [])
    return [path] if path.exists() else []


def data_digest(data: str) -> dict[str, Any]:
    """SHA-256 over the data's files (relative path and contents, in sorted order).

    Returns ``{"sha256", "files", "bytes", "covers"}``; ``covers`` is ``"contents"``, or ``"names and
    sizes"`` above :data:`CONTENT_LIMIT`; ``sha256`` is ``None`` when ``data`` is not on this machine.
    """
    roots = _data_roots(str(data))
    if not roots:
        return {"sha256": None, "files": 0, "bytes": 0, "covers": "not a local path"}
    entries = [(root, f) for root in roots for f in _data_files(root)]
    total = sum(f.stat().st_size for _, f in entries)
    contents = total <= CONTENT_LIMIT
    h = hashlib.sha256()
    for root, f in entries:
        rel = f.name if root.is_file() else f.relative_to(root).as_posix()
        h.update(f"{rel}\0{f.stat().st_size}\0".encode())
        if contents:
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    return {"sha256": h.hexdigest(), "files": len(entries), "bytes": total,
            "covers": "contents" if contents else "names and sizes"}


def python_call(function: str, **arguments: Any) -> str:
    """``nostride.compare(models='...', ...)``: the call that started a study from Python."""
    shown = ", ".join(f"{k}={v!r}" for k, v in arguments.items() if v is not None)
    return f"{function}({shown})"


def command_line(argv: list[str]) -> str:
    """The shell command of a ``nostride`` invocation from its arguments."""
    return shlex.join(["nostride", *argv])


def study_provenance(command: str, data: str, device: str, threads: int | None, launcher: str = "local",
                     cwd: str | None = None) -> dict[str, Any]:
    """Everything the report records to make the study reproducible."""
    return {"command": command, "cwd": cwd or os.getcwd(), "versions": versions(), "platform": platform.platform(),
            "executable": sys.executable, "device": device, "threads_per_run": threads, "launcher": launcher,
            "data": {"source": str(data), **data_digest(str(data))}}


def run_environments(results: list[Any]) -> list[dict[str, Any]]:
    """The ``environment.json`` that cluster jobs wrote into the finished runs' folders."""
    out = []
    for r in results:
        path = Path(r.run.folder) / "environment.json"
        if not r.error and path.is_file():
            try:
                out.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
    return out


def provenance_markdown(record: dict[str, Any], run_environments: list[dict[str, Any]] | None = None) -> str:
    """The report's "Reproducing this study" section."""
    v = record["versions"]
    data = record["data"]
    digest = (f"sha256 `{data['sha256']}` over {data['files']} files ({data['bytes'] / 1e6:.1f} MB, "
              f"{data['covers']})" if data["sha256"] else f"no digest ({data['covers']})")
    lines = ["## Reproducing this study", "",
             "```bash", record["command"], "```", "",
             f"- run in `{record['cwd']}`; runs trained by: {record['launcher']}",
             f"- versions: nostride {v['nostride']}, torch {v['torch']}, torchvision {v['torchvision']}, "
             f"numpy {v['numpy']}, Python {v['python']} ({record['platform']})",
             f"- device: {record['device']}; threads per run: {record['threads_per_run'] or 'default'}",
             f"- data `{data['source']}`: {digest}"]
    others = sorted({json.dumps(e.get("versions"), sort_keys=True) for e in run_environments or []} -
                    {json.dumps(v, sort_keys=True)})
    if run_environments:
        hosts = sorted({e.get("host", "?") for e in run_environments})
        lines.append(f"- runs trained on {plural(len(hosts), 'host')}: {', '.join(hosts[:8])}{' ...' if len(hosts) > 8 else ''}")
    for other in others:
        o = json.loads(other) or {}
        lines.append("- some runs trained with other versions: " + ", ".join(f"{k} {val}" for k, val in o.items()))
    return "\n".join(lines) + "\n"
