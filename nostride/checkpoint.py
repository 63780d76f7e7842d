"""nostride checkpoints: atomic writes, safe loads, and rebuilding a model from one.

A checkpoint is a ``torch.save`` file holding only tensors and plain Python data (no pickled
modules or classes), so it always loads with ``torch.load(..., weights_only=True)``:

===============  ============================================================================
key              value
===============  ============================================================================
format           ``"nostride"``
version          checkpoint format version (``2``)
model_name       registry name (:func:`nostride.create_model`)
model_kwargs     keyword arguments the model was built with (plain data)
task             ``"classify"`` or ``"detect"``
model            model ``state_dict``
ema              EMA ``state_dict`` or ``None``
names            class names (list of str) or ``None``
spdify           for models converted with :func:`nostride.spdify`: the list of option dicts
                 it was applied with (re-applied before loading the weights), else absent
downsample       for models converted with :func:`nostride.convert_downsampling`: the same, for it
source           ``"nostride"`` (default: ``model_name`` is a registry name),
                 ``"torchvision"`` (``source_model`` is a ``torchvision.models`` name) or
                 ``"timm"`` (``source_model`` is a ``timm.create_model`` name)
epoch            epochs finished: the 1-based number of the last one (0: untrained, converted
                 or imported weights); ``best_epoch`` likewise (format version 1 counted from 0
                 and is read as version 2)
results         the rows of the run's ``results.csv`` up to ``epoch`` (a resume rebuilds
                 the file from them when it is missing, empty or damaged)
checksums        CRC-32 of every tensor of ``model`` and ``ema`` (``{"model/NAME": crc}``),
                 written by :func:`save_checkpoint` and verified by :func:`load_checkpoint`
...              trainer state (optimizer, scheduler, rng, config, metrics) where present
===============  ============================================================================

Reading is strict and never runs code: :func:`load_checkpoint` reads the file with
:func:`nostride.safe_load.read_weights_file` (``weights_only=True``, one-line errors saying what
the file is), checks the type of every entry it relies on and the tensor checksums;
:func:`model_from_checkpoint` checks the declared architecture against the stored tensors' shapes
on the "meta" device (no memory) before building the model, so a small file cannot make it
allocate a huge one. A model definition (``model_kwargs["cfg"]``) is data inside the file, never a
path to read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .safe_load import WeightsFileError, conform_state_dict, read_weights_file, tensor_checksums, verify_checksums
from .utils.atomic import AtomicWriteError, atomic_write
from .utils.meta import shapes_only

__all__ = [
    "CHECKPOINT_VERSION",
    "AtomicWriteError",
    "SOURCE_KEY",
    "WeightsFileError",
    "check_checkpoint",
    "read_weights_file",
    "build_model_from_checkpoint",
    "load_checkpoint",
    "make_checkpoint",
    "model_from_checkpoint",
    "model_or_checkpoint",
    "open_weights",
    "recorded_option",
    "save_checkpoint",
    "state_dict_mismatch",
    "check_architecture",
    "shapes_only",
]

CHECKPOINT_VERSION = 2


SOURCE_KEY = "_path"  # set by load_checkpoint: the file a checkpoint dict came from (for error messages)
# a model already built for a checkpoint-like dict (an exported file, an imported YOLOv5 .pt): returned as is
RUNTIME_MODEL_KEY = "_model"


def save_checkpoint(obj: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``obj`` to ``path`` atomically (:func:`nostride.utils.atomic.atomic_write`).

    A crash, a kill or Ctrl-C while writing leaves the previous file at ``path`` intact (Ctrl-C is
    held back until the file is complete). A nostride checkpoint gets a ``checksums`` entry (CRC-32
    of each tensor of ``model`` and ``ema``), checked when it is loaded. The file's mode follows
    the umask.

    Raises:
        AtomicWriteError: the write failed (e.g. a full disk): one line; the previous file is kept.
    """
    obj = {k: v for k, v in obj.items() if k != SOURCE_KEY}
    if obj.get("format") == "nostride":
        obj["checksums"] = tensor_checksums(obj)
    return atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a nostride checkpoint with ``weights_only=True`` (a checkpoint never runs code).

    The returned dict also holds ``"_path"`` (:data:`SOURCE_KEY`), the file it came from, so that
    later errors name it; :func:`save_checkpoint` leaves that entry out.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        WeightsFileError (a ValueError): one line naming the file: not a weights file (and what it
            is instead), truncated or damaged, not a nostride checkpoint (for YOLOv5 ``.pt`` files
            the message points to ``nostride import``), entries of the wrong type, tensors that
            fail their checksum.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    ckpt = read_weights_file(path, map_location)
    if not isinstance(ckpt, dict) or ckpt.get("format") != "nostride":
        what = (f"a dict with keys {', '.join(sorted(map(str, ckpt))[:6])}" if isinstance(ckpt, dict)
                else f"a {type(ckpt).__name__}")
        hint = ""
        if isinstance(ckpt, dict) and ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
            hint = "; a bare state dict is used with `nostride train --weights FILE` or nostride.weights.load_pretrained"
        raise WeightsFileError(f"{path}: not a nostride checkpoint (no 'format': 'nostride' entry; it holds {what}){hint}")
    if not isinstance(ckpt.get("version", 0), int) or ckpt.get("version", 0) > CHECKPOINT_VERSION:
        raise WeightsFileError(
            f"{path}: checkpoint format version {ckpt.get('version')!r} is newer than this nostride "
            f"understands ({CHECKPOINT_VERSION}); upgrade nostride"
        )
    check_checkpoint(ckpt, path)
    verify_checksums(ckpt, path)
    ckpt = upgrade_checkpoint(ckpt)
    ckpt[SOURCE_KEY] = str(path)  # so that later errors (model_from_checkpoint) name the file
    return ckpt


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _type_name(v: Any) -> str:
    return type(v).__name__


def check_checkpoint(ckpt: dict[str, Any], path: str | os.PathLike | None = None) -> None:
    """Check the type of every entry nostride relies on; one line naming the entry if one is wrong.

    Raises:
        WeightsFileError: an entry of the wrong type (e.g. ``model_kwargs`` not a dict, ``names``
            an int), or a model definition given as a path (a checkpoint carries its definition).
    """
    where = f"{path}: " if path is not None else "checkpoint: "

    def bad(key: str, expected: str, value: Any) -> WeightsFileError:
        return WeightsFileError(f"{where}entry {key!r} must be {expected}, got {_type_name(value)} {str(value)[:60]!r}")

    expect = {
        "model_name": (lambda v: v is None or isinstance(v, str), "a model name (str)"),
        "model_kwargs": (lambda v: v is None or (isinstance(v, dict) and all(isinstance(k, str) for k in v)),
                         "a dict of keyword arguments"),
        "task": (lambda v: v is None or isinstance(v, str), "a task name (str)"),
        "model": (_is_state_dict, "a state dict (name -> tensor)"),
        "ema": (lambda v: v is None or _is_state_dict(v), "a state dict or None"),
        "names": (lambda v: v is None or (isinstance(v, (list, tuple)) and all(isinstance(n, str) for n in v)),
                  "a list of class names (str)"),
        "spdify": (lambda v: v is None or isinstance(v, dict) or (isinstance(v, list) and all(isinstance(o, dict) for o in v)),
                   "a list of option dicts"),
        "downsample": (lambda v: v is None or (isinstance(v, list) and all(isinstance(o, dict) for o in v)),
                       "a list of option dicts"),
        "source": (lambda v: v is None or v in ("nostride", "torchvision", "timm"), "'nostride', 'torchvision' or 'timm'"),
        "source_model": (lambda v: v is None or isinstance(v, str), "a model name (str)"),
        "epoch": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an int"),
        "best_epoch": (lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)), "an int"),
        "config": (lambda v: v is None or isinstance(v, dict), "a dict of training options"),
        "metrics": (lambda v: v is None or isinstance(v, dict), "a dict"),
        "results": (lambda v: v is None or (isinstance(v, list) and all(isinstance(r, dict) for r in v)),
                    "a list of results.csv rows (dicts)"),
    }
    for key, (ok, expected) in expect.items():
        if key in ckpt and not ok(ckpt[key]):
            raise bad(key, expected, ckpt[key])
    cfg = (ckpt.get("model_kwargs") or {}).get("cfg")
    if cfg is not None and not isinstance(cfg, dict):
        raise WeightsFileError(f"{where}entry model_kwargs['cfg'] must be the model definition itself (a dict), "
                               f"got {_type_name(cfg)} {str(cfg)[:60]!r}: a checkpoint's model is never read from a path")
    if ckpt.get("source") in ("torchvision", "timm") and not ckpt.get("source_model"):
        raise WeightsFileError(f"{where}source {ckpt['source']!r} needs a 'source_model' name")
    named = _file_options(ckpt.get("model_kwargs") or {})
    if named:
        key, value = named[0]
        raise WeightsFileError(f"{where}entry model_kwargs[{key!r}] = {str(value)[:60]!r} names a file or a download: "
                               "a checkpoint's model is built from its own data, never from other files (refused)")
    conversions = ckpt.get("spdify") or []
    for options in [conversions] if isinstance(conversions, dict) else conversions:
        _check_example_input(options.get("example_input"), where)
    for options in ckpt.get("downsample") or []:  # convert_downsampling records: its own keys only
        unknown = set(options) - {"to", "exclude", "example_input"}
        if unknown or not isinstance(options.get("to"), str):
            raise WeightsFileError(f"{where}entry downsample must list {{'to': OPERATOR, 'exclude': [...], "
                                   f"'example_input': [...]}} dicts, got {str(options)[:80]!r}")
        _check_example_input(options.get("example_input"), where)


# model options that make a builder open a file or fetch weights (timm's checkpoint_path and
# pretrained_cfg(_overlay) file/url, torchvision's weights enums, hub downloads)
_FILE_OPTIONS = frozenset({"checkpoint_path", "pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "weights",
                           "weights_backbone", "cache_dir", "file", "url", "hf_hub_id", "hf_hub_filename",
                           "model_dir"})
_FILE_SUFFIXES = ("_path", "_file", "_dir", "_url")

MAX_EXAMPLE_ELEMENTS = 2**24  # a recorded spdify example input: 16.8 M values (3 x 2364 x 2364), 64 MB


def _file_options(kwargs: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """``(key, value)`` of every model option (nested dicts too) that names a file or a download."""
    found = []
    for key, value in kwargs.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            found += _file_options(value, f"{name}.")
        if value in (None, False, "", {}, []):
            continue
        if key in _FILE_OPTIONS or (isinstance(key, str) and key.endswith(_FILE_SUFFIXES)):
            found.append((name, value))
    return found


def _check_example_input(shape: Any, where: str) -> None:
    """A recorded spdify ``example_input``: a short list of positive ints, at most
    :data:`MAX_EXAMPLE_ELEMENTS` values once the batch is 1 (the conversion is re-applied with it)."""
    if shape is None:
        return
    if (not isinstance(shape, (list, tuple)) or not 1 <= len(shape) <= 6
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in shape)):
        raise WeightsFileError(f"{where}entry spdify example_input must be a shape (a few positive ints), "
                               f"got {str(shape)[:60]!r}")
    numel = 1
    for n in shape[1:]:
        numel *= n
    if numel > MAX_EXAMPLE_ELEMENTS:
        raise WeightsFileError(f"{where}entry spdify example_input {list(shape)} declares {numel:,} values per sample, "
                               f"more than the {MAX_EXAMPLE_ELEMENTS:,} a conversion needs (a crafted or corrupt file)")


def upgrade_checkpoint(ckpt: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint of an older format version in the current one (in place; returned).

    Version 1 numbered epochs from 0 (-1: none); version 2 numbers them from 1 (0: none), as the
    console, results.csv and the metrics files do.
    """
    if ckpt.get("version") == 1:
        for key in ("epoch", "best_epoch"):
            if isinstance(ckpt.get(key), int):
                ckpt[key] += 1
        ckpt["version"] = 2
    return ckpt


def make_checkpoint(model: nn.Module, names: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    """A checkpoint dict for a model built by :func:`nostride.create_model` (weights only).

    ``extra`` entries (epoch, optimizer state, ...) are added as given.
    """
    from nostride.models import model_info

    name = getattr(model, "model_name", None)
    source = getattr(model, "source", None)
    if name is None and source not in ("torchvision", "timm"):
        raise ValueError("the model has no 'model_name': build it with nostride.create_model() "
                         "(or nostride.models.external.build_named_model for torchvision/timm models)")
    if getattr(model, "spdify_options", None):
        extra.setdefault("spdify", list(model.spdify_options))
    if getattr(model, "downsample_options", None):
        extra.setdefault("downsample", list(model.downsample_options))
    if name is None:  # a torchvision or timm model: rebuilt from its source
        extra.setdefault("source", source)
        extra.setdefault("source_model", model.source_model)
    ckpt = {
        "format": "nostride",
        "version": CHECKPOINT_VERSION,
        "model_name": name,
        "model_kwargs": dict(getattr(model, "model_kwargs", {})),
        "task": getattr(model, "task", None) or (model_info(name).task if name else "classify"),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "ema": None,
        "names": list(names) if names is not None else None,
        "epoch": 0,
    }
    ckpt.update(extra)
    return ckpt


def build_model_from_checkpoint(ckpt: dict[str, Any]) -> nn.Module:
    """The model a checkpoint describes, freshly initialised (no weights loaded).

    Builds the registry model (or the torchvision model for ``source == "torchvision"``) with
    the recorded keyword arguments, then re-applies every recorded :func:`nostride.spdify` and
    :func:`nostride.convert_downsampling` conversion (with random init: the weights are loaded afterwards).
    """
    from nostride.models import create_model

    kwargs = dict(ckpt.get("model_kwargs") or {})
    source = ckpt.get("source", "nostride")
    if source == "torchvision":
        import torchvision

        model = torchvision.models.get_model(ckpt["source_model"], weights=None, **kwargs)
    elif source == "timm":
        from nostride.models.external import build_named_model

        model, _, _ = build_named_model(f"timm:{ckpt['source_model']}", **kwargs)
    elif source == "nostride" or source is None:
        if not ckpt.get("model_name"):
            raise ValueError("checkpoint names no model ('model_name' is empty)")
        model = create_model(ckpt["model_name"], **kwargs)
    else:
        raise ValueError(f"checkpoint has an unknown model source {source!r}")
    conversions = ckpt.get("spdify") or []
    if isinstance(conversions, dict):  # a single conversion
        conversions = [conversions]
    if conversions:
        from nostride.convert import spdify

        for options in conversions:
            options = dict(options)
            if options.get("example_input"):  # shapes are what it is for: one sample is enough
                options["example_input"] = [1, *list(options["example_input"])[1:]]
            model, _ = spdify(model, **{**options, "init": "random", "inplace": True})
    downsample = ckpt.get("downsample") or []
    if downsample:  # nostride.convert_downsampling conversions (nostride convert --to OP)
        import warnings

        from nostride.convert import convert_downsampling

        for options in downsample:
            options = dict(options)
            if options.get("example_input"):  # one sample is enough, as for spdify
                options["example_input"] = [1, *list(options["example_input"])[1:]]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # what it could not serve was reported when converting
                model, _ = convert_downsampling(model, **{**options, "init": "random", "inplace": True})
    return model


def _describe_model(ckpt: dict[str, Any]) -> str:
    name = ckpt.get("model_name") or ckpt.get("source_model") or "?"
    kwargs = {k: v for k, v in (ckpt.get("model_kwargs") or {}).items() if k != "cfg"}
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    return f"{name}({args})" if args else str(name)


def state_dict_mismatch(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> str | None:
    """``None`` if ``state`` has exactly ``expected``'s names and shapes, else what differs, in words."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} in the file, {tuple(v.shape)} in the model"
              for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    parts = []
    for label, items in (("missing from the file", missing), ("not in the model", unexpected),
                         ("of another shape", shapes)):
        if items:
            more = f" and {len(items) - 3} more" if len(items) > 3 else ""
            parts.append(f"{len(items)} tensors {label} ({'; '.join(items[:3])}{more})")
    return "; ".join(parts) or None


def check_architecture(ckpt: dict[str, Any], state: dict[str, torch.Tensor], path: str | os.PathLike | None = None) -> None:
    """Build the declared model on the "meta" device (shapes only, no memory) and compare it with ``state``.

    Raises:
        WeightsFileError: the declared model cannot be built, or its tensors differ from the stored
            ones (another model, width or class count, missing keys): one line.
    """
    where = f"{path}: " if path is not None else "checkpoint: "
    try:
        with shapes_only():
            probe = build_model_from_checkpoint(ckpt)
    except (ValueError, TypeError, KeyError, RuntimeError, FileNotFoundError, NotImplementedError, AssertionError) as e:
        raise WeightsFileError(f"{where}cannot build the model it declares, {_describe_model(ckpt)}: "
                               f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}") from None
    differ = state_dict_mismatch(probe.state_dict(), state)
    if differ:
        raise WeightsFileError(f"{where}its weights do not fit the model it declares, {_describe_model(ckpt)} "
                               f"(another model, width or class count?): {differ}")


def model_from_checkpoint(ckpt: dict[str, Any] | str | os.PathLike, use_ema: bool = True) -> nn.Module:
    """Rebuild the model a checkpoint describes and load its weights (the EMA ones if present).

    The declared architecture is checked against the stored tensors first (on the "meta" device:
    no memory), so a checkpoint of another model, width or class count is a one-line error and a
    small file cannot make it allocate a huge model.

    Args:
        ckpt: a checkpoint dict or a path to one.
        use_ema: prefer the ``ema`` weights when the checkpoint has them.

    Returns:
        The model in eval mode, with ``names`` set to the class names when the checkpoint has them.

    Raises:
        WeightsFileError (a ValueError): the weights do not fit the declared model (one line).
    """
    if not isinstance(ckpt, dict):
        ckpt = load_checkpoint(ckpt)
    if isinstance(ckpt.get(RUNTIME_MODEL_KEY), nn.Module):  # see open_weights: nothing to rebuild
        return ckpt[RUNTIME_MODEL_KEY]
    path = ckpt.get(SOURCE_KEY)
    check_checkpoint(ckpt, path)
    state = ckpt["ema"] if use_ema and ckpt.get("ema") is not None else ckpt.get("model")
    if not state:
        raise WeightsFileError(f"{path or 'checkpoint'}: no model weights (entry 'model' is missing or empty)")
    check_architecture(ckpt, state, path)
    model = build_model_from_checkpoint(ckpt)
    # the one rule for tensor types: complex or integer tensors where floats belong are refused;
    # float16 weights (``nostride import`` keeps YOLOv5's) load into the float32 model as before
    state, _ = conform_state_dict(model.state_dict(), state, path or "checkpoint")
    model.load_state_dict(state)
    if ckpt.get("names") is not None:
        model.names = list(ckpt["names"])
    return model.eval()


_TASK_NOUNS = {"classify": "classification", "detect": "detection"}


def model_or_checkpoint(
    source: nn.Module | dict[str, Any] | str | os.PathLike, task: str | None = None, caller: str = "this"
) -> tuple[nn.Module, dict[str, Any] | None]:
    """``(model, checkpoint)`` from a model (returned as is, checkpoint ``None``), a checkpoint dict or a path.

    Args:
        source: what a predict/evaluate function was given.
        task: the task the checkpoint must be for (a checkpoint that records none is accepted).
        caller: names the caller in the error message.

    Raises:
        ValueError: the checkpoint is for another task.
    """
    if isinstance(source, nn.Module):
        return source, None
    ckpt = source if isinstance(source, dict) else open_weights(source)
    if task is not None and ckpt.get("task") not in (None, task):
        raise ValueError(f"{caller} needs a {_TASK_NOUNS.get(task, task)} checkpoint, this one is {ckpt.get('task')!r}")
    return model_from_checkpoint(ckpt), ckpt


def open_weights(path: str | os.PathLike) -> dict[str, Any]:
    """What ``val``, ``predict`` and ``export`` accept, as a checkpoint dict: a nostride checkpoint, an
    exported model (``.onnx``, ``.torchscript``, see :mod:`nostride.exported`) or a YOLOv5 / YOLOv5-SPD
    ``.pt`` (read by the safe importer, :func:`nostride.load_yolov5`). The last two carry their model
    under :data:`RUNTIME_MODEL_KEY`, which :func:`model_from_checkpoint` returns.

    Raises:
        FileNotFoundError, WeightsFileError: as :func:`load_checkpoint` (the nostride error when the
        file is neither kind).
    """
    from .exported import is_exported_file, load_exported

    if is_exported_file(path):
        return load_exported(path)
    try:
        return load_checkpoint(path)
    except WeightsFileError as nostride_error:
        from .models.yolo.import_yolov5 import load_yolov5

        try:
            model = load_yolov5(path)
        except (ValueError, RuntimeError, KeyError):
            raise nostride_error from None
    names = getattr(model, "names", None)
    names = [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names or [])
    model.names = names
    return {"task": "detect", "names": names, "model_name": f"YOLOv5 checkpoint {Path(path).name}",
            "epoch": 0, RUNTIME_MODEL_KEY: model, SOURCE_KEY: str(path)}


def recorded_option(ckpt: dict[str, Any] | None, key: str) -> Any:
    """``key`` as the checkpoint records it, else ``None``.

    Looked up, first found (not ``None``) wins: the training options (``ckpt["config"]``), the
    checkpoint's top level (``make_checkpoint(..., key=...)``), its ``data`` record.
    """
    if not ckpt:
        return None
    for d in (ckpt.get("config"), ckpt, ckpt.get("data")):
        if isinstance(d, dict) and d.get(key) is not None:
            return d[key]
    return None
