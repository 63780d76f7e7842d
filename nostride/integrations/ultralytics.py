"""SPD-Conv in ultralytics YOLOv8 / YOLO11 (``pip install "nostride[ultralytics]"``).

ultralytics is AGPL-3.0: this module imports it and subclasses/wraps its objects at run time; it
contains none of its code. Three things:

- :class:`SPDConv`: ultralytics' ``Conv`` with space-to-depth in front of a stride-1 conv. In a
  model YAML, ``[-1, 1, SPDConv, [128, 3, 2]]`` stands where ``[-1, 1, Conv, [128, 3, 2]]`` stood:
  the same channel bookkeeping (output channels scaled by the width multiple and capped by
  ``max_channels`` as for ``Conv``), the stride becomes the space-to-depth block size, and the
  conv after it has the smallest odd kernel that sees every pixel the strided conv saw (3 for
  3x3 stride 2, as in the paper).
- :func:`register`: teaches ultralytics' YAML parser the name ``SPDConv``. Importing this module
  registers it (so checkpoints holding SPDConv layers reload and retrain); the call is idempotent.
- :func:`spdify_yolo`: :func:`nostride.spdify` on a ``YOLO`` object, ready for ``.train()``. Plain
  ``nostride.spdify(yolo.model)`` works too: converted ``Conv`` layers become :class:`SPDConv` in
  place (their routing attributes ``i``, ``f``, ``type`` untouched) and the model's YAML names them
  ``SPDConv``, so ultralytics' trainer, which rebuilds the model from its YAML and loads the
  weights into it, rebuilds the SPD model.
"""

from __future__ import annotations

import copy
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

try:
    import ultralytics  # noqa: F401
    from ultralytics.nn import tasks as _tasks
    from ultralytics.nn.modules.conv import Conv, DWConv, autopad
    from ultralytics.utils import LOGGER as _LOGGER
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'nostride.integrations.ultralytics needs ultralytics: pip install "nostride[ultralytics]"'
    ) from e

from ..convert.geometry import AxisGeometry
from ..convert.modules import GroupedSpaceToDepth, SPDDownsample, _crop
from ..convert.thirdparty import register_after_spdify

__all__ = ["SPDConv", "register", "spd_model_yaml", "spdify_yolo", "use_local_fonts"]

_SPD_TYPE = f"{__name__}.SPDConv"


class SPDConv(Conv):
    """ultralytics ``Conv`` turned SPD-Conv: space-to-depth(s) -> stride-1 conv -> BN -> act.

    Same arguments as ``Conv`` (``c1, c2, k, s, p, g, d, act``), so a model YAML swaps one name
    for the other. ``s >= 2`` is the space-to-depth block size; the conv that follows has the
    smallest odd kernel holding every tap of the ``k x k`` stride-``s`` conv it replaces (3x3 s2
    -> 3, 1x1 s2 -> 1, 5x5 s2 -> 3, 7x7 s2 -> 5, 6x6 s2 p2 -> 3) and no stride. The output has
    ``Conv``'s size: ``ceil(H/s)`` for "same" padding (every odd ``k`` with ultralytics' autopad);
    otherwise (an even ``k`` such as YOLOv5u's 6x6 stem) the extra last rows/columns are cropped.
    ``g`` groups are kept apart (group-major space-to-depth). Children: ``spd``, ``conv``, ``bn``,
    ``act``; ultralytics' ``fuse()`` folds ``bn`` into ``conv`` as for ``Conv``.

    Raises:
        ValueError: ``s < 2``, or more padding than "same" (``2p > d*(k-1)``), which would need
            zero rows appended after space-to-depth.
    """

    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 2, p: Any = None, g: int = 1, d: int = 1, act: Any = True):
        k, s, d = _single(k, "k"), _single(s, "s"), _single(d, "d")
        p = _single(autopad(k, p, d), "p")
        if s < 2:
            raise ValueError(f"SPDConv needs a stride >= 2 (the space-to-depth block size), got s={s}; use Conv")
        geometry = AxisGeometry(k, s, p, d)
        if 2 * p > d * (k - 1):
            raise ValueError(f"SPDConv(k={k}, s={s}, p={p}, d={d}): padding beyond 'same' (2p > d*(k-1)) is not supported")
        kernel = geometry.min_odd_kernel()
        super().__init__(c1 * s * s, c2, kernel, 1, kernel // 2, g, 1, act)
        self.spd = GroupedSpaceToDepth((s, s), g)
        self.geometry = geometry

    def _downsample(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(self.spd(x))
        g = self.geometry
        if g.same_size():  # the stride-1 conv's ceil(H/s) rows are the strided conv's
            return y
        return _crop(y, g.output_size(x.shape[-2]), g.output_size(x.shape[-1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self._downsample(x)))

    def forward_fuse(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self._downsample(x))


def _single(value: Any, name: str) -> int:
    if isinstance(value, (tuple, list)):
        if len(set(value)) != 1:
            raise ValueError(f"SPDConv needs a square {name}, got {value!r}")
        value = value[0]
    return int(value)


# --- YAML: the name SPDConv in ultralytics' parser -----------------------------------------------


def register() -> None:
    """Make ``SPDConv`` usable by name in ultralytics model YAML files (idempotent).

    ultralytics' parser knows the channel rules of its own modules only, so rows naming
    ``SPDConv`` are parsed as ``Conv`` rows (same channel bookkeeping) and the built ``Conv``
    layers are then replaced by :class:`SPDConv` layers with the same channels, kernel, stride,
    groups and activation (``i``, ``f`` and ``np`` set as ultralytics sets them, ``type`` naming
    SPDConv). The parser's own table, printed while it builds, still lists those rows as
    ``Conv`` with a strided conv's parameter count; a line after it gives the SPDConv counts.
    """
    current = _tasks.parse_model
    if getattr(current, "_nostride_spdconv", False):
        return
    original = current

    def parse_model(d, ch, verbose=True):
        rows = list(d.get("backbone", [])) + list(d.get("head", []))
        spd_rows = [i for i, row in enumerate(rows) if len(row) > 2 and row[2] in ("SPDConv", SPDConv)]
        if not spd_rows:
            return original(d, ch, verbose)
        d = copy.deepcopy(d)
        for i in spd_rows:
            section, j = ("backbone", i) if i < len(d["backbone"]) else ("head", i - len(d["backbone"]))
            d[section][j][2] = "Conv"
        layers, save = original(d, ch, verbose)
        for i in spd_rows:
            layers[i] = _spd_conv_like(layers[i], i)
        if verbose:
            counts = ", ".join(f"{i}: {layers[i].np:,}" for i in spd_rows)
            _LOGGER.info(f"nostride: rows {spd_rows} are SPDConv (parsed as Conv above); their parameters: {counts}")
        return layers, save

    parse_model._nostride_spdconv = True  # type: ignore[attr-defined]
    parse_model.__wrapped__ = original  # type: ignore[attr-defined]
    parse_model.__doc__ = original.__doc__
    _tasks.parse_model = parse_model
    _tasks.SPDConv = SPDConv  # the name resolves in the parser's namespace too


def _spd_conv_like(layer: nn.Module, index: int) -> nn.Module:
    if isinstance(layer, nn.Sequential):  # a row repeated n > 1 times
        new = nn.Sequential(*(_spd_conv_like(m, index) for m in layer))
    else:
        c = layer.conv
        new = SPDConv(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0], c.padding[0], c.groups,
                      c.dilation[0], act=layer.act)
    new.i, new.f, new.type = layer.i if hasattr(layer, "i") else index, getattr(layer, "f", -1), _SPD_TYPE
    new.np = sum(p.numel() for p in new.parameters())
    return new


def spd_model_yaml(cfg: str | dict) -> dict:
    """A model YAML (dict, or a name/path ultralytics resolves) with every strided ``Conv`` row as ``SPDConv``.

    E.g. ``spd_model_yaml("yolov8n.yaml")``: the five backbone and two neck downsampling rows
    ``[-1, 1, Conv, [C, 3, 2]]`` become ``[-1, 1, SPDConv, [C, 3, 2]]``; everything else stays.
    Pass the result to ``ultralytics.nn.tasks.DetectionModel(cfg=...)`` or write it to a file for
    ``YOLO(path)``.
    """
    if isinstance(cfg, dict):
        d = copy.deepcopy(cfg)
    else:
        d = _tasks.yaml_model_load(cfg)
        d.pop("yaml_file", None)  # bookkeeping ultralytics adds when loading; not part of the model
        if not d.get("scale"):
            d.pop("scale", None)  # ultralytics guesses it from the file name (yolov8n-spd.yaml -> n)
    for section in ("backbone", "head"):
        for row in d.get(section, []):
            args = row[3] if len(row) > 3 else []
            if row[2] == "Conv" and len(args) >= 3 and _single(args[2], "s") >= 2:
                row[2] = "SPDConv"
    return d


# --- spdify on ultralytics models ----------------------------------------------------------------


def adopt_spdified(model: nn.Module) -> list[str]:
    """After :func:`nostride.spdify`: turn converted ``Conv`` layers into :class:`SPDConv`, name them in the YAML.

    A ``Conv``/``DWConv`` whose strided conv became an ``SPDDownsample`` (square stride, no
    padding beyond "same": every ultralytics conv) becomes an :class:`SPDConv` in place (same object: ``i``,
    ``f``, ``type``, hooks kept; its ``spd`` and ``conv`` are the converted ones), so ultralytics'
    ``fuse()`` folds its BatchNorm as before. Top-level ``Conv`` rows of each model's YAML are
    renamed ``SPDConv``, so a model rebuilt from the YAML (ultralytics' trainer does that, then
    loads the weights) has the same layers.

    Returns:
        qualified names of converted layers a rebuilt-from-YAML model would not have (strided
        convs nested inside other modules, e.g. YOLOv10's SCDown, YOLOv9's ADown, or converted
        with a larger ``kernel_size`` than a YAML ``SPDConv`` builds); empty when none.
    """
    for m in model.modules():
        if type(m) in (Conv, DWConv) and isinstance(m.conv, SPDDownsample):
            block = m.conv
            gh, gw = block.geometry
            if gh != gw or any(block._extend) or block.input_padding is not None or block.avg_divisor is not None:
                continue
            m.spd, m.conv, m.geometry = block.spd, block.conv, gh
            fused = "forward" in m.__dict__  # ultralytics' fuse() set forward = forward_fuse on the instance
            m.__class__ = SPDConv
            if fused:
                m.forward = m.forward_fuse
            if hasattr(m, "np"):
                m.np = sum(p.numel() for p in m.parameters())
    not_in_yaml = []
    for name, m in model.named_modules():
        if isinstance(m, _tasks.BaseModel) and isinstance(getattr(m, "yaml", None), dict):
            not_in_yaml += [f"{name}.{n}" if name else n for n in _rename_yaml_rows(m)]
    return not_in_yaml


def _rename_yaml_rows(det: nn.Module) -> list[str]:
    rows = list(det.yaml.get("backbone", [])) + list(det.yaml.get("head", []))
    missing = []
    for i, layer in enumerate(det.model):
        top_level = isinstance(layer, SPDConv) and i < len(rows) and rows[i][2] in ("Conv", "SPDConv")
        # a YAML SPDConv row builds the smallest exact kernel; spdify(kernel_size=K) may have chosen larger
        default_kernel = top_level and layer.conv.kernel_size == (layer.geometry.min_odd_kernel(),) * 2
        if top_level and default_kernel:
            rows[i][2] = "SPDConv"
            continue
        for name, m in layer.named_modules():
            if isinstance(m, (SPDConv, SPDDownsample)):
                missing.append(f"model.{i}.{name}" if name else f"model.{i}")
    return missing


def spdify_yolo(yolo, **spdify_kwargs):
    """Convert a ``ultralytics.YOLO`` object to SPD-Conv in place, ready for ``.train()``/``.val()``/``.predict()``.

    Runs :func:`nostride.spdify` on ``yolo.model`` (keyword arguments are spdify's; the default,
    ``init="preserve"``, keeps a pretrained model's function) and makes ultralytics' trainer
    start from the converted weights also when the ``YOLO`` was built from a YAML file.

    Args:
        yolo: an ``ultralytics.YOLO`` (or other ``ultralytics.engine.model.Model``).
        **spdify_kwargs: options of :func:`nostride.spdify` (``exclude``, ``kernel_size``...).

    Returns:
        ``(yolo, report)``: the same object, converted, and spdify's report.

    Raises:
        ValueError: a strided conv was converted that the model's YAML cannot name (nested in
            another module); ultralytics' trainer, which rebuilds models from their YAML, would
            silently drop it. Exclude it (``exclude=[...]``).
    """
    from ..convert import spdify

    if not isinstance(getattr(yolo, "model", None), _tasks.BaseModel):
        raise ValueError(f"spdify_yolo expects an ultralytics YOLO object holding a PyTorch model, got {type(yolo).__name__}")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="spdify: converted layers .* not named in the model's YAML")
        converted, report = spdify(yolo.model, **spdify_kwargs)
    missing = adopt_spdified(converted)
    if missing:
        raise ValueError(
            f"spdify_yolo: the model YAML cannot name converted layers {missing} (they sit inside other modules, "
            "or kernel_size= made their kernel larger than a YAML SPDConv's), and ultralytics' trainer would "
            "rebuild the model without them; exclude them (exclude=[...]) or keep the default kernel_size"
        )
    yolo.model = converted
    if not yolo.ckpt:
        # ultralytics' train() starts from yolo.model only when it came from a checkpoint; otherwise
        # it rebuilds the original YAML file and the conversion would be lost
        yolo.ckpt = {"model": converted}
    yolo.predictor = None
    return yolo, report


def use_local_fonts() -> list[Path]:
    """Give ultralytics local fonts, so it never downloads ``Arial.ttf`` / ``Arial.Unicode.ttf``.

    ultralytics looks for these fonts in its settings folder (``YOLO_CONFIG_DIR``, by default
    ``~/.config/Ultralytics``) each time it checks a dataset, even with ``plots=False``, and
    downloads them when they are missing, whatever ``YOLO_OFFLINE`` says. This copies matplotlib's
    DejaVu Sans (a dependency of nostride) there under both names, only where no such file exists;
    labels on ultralytics' plots are then drawn in DejaVu Sans.

    Returns:
        the font files written (empty when both were there already).
    """
    import matplotlib

    from ultralytics.utils import USER_CONFIG_DIR

    source = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    written = []
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        target = Path(USER_CONFIG_DIR) / name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{name}.tmp")
            shutil.copyfile(source, tmp)
            tmp.replace(target)  # atomic: a concurrent ultralytics never reads half a font
            written.append(target)
    return written


def _after_spdify(model: nn.Module) -> None:
    """spdify's finishing step for ultralytics models (registered below): :func:`adopt_spdified`,
    with a warning for converted layers the model's YAML cannot name."""
    missing = adopt_spdified(model)
    if missing:
        warnings.warn(
            f"spdify: converted layers {missing} are not named in the model's YAML (they sit inside other "
            "modules, or have a larger kernel than a YAML SPDConv); ultralytics' trainer rebuilds models from "
            "their YAML and would drop them",
            stacklevel=4,
        )


register()
register_after_spdify("ultralytics.", _after_spdify)
