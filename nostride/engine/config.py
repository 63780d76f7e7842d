"""Training options: one typed dataclass, a YAML overlay and command-line overrides.

Precedence (lowest to highest): the :class:`TrainConfig` defaults < a YAML file (``--config``) <
explicit keyword/command-line options. Every run writes its effective options to ``args.yaml``,
which is itself a valid ``--config`` file.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..utils import bounds
from ..utils.yamlio import read_yaml

__all__ = ["TrainConfig", "build_config", "load_config_file", "merge_options", "save_config", "config_keys"]


@dataclass
class TrainConfig:
    """Every option of a training run (``nostride train --help`` and docs/training.md describe them)."""

    # what to train
    model: str = ""  # registry name, e.g. resnet18_spd
    data: str = ""  # dataset folder / archive / yaml, as the task understands it
    task: str = ""  # "classify" or "detect"; "" = inferred from the model name
    width: int | None = None  # model width (ResNet stem channels); None = the model's default
    model_options: dict[str, Any] = field(default_factory=dict)  # more keyword arguments of the model builder
    spdify: bool = False  # convert the built model with nostride.spdify (every strided layer -> SPD-Conv)
    img_size: int | None = None  # training/validation image size; None = the dataset's native size
    weights: str = ""  # initial weights: a nostride checkpoint or an imported model file ("" = from scratch)
    hyp: str = ""  # detection: hyperparameter file, a shipped name (scratch, scratch-low, ...) or a YAML path

    # length and batch
    epochs: int = 100
    batch_size: int = 64  # TOTAL over all DDP processes (each rank gets batch_size // world_size)
    accumulate: int = 1  # batches accumulated per optimizer step
    nominal_batch_size: int | None = None  # YOLOv5 "nbs": accumulate = round(nbs / batch), wd scaled

    # optimizer
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.1
    momentum: float = 0.9  # SGD momentum, AdamW beta1
    nesterov: bool = False
    weight_decay: float = 5e-4
    decay_norm_bias: bool = False  # True: decay every parameter; False: norm weights and biases get none
    clip_grad: float | None = None  # max gradient norm; None = no clipping

    # learning-rate schedule
    schedule: str = "cosine"  # step | cosine | linear
    schedule_unit: str = "iter"  # "iter": lr changes every batch; "epoch": once per epoch
    lrf: float = 0.0  # final lr factor for cosine/linear (lr ends at lr * lrf)
    milestones: list[float] = field(default_factory=list)  # step: epochs; [] = 50% and 75% of epochs
    gamma: float = 0.1  # step: lr factor at each milestone
    warmup_epochs: float = 0.0
    warmup_iters: int | None = None  # overrides warmup_epochs when set
    warmup_momentum: float | None = None  # None: momentum not warmed up
    warmup_bias_lr: float | None = None  # None: bias lr warms up from 0 like the others
    warmup_min_iters: int = 0  # warm-up lasts at least this many batches (YOLOv5: 1000)

    # regularisation and averaging
    label_smoothing: float = 0.0
    ema: bool = False
    ema_decay: float = 0.9999
    ema_tau: float = 2000.0
    patience: int | None = None  # stop after this many epochs without a better fitness; None = never

    # data
    workers: int | None = None  # DataLoader workers per process; None = the available CPUs (at most 8)
    val_fraction: float = 0.1  # part of train held out when the dataset has no val split
    split_seed: int | None = None  # seed of that held-out part; None = seed (compare fixes it across seeds)
    max_per_class: int | None = None  # cap images per class (quick runs)
    strict: bool = False  # data problems that are warnings (an empty class folder) become errors
    augment: bool = True
    cache: str = ""  # "" (decode every time), "ram" (decoded, resized images kept in memory), "disk" (detection: .npy files)

    # hardware
    device: str = ""  # "" = cuda if available, else mps, else cpu
    amp: bool | None = None  # None = on for CUDA (float16); on CPU only when True (bfloat16)
    channels_last: bool = False
    sync_bn: bool = False
    compile: bool = False  # torch.compile the module of the training forward (EMA, checkpoints stay plain)
    spd_form: str = "spd"  # SPD-Conv layers train as "spd" (space-to-depth + conv) or "strided" (one strided conv)

    # run directory and bookkeeping
    project: str = "runs/train"
    name: str = "exp"
    exist_ok: bool = False
    resume: str | bool | None = None  # path to last.pt / run dir, or True for PROJECT/NAME
    seed: int = 0
    deterministic: bool = False
    tensorboard: bool = False
    quiet: bool = False

    # options a task validates itself (e.g. detection hyper-parameters); a config file or the
    # command line may also give them at the top level (``mosaic: 0.5``), see task_option_keys()
    task_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the option when a value is out of range."""
        choices = {"optimizer": ("sgd", "adamw"), "schedule": ("step", "cosine", "linear"),
                   "schedule_unit": ("iter", "epoch"), "spd_form": ("spd", "strided"), "cache": ("", "ram", "disk")}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key} must be one of {allowed}, got {getattr(self, key)!r}")
        for key, (low, high) in bounds.TRAIN_INT_BOUNDS.items():
            value = getattr(self, key)
            if value is not None:
                bounds.check_int(key, value, low, high)
        for key, (low, high, low_open, high_open) in bounds.TRAIN_FLOAT_BOUNDS.items():
            value = getattr(self, key)
            if value is not None:
                bounds.check_float(key, value, low, high, low_open=low_open, high_open=high_open)
        for m in self.milestones:
            bounds.check_float("each of milestones (epochs)", m, 0, bounds.MAX_EPOCHS, low_open=True)
        from ..utils.device import check_device_name

        check_device_name(self.device)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data copy (for args.yaml and checkpoints)."""
        return dataclasses.asdict(self)


def config_keys() -> list[str]:
    """Names of all options."""
    return [f.name for f in dataclasses.fields(TrainConfig)]


_HINTS: dict[str, Any] | None = None


def _hints() -> dict[str, Any]:
    global _HINTS
    if _HINTS is None:
        _HINTS = typing.get_type_hints(TrainConfig)
    return _HINTS


def _coerce(key: str, value: Any, where: str) -> Any:
    """Check ``value`` against the field's type; ints are accepted for floats, nothing else is converted."""
    hint = _hints()[key]
    allowed = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None:
        if type(None) in allowed:
            return None
        raise ValueError(f"{where}: option {key!r} cannot be null")
    for t in allowed:
        origin = typing.get_origin(t) or t
        if origin is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if origin is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if origin is bool and isinstance(value, bool):
            return value
        if origin is str and isinstance(value, str):
            return value
        if origin is list and isinstance(value, (list, tuple)):
            (item_t,) = typing.get_args(t) or (Any,)
            if item_t is float:
                if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
                    raise ValueError(f"{where}: option {key!r} must be a list of numbers, got {value!r}")
                return [float(v) for v in value]
            return list(value)
        if origin is dict and isinstance(value, dict):
            return dict(value)
    names = " or ".join(getattr(t, "__name__", str(t)) for t in allowed)
    raise ValueError(f"{where}: option {key!r} must be {names}, got {value!r} ({type(value).__name__})")


def _task_option_keys() -> dict[str, Any]:
    from nostride.tasks import task_option_keys

    return task_option_keys()


def _normalise(options: dict[str, Any], where: str) -> dict[str, Any]:
    """Hyphens to underscores, unknown keys rejected with suggestions, values type-checked.

    Keys that are options of a task (e.g. detection's ``mosaic``) go into ``task_options``."""
    keys = config_keys()
    out: dict[str, Any] = {}
    task_keys = _task_option_keys()
    for raw_key, value in options.items():
        key = str(raw_key).replace("-", "_")
        if key not in keys and key in task_keys:
            out.setdefault("task_options", {})[key] = value
            continue
        if key == "task_options" and isinstance(value, dict):
            value = dict(value)
            if "cache" in value:  # a detection task option in files written by earlier versions
                out["cache"] = _coerce("cache", value.pop("cache"), where)
            out.setdefault("task_options", {}).update(value)
            continue
        if key not in keys:
            close = difflib.get_close_matches(key, keys + list(task_keys), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(f"{where}: unknown option {raw_key!r}{hint}")
        if key == "cache" and value in (False, None):
            value = ""  # "cache: false" / "--set cache=false": no cache
        out[key] = _coerce(key, value, where)
    return out


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML options file (``yaml.safe_load``) into validated ``{option: value}``; a name that is
    not a file is looked up among the shipped recipes (:func:`nostride.configs.find_config`)."""
    from nostride.configs import find_config

    path = find_config(path)
    data = read_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of option: value, got {type(data).__name__}")
    return _normalise(data, str(path))


def build_config(config_file: str | os.PathLike | None = None, **overrides: Any) -> TrainConfig:
    """The effective options: defaults < ``config_file`` < ``overrides``.

    Only options the caller really set belong in ``overrides`` (the CLI passes only the flags
    given on the command line), so defaults never clobber values from the file.
    """
    merged: dict[str, Any] = {}
    if config_file:
        _merge(merged, load_config_file(config_file))
    _merge(merged, _normalise(overrides, "options"))
    # the task's own defaults (e.g. a detector's hyperparameter file) sit between ours and the user's
    from nostride.tasks import task_default_options

    defaults = _normalise(task_default_options(merged), "task defaults")
    cfg = TrainConfig(**_merge(defaults, merged))
    from nostride.tasks import check_task_options

    check_task_options({"task": cfg.task, "model": cfg.model, "task_options": cfg.task_options, "hyp": cfg.hyp})
    return cfg


def merge_options(base: dict[str, Any], new: dict[str, Any], where: str = "options") -> dict[str, Any]:
    """``base`` (options as :func:`load_config_file` returns them) updated in place with ``new``,
    checked and normalised first: a task's option lands in ``task_options`` whichever way it was
    given (``--set cls=4`` and ``cls: 4`` in a recipe are the same option)."""
    return _merge(base, _normalise(new, where))


def _merge(base: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated with ``new`` in place; ``task_options`` merged key by key."""
    for k, v in new.items():
        if k == "task_options":
            base["task_options"] = {**base.get("task_options", {}), **v}
        else:
            base[k] = v
    return base


def save_config(cfg: TrainConfig, path: str | os.PathLike) -> Path:
    """Write the effective options as YAML (loadable again with ``--config``)."""
    from ..utils.atomic import atomic_write_text

    return atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
