"""Starting weights from a file: read any common weights file and load it into a model.

Accepted files (all read with ``torch.load(..., weights_only=True)``: nothing in them runs):

* a nostride checkpoint (``nostride train``'s ``best.pt``/``last.pt``, ``nostride convert --output``,
  ``nostride import``): its EMA weights when it has them, else its model weights;
* a plain ``state_dict`` (torchvision's ``resnet18-f37072fd.pth``, ``torch.save(model.state_dict())``);
* a training checkpoint holding one under ``state_dict``, ``state_dict_ema``, ``model_ema``, ``model``
  or ``ema`` (timm's ``train.py``, torchvision's reference scripts, most training loops).

DDP's ``module.`` prefix is removed. :func:`load_pretrained` reports what it did instead of
failing on the classifier head alone: a head whose class count differs is left as initialised.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["PretrainedLoad", "WeightsFile", "load_pretrained", "read_weights"]

# keys under which training scripts keep the model's state dict, most preferred first
_NESTED_KEYS = ("state_dict_ema", "model_ema", "ema", "state_dict", "model")


@dataclass
class WeightsFile:
    """What :func:`read_weights` found in a file.

    Attributes:
        path: the file.
        state: the weights (name -> tensor).
        kind: in words, e.g. ``"nostride checkpoint (EMA weights)"``, ``"state dict"``.
        checkpoint: the whole nostride checkpoint when the file is one, else ``None``.
    """

    path: Path
    state: dict[str, torch.Tensor]
    kind: str
    checkpoint: dict[str, Any] | None = None


def _load_file(path: Path) -> Any:
    """``torch.load(weights_only=True)`` through nostride's one weights-file reader (one-line errors
    that say what the file is: text, ONNX, truncated...)."""
    from nostride.safe_load import read_weights_file

    return read_weights_file(path)


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def read_weights(path: str | os.PathLike) -> WeightsFile:
    """Read a weights file of any of the kinds in the module docstring.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file holds no state dict (one line, naming the file and what it holds).
    """
    path = Path(path)
    obj = _load_file(path)
    if isinstance(obj, dict) and obj.get("format") == "nostride":
        from nostride.checkpoint import check_checkpoint, upgrade_checkpoint
        from nostride.safe_load import verify_checksums

        check_checkpoint(obj, path)  # the checks val, predict, export and resume make
        verify_checksums(obj, path)
        obj = upgrade_checkpoint(obj)
        use_ema = _is_state_dict(obj.get("ema"))
        state = obj["ema"] if use_ema else obj.get("model")
        if not _is_state_dict(state):
            raise ValueError(f"{path}: nostride checkpoint without model weights")
        return WeightsFile(path, _strip_prefix(state), f"nostride checkpoint ({'EMA' if use_ema else 'model'} weights)", obj)
    if _is_state_dict(obj):
        return WeightsFile(path, _strip_prefix(obj), "state dict")
    if isinstance(obj, dict):
        for key in _NESTED_KEYS:
            if _is_state_dict(obj.get(key)):
                return WeightsFile(path, _strip_prefix(obj[key]), f"checkpoint (its '{key}' weights)")
        if isinstance(obj.get("model"), nn.Module) or "model" in obj and not isinstance(obj.get("model"), dict):
            raise ValueError(f"{path}: holds a pickled model, not weights; a YOLOv5 .pt file is converted with "
                             "`nostride import FILE OUT.pt` first")
        keys = ", ".join(sorted(map(str, obj))[:8])
        raise ValueError(f"{path}: no weights found (a dict with keys {keys}{' ...' if len(obj) > 8 else ''}); "
                         f"expected a state dict or a checkpoint with one of: {', '.join(_NESTED_KEYS)}")
    raise ValueError(f"{path}: no weights found (the file holds a {type(obj).__name__}); expected a state dict "
                     "(name -> tensor) or a checkpoint holding one")


def _strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


@dataclass
class PretrainedLoad:
    """What :func:`load_pretrained` did.

    Attributes:
        loaded: number of tensors copied into the model.
        head: names of tensors left as initialised because their shape differs (the classifier head).
        head_classes: ``(classes in the file, classes of the model)`` when the head was skipped.
        notes: tensors converted to the model's types (float16 to float32, ...), in words.
    """

    loaded: int
    head: list[str] = field(default_factory=list)
    head_classes: tuple[int, int] | None = None
    notes: list[str] = field(default_factory=list)  # tensors converted to the model's types

    def message(self, source: str) -> str:
        text = f"initialised from {source}: {self.loaded} tensors"
        if self.notes:
            text += f" ({'; '.join(self.notes)})"
        if self.head:
            a, b = self.head_classes or (None, None)
            text += (f"; classifier head ({', '.join(self.head)}) re-initialised: the weights have {a} classes, "
                     f"the model {b}")
        return text


def _names(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def head_mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> tuple[list[str], tuple[int, int] | None]:
    """Tensors of ``state`` whose shape differs from the model's only in the class count of the last layer."""
    own = model.state_dict()
    differ = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if not differ:
        return [], None
    prefixes = {k.rsplit(".", 1)[0] for k in differ}
    last = [n for n, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))]
    if len(prefixes) != 1 or not last or prefixes != {last[-1]}:
        return differ, None
    pairs = {(int(state[k].shape[0]), int(own[k].shape[0])) for k in differ}
    if len(pairs) != 1 or any(state[k].shape[1:] != own[k].shape[1:] for k in differ):
        return differ, None
    return differ, pairs.pop()


def load_pretrained(model: nn.Module, weights: WeightsFile | dict[str, torch.Tensor], reinit_head: bool = True,
                    source: str = "the weights") -> PretrainedLoad:
    """Copy ``weights`` into ``model``: every tensor must match, except (with ``reinit_head``) a
    classifier head with another class count, which keeps its initialisation.

    Raises:
        ValueError: the weights are for another architecture (names up to 5 differing keys of each kind).
    """
    state = weights.state if isinstance(weights, WeightsFile) else weights
    where = str(weights.path) if isinstance(weights, WeightsFile) else source
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    head, classes = head_mismatch(model, state)
    problems = []
    if missing:
        problems.append(f"{len(missing)} model tensors missing from the file ({_names(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} tensors in the file the model does not have ({_names(unexpected)})")
    if head and (classes is None or not reinit_head):
        shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in head]
        problems.append(f"{len(head)} tensors of another shape ({_names(shapes, 3)})")
    if problems:
        raise ValueError(f"{where}: weights do not fit {type(model).__name__}: " + "; ".join(problems))
    from nostride.safe_load import conform_state_dict

    keep, notes = conform_state_dict(own, {k: v for k, v in state.items() if k not in head}, where)
    model.load_state_dict({**own, **keep})
    return PretrainedLoad(len(keep), list(head), classes if head else None, notes)


def model_spec_of_checkpoint(ckpt: dict[str, Any]) -> str:
    """The model name (``resnet18_spd``, ``torchvision:resnet18``, ``timm:NAME``) a nostride checkpoint was built from."""
    source = ckpt.get("source") or "nostride"
    if source == "nostride":
        if not ckpt.get("model_name"):
            raise ValueError("checkpoint names no model ('model_name' is empty)")
        return str(ckpt["model_name"])
    return f"{source}:{ckpt['source_model']}"


def initialise_model(model: nn.Module, path: str | os.PathLike, spdify: bool = False,
                     example_input: tuple[int, ...] | None = None) -> tuple[nn.Module, str]:
    """Start a new training run's model from the weights in ``path``; returns ``(model, message)``.

    * Weights of a converted model (a nostride checkpoint recording :func:`nostride.spdify`, e.g.
      ``nostride convert --output``): the same conversion is applied to ``model`` first, then the weights load.
    * Weights of the unconverted model (a torchvision/timm state dict, a plain nostride checkpoint):
      they load, then with ``spdify`` the model is converted keeping its function (``init="preserve"``).
    * A classifier head with another class count keeps its fresh initialisation; the message says so.
    """
    from nostride.convert import spdify as spdify_model

    file = read_weights(path)
    recorded = (file.checkpoint or {}).get("spdify") or []
    if isinstance(recorded, dict):
        recorded = [recorded]
    steps = []
    if recorded and not getattr(model, "spdify_options", None):
        for options in recorded:  # the file's own conversion, so its tensors fit
            options = dict(options)
            if options.get("example_input"):  # checked by read_weights; shapes need one sample only
                options["example_input"] = [1, *list(options["example_input"])[1:]]
            model, _ = spdify_model(model, **{**options, "init": "random", "inplace": True})
        steps.append("converted to SPD-Conv as the file records")
        spdify = False
    result = load_pretrained(model, file)
    if spdify:
        model, report = spdify_model(model, init="preserve", example_input=example_input, inplace=True)
        inexact = [e.name for e in report if e.action in ("converted", "dropped") and not e.exact]
        steps.append(f"then converted to SPD-Conv ({report.count_action('converted')} layers"
                     + (f"; approximate: {', '.join(inexact)}" if inexact else ", all exact") + ")")
    message = result.message(f"{path} ({file.kind})")
    return model, message + ("; " + "; ".join(steps) if steps else "")
