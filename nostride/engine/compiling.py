"""``compile``: ``torch.compile`` for the training forward, with a one-line error when it cannot work."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["CompileUnavailableError", "check_compile_backend", "compile_for_training"]


class CompileUnavailableError(RuntimeError):
    """``torch.compile`` (the inductor backend) cannot run on this machine or failed to compile the model."""


def check_compile_backend(device: torch.device) -> None:
    """Raise :class:`CompileUnavailableError` when inductor lacks what it needs for ``device``:
    a C++ compiler on CPU, Triton on CUDA (checked without compiling anything)."""
    if device.type == "cpu":
        try:
            from torch._inductor.cpp_builder import get_cpp_compiler

            get_cpp_compiler()
        except Exception as e:  # noqa: BLE001 - any failure means inductor cannot build CPU kernels
            raise CompileUnavailableError(
                f"--compile: torch.compile needs a C++ compiler on CPU and none was found ({_first_line(e)}); "
                "install g++ (or set CXX), or train without --compile") from None
    elif device.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            raise CompileUnavailableError("--compile: torch.compile needs the triton package on CUDA; "
                                          "install it, or train without --compile")


def compile_for_training(module: nn.Module, device: torch.device) -> nn.Module:
    """``torch.compile(module)`` after :func:`check_compile_backend`.

    The result shares ``module``'s parameters and buffers; its own ``state_dict`` keys carry an
    ``_orig_mod.`` prefix, so checkpoints and the EMA must read the plain module instead.
    """
    check_compile_backend(device)
    return torch.compile(module)


def compile_failure(e: BaseException) -> CompileUnavailableError | None:
    """A one-line :class:`CompileUnavailableError` for a backend failure raised by the first compiled call,
    ``None`` for any other exception (a real error of the model or data, raised as it is)."""
    try:
        from torch._dynamo.exc import BackendCompilerFailed
    except ImportError:  # pragma: no cover
        return None
    if isinstance(e, BackendCompilerFailed):
        return CompileUnavailableError(f"--compile: torch.compile could not compile the model "
                                       f"({_first_line(e)}); train without --compile")
    return None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
