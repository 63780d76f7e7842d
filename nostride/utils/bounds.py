"""The sane bounds of sizes, counts and rates given by users, checked in one place.

The command line (argparse types in ``nostride.cli``), the training options
(:class:`nostride.engine.TrainConfig`) and the Python functions that take sizes (``val``,
``predict``, ``export``) all check their numbers here, so a value no run can use (``--img-size
100000``, ``--momentum 2``, ``--lr nan``) is refused before anything is built or allocated, in one
line that states the bound.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["MAX_IMG_SIZE", "MIN_IMG_SIZE", "MAX_WIDTH", "MAX_EPOCHS", "MAX_BATCH_SIZE", "MAX_WORKERS",
           "MAX_SEED", "MAX_DETECTIONS", "MAX_CLASSES", "MAX_COUNT", "check_int", "check_float", "check_img_size",
           "TRAIN_INT_BOUNDS", "TRAIN_FLOAT_BOUNDS"]

MIN_IMG_SIZE = 8  # smaller images leave nothing after a network's downsampling
MAX_IMG_SIZE = 8192  # one 8192 x 8192 RGB float image is already 805 MB
MAX_WIDTH = 4096  # channels of a model's first layer (ResNet's stem is 64)
MAX_EPOCHS = 100_000
MAX_BATCH_SIZE = 65_536
MAX_WORKERS = 64  # DataLoader worker processes per rank
MAX_DETECTIONS = 100_000  # detections kept per image
MAX_CLASSES = 100_000  # classes of a classifier or detector
MAX_COUNT = 10**9  # images per class and other counts of things in a dataset
MAX_SEED = 2**32 - 1  # NumPy's and Python's seeds; torch accepts more, the three are seeded alike


#: training options (``TrainConfig`` fields, ``nostride train`` flags) that are whole numbers:
#: (lowest, highest) allowed; an option set to ``None`` means "not set" and is not checked
TRAIN_INT_BOUNDS: dict[str, tuple[int | None, int | None]] = {
    "width": (1, MAX_WIDTH),
    "img_size": (MIN_IMG_SIZE, MAX_IMG_SIZE),
    "epochs": (1, MAX_EPOCHS),
    "batch_size": (1, MAX_BATCH_SIZE),
    "accumulate": (1, 1024),
    "nominal_batch_size": (1, MAX_BATCH_SIZE),
    "warmup_iters": (0, MAX_COUNT),
    "warmup_min_iters": (0, MAX_COUNT),
    "patience": (1, MAX_EPOCHS),
    "workers": (0, MAX_WORKERS),
    "max_per_class": (1, MAX_COUNT),
    "seed": (0, MAX_SEED),
    "split_seed": (0, MAX_SEED),
}

#: number options: (low, high, low end open, high end open); NaN and infinities are always refused
TRAIN_FLOAT_BOUNDS: dict[str, tuple[float | None, float | None, bool, bool]] = {
    "lr": (0.0, 100.0, True, False),
    "momentum": (0.0, 1.0, False, True),
    "weight_decay": (0.0, 1.0, False, False),
    "clip_grad": (0.0, None, True, False),
    "lrf": (0.0, 1.0, False, False),
    "gamma": (0.0, 1.0, True, False),
    "warmup_epochs": (0.0, MAX_EPOCHS, False, False),
    "warmup_momentum": (0.0, 1.0, False, True),
    "warmup_bias_lr": (0.0, 100.0, False, False),
    "label_smoothing": (0.0, 1.0, False, True),
    "ema_decay": (0.0, 1.0, False, True),
    "ema_tau": (0.0, 1e9, True, False),
    "val_fraction": (0.0, 1.0, False, True),
}



def _fmt(x: float) -> str:
    """``8192``, ``0.001``, ``1e+20``: whole numbers in full unless huge."""
    if isinstance(x, int):
        return str(x) if abs(x) < 10**24 else f"{x:.6g}"
    return f"{x:g}"


def _subject(name: str) -> str:
    return f"{name} " if name else ""


def _number_text(value: Any) -> str:
    return repr(value) if isinstance(value, str) else f"{value}"


def check_int(name: str, value: Any, low: int | None = None, high: int | None = None, *, what: str = "") -> int:
    """``value`` as an int within ``[low, high]`` (``None``: unbounded), else ``ValueError`` stating the bound.

    Booleans and floats that are not whole numbers are refused (``2.5`` epochs), as are strings
    that do not spell one.
    """
    if isinstance(value, bool):
        raise ValueError(f"{_subject(name)}must be a whole number{what}, got {value!r}")
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise ValueError(f"{_subject(name)}must be a whole number{what}, got {value!r}")
        value = int(value)
    elif isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ValueError(f"{_subject(name)}must be a whole number{what}, got {value!r}") from None
    elif not isinstance(value, int):
        try:
            value = int(value)  # numpy / torch integers
        except (TypeError, ValueError):
            raise ValueError(f"{_subject(name)}must be a whole number{what}, got {value!r}") from None
    _check_range(name, value, low, high, True, True, what)
    return value


def check_float(name: str, value: Any, low: float | None = None, high: float | None = None, *,
                low_open: bool = False, high_open: bool = False, what: str = "") -> float:
    """``value`` as a finite float within ``low .. high`` (open ends when ``low_open``/``high_open``;
    ``None``: unbounded), else ``ValueError`` stating the bound. NaN and infinities are always refused."""
    if isinstance(value, bool):
        raise ValueError(f"{_subject(name)}must be a number{what}, got {value!r}")
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{_subject(name)}must be a number{what}, got {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{_subject(name)}must be a finite number{what}, got {_number_text(value)}")
    _check_range(name, number, low, high, not low_open, not high_open, what)
    return number


def _check_range(name: str, value: float, low, high, low_closed: bool, high_closed: bool, what: str) -> None:
    too_low = low is not None and (value < low if low_closed else value <= low)
    too_high = high is not None and (value > high if high_closed else value >= high)
    if not (too_low or too_high):
        return
    if low is not None and high is not None:
        bound = f"in {'[' if low_closed else '('}{_fmt(low)}, {_fmt(high)}{']' if high_closed else ')'}"
    elif low is not None:
        bound = f"{'>=' if low_closed else '>'} {_fmt(low)}"
    else:
        bound = f"{'<=' if high_closed else '<'} {_fmt(high)}"
    got = _fmt(value)
    raise ValueError(f"{_subject(name)}must be {bound}{what}, got {got}")


def check_img_size(value: Any, name: str = "img_size") -> int:
    """An image size in pixels: a whole number in ``[MIN_IMG_SIZE, MAX_IMG_SIZE]``."""
    return check_int(name, value, MIN_IMG_SIZE, MAX_IMG_SIZE)
