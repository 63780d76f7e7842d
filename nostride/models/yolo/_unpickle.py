"""Read a YOLOv5 ``.pt`` file without the YOLOv5 code and without running anything from the file.

Why a custom unpickler: a checkpoint written by ultralytics/yolov5 (v6.x, v7.0) or the YOLOv5-SPD
fork pickles *whole modules* (``models.yolo.Model``, ``models.common.Conv``, ...). There is no
library that reads such a file safely:

* ``torch.load(weights_only=True)`` refuses every module class, and allow-listing the real classes
  would need the YOLOv5 code installed and would let the file drive their ``__setstate__``;
* ``torch.load(weights_only=False)`` imports and calls whatever the pickle names (``os.system``,
  ``subprocess.Popen``, ...): opening an untrusted file would run its code.

So :func:`read_torch_pickle` hands ``torch.load`` an ``Unpickler`` whose ``find_class`` is an
allow-list. torch still does the zip reading and rebuilds tensor storages (``persistent_load``).
The allow-list gives the pickle only

* torch's own tensor rebuild functions, dtypes, ``torch.Size``/``torch.device`` (the set that
  ``torch._weights_only_unpickler`` allows for tensors), plus plain containers;
* the numpy pieces a YOLOv5 file uses for ``best_fitness`` (array reconstruction, no code);
* inert :class:`PickledObject` records for the expected module classes (and the ``argparse`` /
  ``pathlib`` objects of v7.0's ``opt``): a record only keeps the arguments and the state the
  pickle gives it, it has no behaviour. Reading weights out of that tree is
  :mod:`nostride.models.yolo.import_yolov5`'s job.

Every load gets its own record classes and its own wrappers around the allowed functions: pickle's
BUILD opcode can set attributes on any object the pickle holds (a function's ``__defaults__``, a
class attribute), and this way a crafted file can only alter objects of its own load.

Anything else (``builtins.eval``, ``os.system``, ``subprocess.Popen``, an unknown YOLOv5 layer) is
refused by ``find_class`` before it can be called, with an error naming ``module.name`` and the file.
"""

from __future__ import annotations

import _compat_pickle
import os
import pickle
import types
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

__all__ = ["PickledObject", "RECORD_CLASS_NAMES", "UnsafePickleError", "read_torch_pickle"]


class UnsafePickleError(ValueError):
    """The file references something outside the allow-list; nothing of it was executed."""


class PickledObject:
    """Inert record standing in for a pickled object of an allow-listed class.

    ``qualname`` is the class the file named (``"models.common.Conv"``); ``args`` what the pickle
    passed to the constructor; ``state`` the ``__dict__`` it restored (for a module: ``_modules``,
    ``_parameters``, ``_buffers``, and plain attributes). It never calls anything.
    """

    __slots__ = ("args", "state")
    qualname = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> "PickledObject":
        obj = object.__new__(cls)
        obj.args = args
        obj.state = {}
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # pickle REDUCE calls cls(*args)
        pass

    def __setstate__(self, state: Any) -> None:
        # pickle BUILD: a dict, or (dict, slot dict) for classes with __slots__
        if isinstance(state, tuple) and len(state) == 2:
            merged: dict = {}
            for part in state:
                if isinstance(part, dict):
                    merged.update(part)
            state = merged
        if not isinstance(state, dict):
            raise UnsafePickleError(f"unexpected pickled state of type {type(state).__name__} for {self.qualname}")
        self.state.update(state)

    @property
    def short_name(self) -> str:
        return self.qualname.rsplit(".", 1)[-1]

    def __repr__(self) -> str:
        return f"<pickled {self.qualname}>"


# The classes a YOLOv5 v6.x/v7.0 or YOLOv5-SPD checkpoint pickles; each becomes a PickledObject subclass.
_RECORD_CLASSES = {
    "models.yolo": ["Model", "DetectionModel", "Detect"],
    "models.common": ["Conv", "C3", "Bottleneck", "SPPF", "SPP", "Focus", "Concat", "space_to_depth"],
    "torch.nn.modules.conv": ["Conv2d"],
    "torch.nn.modules.batchnorm": ["BatchNorm2d"],
    "torch.nn.modules.activation": ["SiLU", "LeakyReLU", "Hardswish", "ReLU", "ReLU6", "Sigmoid", "Mish", "GELU"],
    "torch.nn.modules.linear": ["Identity"],
    "torch.nn.modules.pooling": ["MaxPool2d"],
    "torch.nn.modules.upsampling": ["Upsample"],
    "torch.nn.modules.container": ["Sequential", "ModuleList"],
    # v7.0 'opt' entries: kept as records too (nothing reads them; a record never touches the disk)
    "argparse": ["Namespace"],
    "pathlib": ["Path", "PosixPath", "WindowsPath", "PurePath", "PurePosixPath", "PureWindowsPath"],
}
RECORD_CLASS_NAMES = tuple(f"{m}.{n}" for m, names in _RECORD_CLASSES.items() for n in names)

# YOLOv5 layer classes that exist but that nostride's YOLOv5 does not implement: named in the error.
_KNOWN_UNSUPPORTED_PREFIXES = ("models.common.", "models.yolo.", "models.experimental.")


def _encode_latin1(text: str, encoding: str = "latin1") -> bytes:
    # protocol-2 pickles store ``bytes`` as _codecs.encode(str, "latin1"); nothing else is needed
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise UnsafePickleError(f"refused _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _numpy_multiarray() -> types.ModuleType:
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray
    return multiarray


def _allowed_functions() -> dict[str, Callable[..., Any]]:
    """Functions the pickle may call: torch's tensor rebuilding, numpy array rebuilding, bytes."""
    multiarray = _numpy_multiarray()
    return {
        "_codecs.encode": _encode_latin1,
        "torch._utils._rebuild_tensor": torch._utils._rebuild_tensor,
        "torch._utils._rebuild_tensor_v2": torch._utils._rebuild_tensor_v2,
        "torch._utils._rebuild_parameter": torch._utils._rebuild_parameter,
        "torch._utils._rebuild_parameter_with_state": torch._utils._rebuild_parameter_with_state,
        "torch._tensor._rebuild_from_type_v2": torch._tensor._rebuild_from_type_v2,
        # best_fitness is a numpy array/scalar in real files (numpy 1.x writes numpy.core.*)
        "numpy.core.multiarray._reconstruct": multiarray._reconstruct,
        "numpy._core.multiarray._reconstruct": multiarray._reconstruct,
        "numpy.core.multiarray.scalar": multiarray.scalar,
        "numpy._core.multiarray.scalar": multiarray.scalar,
    }


def _allowed_types() -> dict[str, Any]:
    """Types and constants the pickle may name: containers, tensor/array types, dtypes, devices.

    All are C-level types or objects whose attributes a pickle cannot reassign, except
    ``torch.Tensor``/``Parameter`` (Python classes whose ``__setstate__`` makes pickle's BUILD on
    the class itself fail).
    """
    allowed: dict[str, Any] = {
        "collections.OrderedDict": OrderedDict,
        "builtins.set": set,
        "builtins.frozenset": frozenset,
        "torch.Size": torch.Size,
        "torch.device": torch.device,
        "torch.Tensor": torch.Tensor,
        "torch.nn.parameter.Parameter": torch.nn.Parameter,
        "numpy.ndarray": np.ndarray,
        "numpy.dtype": np.dtype,
    }
    for name in dir(torch):
        value = getattr(torch, name, None)
        if isinstance(value, torch.dtype):
            allowed[f"torch.{name}"] = value
    return allowed


def _per_load(fn: Callable[..., Any]) -> Callable[..., Any]:
    # Pickle's BUILD opcode can set attributes (e.g. __defaults__) on any object the pickle
    # holds, including a function it named. Each load therefore gets fresh wrappers, so a
    # crafted file cannot change torch's or numpy's functions for the rest of the process.
    def call(*args: Any) -> Any:
        return fn(*args)

    call.__name__ = call.__qualname__ = getattr(fn, "__name__", "call")
    return call


def _make_globals() -> dict[str, Any]:
    """The allow-list of one load: fresh record classes and function wrappers, shared types."""
    table: dict[str, Any] = dict(_allowed_types())
    table.update({k: _per_load(f) for k, f in _allowed_functions().items()})
    for qualname in RECORD_CLASS_NAMES:
        name = qualname.rsplit(".", 1)[-1]
        table[qualname] = type(name, (PickledObject,), {"__slots__": (), "qualname": qualname})
    return table


def _make_pickle_module(source: str) -> types.SimpleNamespace:
    """A ``pickle_module`` for ``torch.load`` whose Unpickler only resolves allow-listed globals."""
    allowed = _make_globals()

    class RestrictedUnpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            # protocol-2 pickles written by Python 2 era code name e.g. __builtin__.set
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
            key = f"{module}.{name}"
            if key in allowed:
                return allowed[key]
            if key.startswith(_KNOWN_UNSUPPORTED_PREFIXES):
                hint = (
                    "this YOLOv5 class is not one nostride's YOLOv5 implements (supported layers: "
                    "Conv, C3, Bottleneck, SPPF, SPP, Focus, Concat, nn.Upsample, space_to_depth, Detect)"
                )
            else:
                hint = (
                    "a YOLOv5 checkpoint only references its model classes (models.yolo, models.common), "
                    "torch.nn layers, tensors and plain data"
                )
            raise UnsafePickleError(f"{source}: refused to load `{key}` from the pickle: {hint}. Nothing from the file was run.")

    def _no_legacy_load(*args: Any, **kwargs: Any) -> Any:  # torch's pre-zip format path
        raise ValueError(f"{source}: legacy (pre torch 1.6) checkpoint format is not supported")

    return types.SimpleNamespace(__name__="nostride_restricted_pickle", Unpickler=RestrictedUnpickler, load=_no_legacy_load)


def read_torch_pickle(path: str | os.PathLike) -> Any:
    """Load a ``torch.save`` zip archive with the restricted unpickler (see the module docstring).

    Returns the unpickled object, where allow-listed classes are :class:`PickledObject` records and
    tensors are real (CPU) tensors.

    Raises:
        FileNotFoundError: no such file.
        UnsafePickleError: the pickle references a class or function outside the allow-list.
        ValueError: the file is not a ``torch.save`` zip archive (or is a TorchScript archive, or is
            corrupt).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):
        from nostride.safe_load import describe_file

        raise ValueError(
            f"{path}: not a torch.save zip archive: it is {describe_file(path)} (YOLOv5 v6.x/v7.0 .pt files "
            "are zip archives; files in the legacy pre torch 1.6 format are not supported)"
        )
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError) as e:
        raise ValueError(f"{path}: unreadable zip archive: {e}") from None
    # torch.load hands TorchScript archives to torch.jit.load, which compiles code from the file
    if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
        raise ValueError(f"{path}: a TorchScript archive, not a YOLOv5 training checkpoint (refused)")
    if not any(n.endswith("data.pkl") for n in names):
        raise ValueError(f"{path}: a zip archive but not a torch.save checkpoint (no data.pkl)")
    pickle_module = _make_pickle_module(str(path))
    try:
        obj = torch.load(path, map_location="cpu", pickle_module=pickle_module, weights_only=False)
    except UnsafePickleError:
        raise
    except Exception as e:  # any other failure means the archive or its pickle is malformed
        raise ValueError(f"{path}: could not read the checkpoint: {type(e).__name__}: {e}") from None
    from nostride.safe_load import check_tree

    # before anything walks, copies or converts it: no cycle, no structure that expands to
    # billions of values, no tensor (anchors, stride) declared larger than the file's data
    check_tree(obj, path, file_size=path.stat().st_size, children=_record_children)
    return obj


def _record_children(o: Any) -> list[Any] | None:
    """What a :class:`PickledObject` holds, for :func:`nostride.safe_load.check_tree`."""
    if isinstance(o, PickledObject):
        return [o.args, o.state]
    return None

