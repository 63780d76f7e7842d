"""The YOLOv5 detector assembled from a model definition (v6.0, YOLOv5-SPD, or user-defined)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...convert.fuse import fuse as fuse_module
from ...utils.profile import count_parameters
from .blocks import BN_EPS, BN_MOMENTUM
from .config import load_cfg, parse_model
from .detect import Detect
from .fold import fold_space_to_depth
from .names import default_names

__all__ = ["YOLOv5", "check_anchor_order"]

_PROBE_SIZE = 128  # strides come from a forward pass at this size (YOLOv5: 256; the same strides)


def _tracing() -> bool:
    return torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


@torch.no_grad()
def check_anchor_order(m: Detect) -> bool:
    """Flip the anchor levels if their area order disagrees with the stride order (YOLOv5 v6.0).

    Like v6.0 it compares the first anchor of the first level with the last anchor of the last
    level (in grid units). Returns True when it flipped them.
    """
    a = m.anchors.prod(-1).view(-1)
    da, ds = a[-1] - a[0], m.stride[-1] - m.stride[0]
    if da.sign() != ds.sign():
        m.anchors[:] = m.anchors.flip(0)
        return True
    return False


def _run_layers(layers: Any, save: list[int], x: torch.Tensor, outputs_for: Any = None) -> Any:
    """Run the layers in order; a layer reads the previous output or the saved ones its ``f`` names.

    With ``outputs_for`` (a ``from`` spec), return what a next layer with that spec would read
    instead of the last output.
    """
    y: list[Any] = []
    for m in layers:
        if m.f != -1:
            x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
        x = m(x)
        y.append(x if m.i in save else None)
    if outputs_for is not None and outputs_for != -1:
        return y[outputs_for] if isinstance(outputs_for, int) else [x if j == -1 else y[j] for j in outputs_for]
    return x


class YOLOv5(nn.Module):
    """YOLOv5 detector: ``model`` (an ``nn.ModuleList`` of layers routed by ``f``) and a :class:`Detect` head.

    State-dict keys, forward outputs, initialisation and parameter counts are those of YOLOv5
    v6.0's ``models.yolo.Model`` (and of the YOLOv5-SPD fork for its definitions), so a YOLOv5
    state dict of the same definition loads with ``strict=True``.

    Args:
        cfg: model definition: a dict, a YAML path, or a built-in name (see
            :func:`~nostride.models.yolo.config.load_cfg` and docs/yolo-config.md).
        num_classes: overrides the definition's ``nc``.
        in_chans: input channels; overrides the definition's ``ch`` (default 3).
        anchors: overrides the definition's anchors (pixel ``w, h`` pairs per level).

    Attributes:
        yaml: the definition actually built (with the overrides applied and ``ch`` set).
        names: class names (COCO's for 80 classes, ``class0``... otherwise).
        stride: strides of the detection levels, e.g. ``tensor([8., 16., 32.])``.
        save: indices of layers whose outputs later layers read.

    Forward: training mode returns the raw maps (bs, na, ny, nx, nc+5) per level; eval mode
    returns ``(decoded, raw)`` with ``decoded`` (bs, boxes, nc+5) = [x, y, w, h (pixels), obj,
    class scores] after sigmoid. Height and width must be multiples of the largest stride.
    """

    def __init__(
        self,
        cfg: dict | str | Path,
        num_classes: int | None = None,
        in_chans: int | None = None,
        anchors: list | int | None = None,
    ) -> None:
        super().__init__()
        self._source_cfg = load_cfg(cfg)
        self.yaml = copy.deepcopy(self._source_cfg)
        if num_classes is not None:
            self.yaml["nc"] = int(num_classes)
        if anchors is not None:
            self.yaml["anchors"] = anchors if isinstance(anchors, int) else [list(a) for a in anchors]
        if in_chans is not None:
            self.yaml["ch"] = int(in_chans)
        self.yaml.setdefault("ch", 3)
        self.model, self.save = parse_model(self.yaml, self.yaml["ch"])
        names = self.yaml.get("names")
        self.names = list(names) if isinstance(names, list) and len(names) == self.yaml["nc"] else default_names(self.yaml["nc"])
        self.inplace = bool(self.yaml.get("inplace", True))
        self.register_buffer("stride", torch.zeros(self.detect.nl), persistent=False)
        self._build()

    @property
    def detect(self) -> Detect:
        """The detection head (the last layer)."""
        return self.model[-1]

    @property
    def nc(self) -> int:
        return self.detect.nc

    def _build(self) -> None:
        m = self.detect
        m.inplace = self.inplace
        m.stride = self._probe_strides()
        if m.anchors.device.type == "meta":  # shapes only (a declared model checked before it is built)
            self.stride = m.stride.clone()
            return
        with torch.no_grad():
            m.anchors /= m.stride.view(-1, 1, 1)
        check_anchor_order(m)
        self.stride = m.stride.clone()
        m.initialize_biases()
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eps, module.momentum = BN_EPS, BN_MOMENTUM
            elif isinstance(module, (nn.Hardswish, nn.LeakyReLU, nn.ReLU, nn.ReLU6, nn.SiLU)):
                module.inplace = True

    def _probe_strides(self) -> torch.Tensor:
        """Strides of the Detect inputs: input size / feature height, as YOLOv5 measures them.

        A pass without gradients through this model's own layers up to the Detect head, in eval
        mode (BatchNorm statistics untouched; YOLOv5's training-mode pass moves every running_var
        from 1 to 0.9 once, which has no lasting effect), at 128 px: the strides are the same at any
        size the deepest stride (at most 64) divides, and the pass costs milliseconds. (A pass on the
        "meta" device would allocate nothing but makes PyTorch import its compiler stack to
        decompose batch norm: seconds.)
        """
        layers = self.model
        was_training = layers.training
        device = next(iter(layers.parameters())).device
        try:
            layers.eval()
            with torch.no_grad():
                x = torch.zeros(1, self.yaml["ch"], _PROBE_SIZE, _PROBE_SIZE, device=device)
                feats = _run_layers(layers[:-1], self.save, x, outputs_for=self.detect.f)
        finally:
            layers.train(was_training)
        return torch.tensor([_PROBE_SIZE / x.shape[-2] for x in feats], dtype=torch.float32)

    def forward(self, x: torch.Tensor) -> Any:
        if not _tracing() and bool((self.stride > 0).all()):
            s = int(self.stride.max())
            if x.shape[-2] % s or x.shape[-1] % s:
                raise ValueError(
                    f"YOLOv5: input height and width must be multiples of {s}, got {tuple(x.shape[-2:])} "
                    "(letterbox or resize the image first)"
                )
        return _run_layers(self.model, self.save, x)

    @torch.no_grad()
    def fuse(self) -> "YOLOv5":
        """Fold every BatchNorm into its conv, and SPD into the conv after it where possible.

        Each layer is fused on its own (layers are never merged, so indices, ``from`` links and
        the Detect head stay as they are). Focus and SPDConv (space-to-depth then a stride-1
        conv) become one strided conv with the same parameter count. The released YOLOv5-SPD
        order, a stride-1 conv *then* a space-to-depth layer, has that SPD folded into what
        reads it (:func:`~nostride.models.yolo.fold.fold_space_to_depth`: the C3's 1x1 input
        convs become 2x2 stride-2 convs of the tensor before SPD), so no space-to-depth data
        movement is left and the parameter count is unchanged.
        The model keeps its train/eval mode; the result is only meant for inference.

        Returns:
            self.
        """
        was_training = self.training
        for idx, layer in enumerate(self.model):
            fused = fuse_module(layer, inplace=True)
            if fused is not layer:
                for attr in ("i", "f", "type"):
                    setattr(fused, attr, getattr(layer, attr))
                self.model[idx] = fused
            fused.np = count_parameters(fused)
        fold_space_to_depth(self)
        self.train(was_training)
        return self

    def fuse_module(self) -> "YOLOv5":
        """Hook of :func:`nostride.fuse`: fuse layer by layer, keeping the routing attributes."""
        return self.fuse()

    # create_model() records the kwargs a model was built with so checkpoints can rebuild it;
    # a cfg given as a path would tie the checkpoint to that file, so record the dict instead.
    @property
    def model_kwargs(self) -> dict:
        return self._model_kwargs

    @model_kwargs.setter
    def model_kwargs(self, kwargs: dict) -> None:
        kwargs = dict(kwargs)
        if "cfg" in kwargs and not isinstance(kwargs["cfg"], dict):
            kwargs["cfg"] = copy.deepcopy(self._source_cfg)
        self._model_kwargs = kwargs

    def extra_repr(self) -> str:
        return f"nc={self.nc}, stride={self.stride.tolist()}"
