"""The order of images by aspect ratio that YOLOv5's rectangular batches use, ties included.

YOLOv5 orders images with ``numpy.argsort`` (its default, unstable ``quicksort``). Images of equal
aspect ratio (most of a dataset: every 640x480 photo) come out in whatever order that algorithm
leaves them, and the order decides which of two tied images falls into which batch, hence which
canvas it is letterboxed into. NumPy's result for ties has changed with its versions (SIMD sorts
from 1.25 with AVX-512 and 2.0 with AVX2), so the reference is taken as the classic introsort
that NumPy used for YOLOv5 v6.0 and that it still uses on CPUs without those instructions:
median-of-three quicksort down to 16 elements, insertion sort below, heapsort past a depth of
``2 floor(log2 n)``. :func:`classic_argsort` is that algorithm, step for step, so the batches are
the reference's on every machine (checked against NumPy 1.21 on random arrays full of ties).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["classic_argsort"]

_SMALL = 15  # partitions of more than 16 elements are split, smaller ones insertion-sorted


def _less(a: float, b: float) -> bool:
    return a < b or (b != b and a == a)  # NaN sorts last


def _heapsort(v: list[float], idx: list[int], lo: int, hi: int) -> None:
    """Heapsort of ``idx[lo..hi]`` (inclusive) by ``v``, NumPy's sift order (1-based heap)."""
    m, base = hi - lo + 1, lo - 1

    def sift(i: int, n: int, tmp: int) -> None:
        j = i << 1
        while j <= n:
            if j < n and _less(v[idx[base + j]], v[idx[base + j + 1]]):
                j += 1
            if _less(v[tmp], v[idx[base + j]]):
                idx[base + i] = idx[base + j]
                i, j = j, j + j
            else:
                break
        idx[base + i] = tmp

    for start in range(m >> 1, 0, -1):
        sift(start, m, idx[base + start])
    while m > 1:
        tmp = idx[base + m]
        idx[base + m] = idx[base + 1]
        m -= 1
        sift(1, m, tmp)


def classic_argsort(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """``numpy.argsort(values)`` as NumPy's classic introsort computes it (ties in its order)."""
    arr = np.asarray(values, dtype=np.float64).ravel()
    if len(np.unique(arr)) == len(arr) and not np.isnan(arr).any():  # no ties: every sort agrees
        return np.argsort(arr, kind="stable").astype(np.int64)
    v = arr.tolist()
    n = len(v)
    idx = list(range(n))
    if n < 2:
        return np.array(idx, dtype=np.int64)
    pl, pr, depth = 0, n - 1, (n.bit_length() - 1) * 2
    stack: list[tuple[int, int, int]] = []
    while True:
        if depth < 0:
            _heapsort(v, idx, pl, pr)
        else:
            while pr - pl > _SMALL:
                pm = pl + ((pr - pl) >> 1)  # median of three to idx[pm]
                if _less(v[idx[pm]], v[idx[pl]]):
                    idx[pm], idx[pl] = idx[pl], idx[pm]
                if _less(v[idx[pr]], v[idx[pm]]):
                    idx[pr], idx[pm] = idx[pm], idx[pr]
                if _less(v[idx[pm]], v[idx[pl]]):
                    idx[pm], idx[pl] = idx[pl], idx[pm]
                vp = v[idx[pm]]
                pi, pj = pl, pr - 1
                idx[pm], idx[pj] = idx[pj], idx[pm]
                while True:
                    pi += 1
                    while _less(v[idx[pi]], vp):
                        pi += 1
                    pj -= 1
                    while _less(vp, v[idx[pj]]):
                        pj -= 1
                    if pi >= pj:
                        break
                    idx[pi], idx[pj] = idx[pj], idx[pi]
                idx[pi], idx[pr - 1] = idx[pr - 1], idx[pi]
                depth -= 1
                if pi - pl < pr - pi:  # the larger part waits on the stack
                    stack.append((pi + 1, pr, depth))
                    pr = pi - 1
                else:
                    stack.append((pl, pi - 1, depth))
                    pl = pi + 1
            for pi in range(pl + 1, pr + 1):  # insertion sort of the small part
                vi = idx[pi]
                vp = v[vi]
                pj = pi
                while pj > pl and _less(vp, v[idx[pj - 1]]):
                    idx[pj] = idx[pj - 1]
                    pj -= 1
                idx[pj] = vi
        if not stack:
            break
        pl, pr, depth = stack.pop()
    return np.array(idx, dtype=np.int64)
