"""``spdify``: turn any CNN built from ``torch.nn`` modules into an SPD-Conv network.

Every ``nn.Conv2d`` with a stride > 1 becomes space-to-depth followed by a stride-1 convolution
with the same output channels, and every strided ``nn.MaxPool2d`` / ``nn.AvgPool2d`` becomes
space-to-depth followed by a channel-preserving convolution (:class:`SPDDownsample`). With
``init="preserve"`` the new convolutions start out computing exactly what the strided layers
computed (see :mod:`nostride.convert.geometry` for the tap mapping); max-pooling, which is not
linear, starts out as the average of its window. docs/convert.md has the details.

This module decides what to replace (options, which layers are strided, the channel count each
pool sees); :mod:`nostride.convert.replace` builds each replacement and its weights.
"""

from __future__ import annotations

import copy
import fnmatch
import warnings
from typing import Mapping, Sequence, Union

import torch
from torch import nn
from torch.nn.modules.utils import _pair

from ..utils.profile import count_parameters
from .fuse import _require_python_module
from .modules import SPDDownsample
from .replace import replace_conv, replace_pool, spd_weight_from_strided
from .report import ConversionEntry, ConversionReport
from .thirdparty import StridedEquivalent, after_spdify, strided_equivalent

__all__ = ["spdify", "spd_weight_from_strided"]  # the latter re-exported from .replace

PoolPolicy = Union[str, Mapping[str, str]]
_POOL_POLICIES = ("convert", "keep", "drop")
_INITS = ("preserve", "random")
_POOL_CONVS = ("full", "depthwise")
# strided layers spdify meets but does not convert (reported and warned about)
_OTHER_STRIDED = (
    nn.Conv1d,
    nn.Conv3d,
    nn.MaxPool1d,
    nn.MaxPool3d,
    nn.AvgPool1d,
    nn.AvgPool3d,
    nn.LPPool1d,
    nn.LPPool2d,
)


def spdify(
    model: nn.Module,
    *,
    kernel_size: int | tuple[int, int] | None = None,
    pool: PoolPolicy = "convert",
    init: str = "preserve",
    exclude: str | Sequence[str] = (),
    pool_conv: str = "full",
    example_input: torch.Tensor | Sequence[int] | None = None,
    inplace: bool = False,
) -> tuple[nn.Module, ConversionReport]:
    """Replace strided convolutions and pooling layers by SPD-Conv (space-to-depth + stride-1 conv).

    Args:
        model: any network built from ``torch.nn`` modules (torchvision, timm, your own).
        kernel_size: odd kernel size of the new convolutions (int or (h, w)). ``None`` (default):
            per layer, the smallest odd kernel that holds every input the strided layer read
            (3x3 stride 2 -> 3, 7x7 stride 2 -> 5, 1x1 or 2x2 stride 2 -> 1, 4x4 stride 4 -> 1).
            With ``init="preserve"`` a kernel smaller than that raises ``ValueError``.
        pool: ``"convert"`` (default): SPD + a channel-preserving convolution; ``"keep"``: leave
            the pooling layer; ``"drop"``: replace it by ``nn.Identity`` (the paper drops ResNet's
            max-pool for small images; the spatial size then changes). A mapping such as
            ``{"max": "keep", "avg": "convert"}`` sets max- and average-pooling separately.
        init: ``"preserve"`` (default): the converted model computes exactly what the original
            did, except converted max-pools (initialised to the average of their window);
            ``"random"``: PyTorch's default initialisation, for training from scratch.
        exclude: ``fnmatch`` patterns of qualified module names to leave alone, e.g.
            ``["features.0*"]``; a pattern that matches a module also excludes everything in it.
        pool_conv: ``"full"`` (default): the convolution replacing a pool mixes all channels
            (``C*s*s -> C``, as in the paper); ``"depthwise"``: one group per channel (``s*s -> 1``).
        example_input: an input the model accepts (or its shape), run once to learn the channel
            count of each pooling layer to convert (pools do not record it). Default: zeros of
            the model's declared input size (timm's ``pretrained_cfg["input_size"]``), else of
            shape (1, C, 224, 224), C the in_channels of the model's first ``Conv2d``.
        inplace: convert ``model`` itself instead of a deep copy.

    Returns:
        ``(converted_model, report)``: the report lists every strided layer met and what became
        of it; ``print(report)`` gives a table with parameter counts.

    Raises:
        ValueError: bad option, or a layer that cannot be converted as asked (the message names
            the layer): a kernel too small for ``preserve``, string padding other than "valid",
            a ``Conv2d`` subclass with its own forward, a max-pool with ``return_indices``, a
            pooling layer used with different channel counts.
    """
    _require_python_module(model, "spdify")
    kernel = _check_kernel_option(kernel_size)
    policy = _pool_policy(pool)
    if init not in _INITS:
        raise ValueError(f"init must be one of {_INITS}, got {init!r}")
    if pool_conv not in _POOL_CONVS:
        raise ValueError(f"pool_conv must be one of {_POOL_CONVS}, got {pool_conv!r}")
    patterns = [exclude] if isinstance(exclude, str) else list(exclude)

    params_before = count_parameters(model)
    if not inplace:
        model = copy.deepcopy(model)
    named = list(model.named_modules(remove_duplicate=False))
    _warn_unused_patterns(patterns, [name for name, _ in named])

    # decide per module (a module shared under several names is decided once)
    plan: dict[int, tuple[str, str, nn.Module]] = {}  # id -> (first name, kind, module)
    for name, module in named:
        kind = _strided_kind(module)
        if kind is not None and id(module) not in plan:
            plan[id(module)] = (name, kind, module)
    to_convert_pools = [
        m
        for name, kind, m in plan.values()
        if kind in ("maxpool", "avgpool") and policy[kind] == "convert" and not _excluded(name, patterns)
    ]
    pool_inputs = _pool_input_specs(model, to_convert_pools, example_input, plan) if to_convert_pools else {}

    entries: list[ConversionEntry] = []
    replacement: dict[int, nn.Module] = {}
    unsupported = []
    for name, kind, module in plan.values():
        old = repr(module)
        before = count_parameters(module)
        if _excluded(name, patterns):
            entries.append(ConversionEntry(name, kind, "excluded", old, old, before, before, True))
            continue
        if kind == "other":
            unsupported.append(name or type(module).__name__)
            entries.append(ConversionEntry(name, kind, "unsupported", old, old, before, before, True))
            continue
        if kind == "conv":
            new: nn.Module = replace_conv(name, module, kernel, init)
            action, exact = "converted", init == "preserve"
        elif policy[kind] == "keep":
            entries.append(ConversionEntry(name, kind, "kept", old, old, before, before, True))
            continue
        elif policy[kind] == "drop":
            if getattr(module, "return_indices", False):
                raise ValueError(f"spdify: layer {name!r} ({old}) returns indices; it cannot be dropped")
            new, action, exact = nn.Identity(), "dropped", False
        else:
            channels, device, dtype = pool_inputs[id(module)]
            new = replace_pool(name, module, kind, channels, kernel, init, pool_conv, device, dtype)
            action, exact = "converted", init == "preserve" and kind == "avgpool"
        new.train(module.training)
        replacement[id(module)] = new
        desc = new.describe() if isinstance(new, SPDDownsample) else repr(new)
        entries.append(ConversionEntry(name, kind, action, old, desc, before, count_parameters(new), exact))
    if unsupported:
        warnings.warn(
            f"spdify: strided layers of a kind it does not convert were left unchanged: {', '.join(unsupported)}",
            stacklevel=2,
        )

    for name, module in named:
        if id(module) in replacement:
            if name == "":
                model = replacement[id(module)]
            else:
                parent_name, _, attr = name.rpartition(".")
                setattr(model.get_submodule(parent_name), attr, replacement[id(module)])
    after_spdify(model)  # e.g. ultralytics: converted Conv layers become its SPDConv, named in the YAML
    report = ConversionReport(entries, params_before, count_parameters(model))
    # Record how the model was made (plain data), so a checkpoint of it can be rebuilt:
    # nostride.checkpoint stores this and model_from_checkpoint re-applies spdify before loading.
    if isinstance(example_input, torch.Tensor):
        example_shape = list(example_input.shape)
    else:
        example_shape = list(example_input) if example_input is not None else None
    options = {
        "kernel_size": list(kernel) if kernel else None,
        "pool": {"max": policy["maxpool"], "avg": policy["avgpool"]},
        "exclude": patterns,
        "pool_conv": pool_conv,
        "example_input": example_shape,
    }
    model.spdify_options = [*getattr(model, "spdify_options", []), options]
    return model, report


# --- options -----------------------------------------------------------------------------------


def _check_kernel_option(kernel_size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if kernel_size is None:
        return None
    kernel = tuple(int(k) for k in _pair(kernel_size))
    if any(k < 1 or k % 2 == 0 for k in kernel):
        raise ValueError(f"kernel_size must be odd (the new convolutions use 'same' padding), got {kernel_size!r}")
    return kernel  # type: ignore[return-value]


def _pool_policy(pool: PoolPolicy) -> dict[str, str]:
    if isinstance(pool, str):
        policy = {"max": pool, "avg": pool}
    elif isinstance(pool, Mapping):
        unknown = set(pool) - {"max", "avg"}
        if unknown:
            raise ValueError(f"pool mapping keys must be 'max' and/or 'avg', got {sorted(unknown)}")
        policy = {"max": pool.get("max", "convert"), "avg": pool.get("avg", "convert")}
    else:
        raise ValueError(f"pool must be a policy name or a mapping, got {type(pool).__name__}")
    for value in policy.values():
        if value not in _POOL_POLICIES:
            raise ValueError(f"pool policy must be one of {_POOL_POLICIES}, got {value!r}")
    return {"maxpool": policy["max"], "avgpool": policy["avg"]}


def _excluded(name: str, patterns: list[str]) -> bool:
    """True if ``name`` or one of its parents matches an exclude pattern."""
    if not patterns:
        return False
    parts = name.split(".") if name else [""]
    prefixes = [".".join(parts[: i + 1]) for i in range(len(parts))]
    return any(fnmatch.fnmatchcase(p, pat) for p in prefixes for pat in patterns)


def _warn_unused_patterns(patterns: list[str], names: list[str]) -> None:
    unused = [pat for pat in patterns if not any(fnmatch.fnmatchcase(n, pat) for n in names)]
    if unused:
        warnings.warn(f"spdify: exclude patterns that match no module: {unused}", stacklevel=3)


# --- what is strided ---------------------------------------------------------------------------


def _strided_kind(module: nn.Module) -> str | None:
    """``"conv"``, ``"maxpool"``, ``"avgpool"``, ``"other"`` for a strided layer, else None."""
    foreign = strided_equivalent(module)  # timm's Conv2dSame, BlurPool2d (a fixed depthwise conv)
    if foreign is not None:
        return "conv" if isinstance(foreign, StridedEquivalent) else "other"
    if isinstance(module, nn.Conv2d):
        return "conv" if any(s > 1 for s in module.stride) else None
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        stride = _pair(module.stride if module.stride is not None else module.kernel_size)
        if any(s > 1 for s in stride):
            return "maxpool" if isinstance(module, nn.MaxPool2d) else "avgpool"
        return None
    if isinstance(module, _OTHER_STRIDED):
        stride = module.stride if module.stride is not None else module.kernel_size
        stride = stride if isinstance(stride, tuple) else (stride,)
        return "other" if any(s > 1 for s in stride) else None
    return None



# --- pooling ------------------------------------------------------------------------------------


def _pool_input_specs(
    model: nn.Module,
    pools: list[nn.Module],
    example_input: torch.Tensor | Sequence[int] | None,
    plan: dict[int, tuple[str, str, nn.Module]],
) -> dict[int, tuple[int, torch.device, torch.dtype]]:
    """Run the model once and record (channels, device, dtype) of each pool's input."""
    x = _example_tensor(model, example_input)
    seen: dict[int, list[torch.Tensor]] = {id(p): [] for p in pools}

    def record(module: nn.Module, args: tuple) -> None:
        seen[id(module)].append(args[0])

    handles = [p.register_forward_pre_hook(record) for p in pools]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    except Exception as e:
        raise ValueError(
            f"spdify: running the model on an input of shape {tuple(x.shape)} (to learn the channel count "
            f"of its pooling layers) failed: {e}. Pass example_input= with an input the model accepts."
        ) from e
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()

    specs = {}
    for p in pools:
        name = plan[id(p)][0]
        inputs = seen[id(p)]
        if not inputs:
            raise ValueError(
                f"spdify: pooling layer {name!r} ({p!r}) was not used by the model's forward on the example "
                "input, so its channel count is unknown; exclude it or keep pools (pool='keep')"
            )
        channels = sorted({t.shape[1] for t in inputs if t.dim() == 4})
        if len(channels) != 1:
            raise ValueError(
                f"spdify: pooling layer {name!r} ({p!r}) is used on inputs with {channels or 'non-4-D'} channels; "
                "a convolution needs one channel count per module: give each use its own pooling module, or "
                "exclude it / pool='keep'"
            )
        specs[id(p)] = (channels[0], inputs[0].device, inputs[0].dtype)
    return specs


def _example_tensor(model: nn.Module, example_input: torch.Tensor | Sequence[int] | None) -> torch.Tensor:
    if isinstance(example_input, torch.Tensor):
        return example_input
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    if example_input is not None:
        return torch.zeros(*example_input, device=device, dtype=dtype)
    # timm models declare their input (TResNet's first conv reads a space-to-depth stem's 48 channels)
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)
    input_size = cfg.get("input_size") if isinstance(cfg, dict) else None
    if isinstance(input_size, (tuple, list)) and len(input_size) == 3:
        return torch.zeros(1, *input_size, device=device, dtype=dtype)
    first_conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first_conv is None:
        raise ValueError("spdify: the model has no Conv2d to guess its input channels from; pass example_input=")
    return torch.zeros(1, first_conv.in_channels, 224, 224, device=device, dtype=dtype)
