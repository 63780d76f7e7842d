"""``extract_subset``: unpack N images per class from a dataset archive in one streaming pass.

Tests and quick runs need a few hundred images, not 60,000; this reads the (compressed) tar once,
front to back, and writes only what is kept.
"""

from __future__ import annotations

import os
import posixpath
import tarfile
from pathlib import Path, PurePosixPath
from typing import Iterable

from ...utils.atomic import atomic_write_bytes
from ..files import is_image_file

__all__ = ["extract_subset"]

_SPLITS = ("train", "val", "test")
_META_MAX_BYTES = 16 << 20  # metadata files outside the split folders (wnids.txt, words.txt, README)


def _safe_parts(name: str) -> tuple[str, ...] | None:
    # refuse absolute paths and '..' (path traversal); drop '.' components
    norm = posixpath.normpath(name)
    if norm.startswith("/") or norm == "." or norm.split("/")[0] == "..":
        return None
    return tuple(p for p in PurePosixPath(norm).parts if p not in ("", "."))


def extract_subset(tar_path: str | os.PathLike, out_dir: str | os.PathLike, per_class: int = 20,
                   splits: Iterable[str] = ("train", "test")) -> Path:
    """Extract the first ``per_class`` images of every class of the chosen ``splits`` from a tar archive.

    Handles an image-folder archive (``[prefix/]{train,test,val}/<class>/<images>``, e.g. the shared
    ``cifar10-jpg.tar.gz``) and a Tiny ImageNet archive (``tiny-imagenet-200/{wnids.txt, words.txt,
    train/<wnid>/images/, val/images/ + val/val_annotations.txt}``). "First" means archive order.
    Metadata files outside the split folders are kept. For Tiny ImageNet, ``"test"`` (or ``"val"``)
    selects the labelled ``val/`` split (its ``test/`` has no labels and is skipped); the written
    ``val_annotations.txt`` lists only the extracted images. Its ``val/images`` members are held in
    memory until the annotations (stored after them) have been read.

    Args:
        tar_path: ``.tar``, ``.tar.gz`` / ``.tgz`` (any compression tarfile reads).
        out_dir: destination folder (created).
        per_class: images kept per class and split.
        splits: split folder names to extract.

    Returns:
        The dataset root inside ``out_dir`` (the folder holding the split folders), ready for
        :func:`build_classification_data`.
    """
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    tar_path, out_dir = Path(tar_path), Path(out_dir)
    if not tar_path.is_file():
        raise FileNotFoundError(f"archive not found: {tar_path}")
    wanted = set(splits)
    unknown = wanted - set(_SPLITS)
    if unknown:
        raise ValueError(f"splits must be among {_SPLITS}, got {sorted(unknown)}")
    out_dir.mkdir(parents=True, exist_ok=True)

    counts: dict[tuple[str, ...], int] = {}
    roots: list[tuple[str, ...]] = []
    pending_val: dict[tuple[str, ...], bytes] = {}  # Tiny ImageNet val/images/<file>, waiting for labels
    annotations: tuple[tuple[str, ...], bytes] | None = None
    tiny_prefixes: set[tuple[str, ...]] = set()

    def write(parts: tuple[str, ...], data: bytes) -> None:
        atomic_write_bytes(out_dir.joinpath(*parts), data, clean_stale=False, sync=False)

    try:
        tar = tarfile.open(tar_path, mode="r|*")
    except tarfile.TarError as e:
        raise ValueError(f"{tar_path}: not a readable tar archive ({e})") from None
    with tar:
        for member in tar:
            if not member.isfile():
                continue
            parts = _safe_parts(member.name)
            if not parts:
                continue
            split_at = next((i for i, p in enumerate(parts[:-1]) if p in _SPLITS), None)
            if split_at is None:
                if parts[-1] == "wnids.txt":
                    tiny_prefixes.add(parts[:-1])
                if member.size <= _META_MAX_BYTES:
                    write(parts, tar.extractfile(member).read())
                continue
            prefix, split, rest = parts[:split_at], parts[split_at], parts[split_at + 1:]
            if split == "val" and rest == ("val_annotations.txt",):
                if not wanted & {"val", "test"}:
                    continue
                annotations = (parts, tar.extractfile(member).read())
                continue
            if len(rest) < 2 or not is_image_file(rest[-1]):
                continue
            if prefix in tiny_prefixes and split == "test":
                continue  # Tiny ImageNet's test/ is unlabelled
            if split == "val" and rest[0] == "images" and len(rest) == 2 and wanted & {"val", "test"}:
                pending_val[parts] = tar.extractfile(member).read()  # decided once labels are known
                continue
            if split not in wanted:
                continue
            key = prefix + (split, rest[0])
            if counts.get(key, 0) >= per_class:
                continue
            counts[key] = counts.get(key, 0) + 1
            if prefix not in roots:
                roots.append(prefix)
            write(parts, tar.extractfile(member).read())

    if annotations is not None:
        ann_parts, text = annotations
        prefix = ann_parts[:-2]
        kept_lines, per_wnid = [], {}
        for line in text.decode("utf-8").splitlines():
            fields = line.split("\t") if "\t" in line else line.split()
            if len(fields) < 2:
                continue
            img_parts = prefix + ("val", "images", fields[0])
            if img_parts in pending_val and per_wnid.get(fields[1], 0) < per_class:
                per_wnid[fields[1]] = per_wnid.get(fields[1], 0) + 1
                write(img_parts, pending_val.pop(img_parts))
                kept_lines.append(line)
        write(ann_parts, ("\n".join(kept_lines) + "\n").encode("utf-8"))
        if prefix not in roots:
            roots.append(prefix)
    # val/images/* without annotations: an image folder whose class happens to be called "images"
    for parts, data in pending_val.items():
        if annotations is not None and parts[:-3] == annotations[0][:-2]:
            continue  # Tiny ImageNet val image beyond per_class
        key = parts[:-1]
        if parts[-3] in wanted and counts.get(key, 0) < per_class:
            counts[key] = counts.get(key, 0) + 1
            write(parts, data)
            if parts[:-3] not in roots:
                roots.append(parts[:-3])

    if not roots:
        raise ValueError(f"{tar_path}: no images under train/, val/ or test/ split folders")
    return out_dir.joinpath(*roots[0])
