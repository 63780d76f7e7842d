"""Per-class subsets and the seeded, stratified train/val split."""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["first_per_class", "stratified_split"]


def first_per_class(labels: Sequence[int], max_per_class: int | None) -> list[int]:
    """Indices of the first ``max_per_class`` samples of each class, in their original order."""
    if max_per_class is None:
        return list(range(len(labels)))
    if max_per_class < 1:
        raise ValueError(f"max_per_class must be >= 1, got {max_per_class}")
    taken: dict[int, int] = {}
    keep = []
    for i, y in enumerate(labels):
        if taken.get(y, 0) < max_per_class:
            taken[y] = taken.get(y, 0) + 1
            keep.append(i)
    return keep


def stratified_split(labels: Sequence[int], val_fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Split positions ``0..len(labels)-1`` into (train, val), class by class.

    Each class with ``n`` samples gives ``round(val_fraction * n)`` of them to val, at least one and
    at most ``n - 1`` when ``n >= 2`` (a single-sample class stays in train), chosen by a
    ``torch.Generator`` seeded with ``seed``: the same labels, fraction and seed always give the same
    split. Both lists are sorted.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if val_fraction == 0.0:
        return list(range(len(labels))), []
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(int(y), []).append(i)
    gen = torch.Generator().manual_seed(seed)
    val: list[int] = []
    for y in sorted(by_class):
        members = by_class[y]
        n = len(members)
        k = min(max(round(val_fraction * n), 1), n - 1) if n >= 2 else 0
        perm = torch.randperm(n, generator=gen).tolist()
        val += [members[p] for p in perm[:k]]
    val_set = set(val)
    return [i for i in range(len(labels)) if i not in val_set], sorted(val)
