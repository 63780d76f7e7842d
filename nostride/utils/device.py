"""Choosing the torch device from a user string: one place for the rules and the error messages.

Used by training (``nostride.engine``), evaluation and prediction, so that ``--device`` means the
same thing everywhere.
"""

from __future__ import annotations

import torch

__all__ = ["select_device", "check_device_name", "amp_policy"]

_SUPPORTED = "cpu, cuda, cuda:N, N (= cuda:N) or mps"


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)  # absent in some builds
    return mps is not None and mps.is_available()


def check_device_name(device: str | torch.device | None) -> None:
    """Raise ``ValueError`` unless ``device`` names a supported kind of device (``cpu``, ``cuda``,
    ``cuda:N``, ``N``, ``mps``, ``auto`` or empty); whether it exists here is :func:`select_device`'s check."""
    name = str(device) if isinstance(device, torch.device) else (device or "").strip().lower()
    if name in ("", "auto") or name.isdigit():
        return
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(f"unknown device {device!r} (use {_SUPPORTED})") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unknown device {device!r} (use {_SUPPORTED})")
    if dev.type in ("cpu", "mps") and dev.index not in (None, 0):
        # torch accepts "cpu:1" but there is one CPU device: every later step would disagree on it
        raise ValueError(f"unknown device {device!r}: there is one {dev.type} device, name it {dev.type!r}")


def select_device(device: str | torch.device | None = None, local_rank: int | None = None) -> torch.device:
    """The ``torch.device`` named by ``device``, checked to exist on this machine.

    Args:
        device: ``None``, ``""`` or ``"auto"`` = CUDA if available, else MPS, else CPU;
            ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``; a bare index ``"N"`` means ``cuda:N``
            (YOLOv5's ``--device 0``); a ``torch.device`` is checked the same way.
            Case and surrounding spaces are ignored.
        local_rank: the process's GPU under ``torchrun``: a CUDA device given without an index
            (``"cuda"`` or auto) becomes ``cuda:local_rank``. ``None`` leaves it as ``cuda``
            (the current CUDA device).

    Raises:
        ValueError: the name is not a supported device, or the device is not available here
            (no CUDA, a CUDA index beyond the visible GPUs, no MPS).
    """
    check_device_name(device)
    name = str(device) if isinstance(device, torch.device) else (device or "").strip().lower()
    if name in ("", "auto"):
        name = "cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu"
    if name.isdigit():
        name = f"cuda:{name}"
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r} (use {_SUPPORTED})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available (use 'cpu')")
        if dev.index is None and local_rank is not None:
            dev = torch.device("cuda", local_rank)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device cuda:{dev.index} requested but only {torch.cuda.device_count()} CUDA "
                             f"{'device is' if torch.cuda.device_count() == 1 else 'devices are'} visible")
        return dev
    if dev.type == "mps":
        if not _mps_available():
            raise ValueError(f"device {device!r} requested but MPS is not available")
        return dev
    if dev.type == "cpu":
        return dev
    raise ValueError(f"unknown device {device!r} (use {_SUPPORTED})")


def amp_policy(device: torch.device, amp: bool | None) -> tuple[bool, torch.dtype]:
    """Whether to train under ``torch.autocast`` on ``device``, and in which dtype.

    CUDA: float16 (with loss scaling), on unless ``amp`` is ``False``. CPU: bfloat16, only when asked
    (``amp=True``): it roughly halves the time of convolution-heavy models on CPUs with bfloat16
    instructions (AVX512-BF16, AMX; benchmarks/cpu_bf16.py) but changes the numbers, so float32
    stays the default. Other devices: float32.
    """
    if device.type == "cuda":
        return amp is not False, torch.float16
    if device.type == "cpu":
        return amp is True, torch.bfloat16
    return False, torch.float32
