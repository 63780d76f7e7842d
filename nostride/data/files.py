"""Finding images: which names are images, and a folder walk that never enters a folder twice.

:func:`walk_image_files` lists the images under a folder without ever entering a folder twice: a
link to a folder inside the walked tree (or to one of its ancestors) would duplicate or loop and is
skipped with a warning; links to files and to folders outside the tree are followed.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Sequence

from ..utils.numbers import plural

__all__ = ["IMAGE_EXTENSIONS", "is_image_file", "list_images", "walk_image_files"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def is_image_file(path: str | os.PathLike) -> bool:
    """True if the file name has a known image extension (case-insensitive)."""
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def walk_image_files(folder: str | os.PathLike, tree: str | os.PathLike | None = None,
                     warn: bool = True) -> list[Path]:
    """Image files under ``folder`` (recursively; sorted by folder, then name), each folder entered once.

    Links to files are followed. An entry with an image's name that is not a regular file (a
    FIFO, a device, a link to one) is listed too: :func:`read_image_rgb` refuses it by name
    without opening it, so it is reported and counted like any unreadable image. A link to a folder is followed only when its target lies outside
    ``tree`` (default: ``folder``) and does not contain it, and the target was not entered before:
    anything else would list files twice, give them another folder's label, or loop forever.
    Skipped links and broken links are reported in one ``RuntimeWarning`` (with ``warn``).

    Args:
        folder: where to start.
        tree: the whole dataset the walk is part of (e.g. the dataset root when walking one class
            folder), so that a link from one class folder into another is recognised.
        warn: emit the warning about skipped links.
    """
    folder = Path(folder)
    tree_real = os.path.realpath(tree if tree is not None else folder)
    visited: set[str] = set()
    skipped: list[str] = []
    broken: list[str] = []
    files: list[Path] = []

    def walk(path: str) -> None:
        real = os.path.realpath(path)
        if real in visited:
            return
        visited.add(real)
        try:
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except OSError as e:
            skipped.append(f"{path} (cannot be listed: {e.strerror})")
            return
        subdirs = []
        for entry in entries:
            try:
                is_dir = entry.is_dir()  # follows links
                is_file = not is_dir and entry.is_file()
            except OSError:
                is_dir = is_file = False
            if is_dir:
                if entry.is_symlink():
                    target = os.path.realpath(entry.path)
                    if _inside(target, tree_real) or _inside(tree_real, target) or target in visited:
                        skipped.append(f"{entry.path} -> {os.readlink(entry.path)}")
                        continue
                subdirs.append(entry.path)
            elif is_file:
                if is_image_file(entry.name):
                    files.append(Path(entry.path))
            elif entry.is_symlink() and not os.path.exists(entry.path):
                broken.append(entry.path)
            elif is_image_file(entry.name):
                # a FIFO, device or socket (or a link to one) with an image's name: listed, so that
                # reading it reports it by name and counts it, instead of dropping it silently
                files.append(Path(entry.path))
        for d in subdirs:
            walk(d)

    walk(str(folder))
    if warn and (skipped or broken):
        parts = []
        if skipped:
            parts.append(f"skipped {plural(len(skipped), 'linked folder')} pointing inside the dataset or at a folder holding it "
                         f"(they would repeat or mislabel files, or loop), e.g. {skipped[0]}")
        if broken:
            parts.append(f"skipped {plural(len(broken), 'broken link')}, e.g. {broken[0]}")
        warnings.warn(f"{folder}: " + "; ".join(parts), RuntimeWarning, stacklevel=2)
    return files


def list_images(source: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """Image files of ``source``: one file, a folder (searched recursively, sorted by path) or a list of files.

    A single file or an explicit list is taken as given (whatever its extension); a folder
    contributes only files with an image extension (:data:`IMAGE_EXTENSIONS`), walked with
    :func:`walk_image_files` (no folder twice, link loops skipped with a warning).

    Raises:
        FileNotFoundError: a path does not exist.
        ValueError: a folder holds no file with an image extension.
    """
    if isinstance(source, (list, tuple)):
        files = [Path(p) for p in source]
        for f in files:
            if not f.is_file():
                raise FileNotFoundError(f"image not found: {f}")
        return files
    path = Path(source).expanduser()
    if path.is_file() or (path.exists() and not path.is_dir()):
        return [path]  # a FIFO or device is refused by name when read
    if not path.exists():
        raise FileNotFoundError(f"source not found: {path}")
    files = sorted(walk_image_files(path))
    if not files:
        raise ValueError(f"no images in {path} (extensions: {', '.join(IMAGE_EXTENSIONS)})")
    return files
