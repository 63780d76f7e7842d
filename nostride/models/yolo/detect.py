"""YOLOv5's detection head: one 1x1 conv per level, and the box decoding used at inference."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

__all__ = ["Detect"]


def _tracing() -> bool:
    return torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()


class Detect(nn.Module):
    """YOLOv5 ``Detect``: per level a biased ``Conv2d(ch_i, na * (nc + 5), 1)``.

    Training mode returns the raw maps, one per level, shaped (bs, na, ny, nx, no) with
    ``no = nc + 5`` = [x, y, w, h, obj, cls...]. Eval mode returns ``(decoded, raw)`` where
    ``decoded`` is (bs, sum(na*ny*nx), no) in input pixels after a sigmoid on everything:

        xy = (2*sigmoid(t_xy) - 0.5 + grid_xy) * stride,   wh = (2*sigmoid(t_wh))**2 * anchor_px

    Args:
        nc: number of classes.
        anchors: per level a flat list of pixel ``w, h`` pairs, or an int per level (number of
            anchors; placeholder values to be replaced by autoanchor).
        ch: input channels of each level.
        inplace: decode with in-place slice assignments (YOLOv5's default) or with concatenation.

    The ``anchors`` buffer (nl, na, 2) holds anchors in *grid units* (pixels / stride) once the
    model that owns the head has set ``stride`` (see :class:`~nostride.models.yolo.YOLOv5`).
    ``stride`` is a non-persistent buffer: it follows ``.to()`` but is not in the state dict,
    exactly like YOLOv5's plain attribute.
    """

    def __init__(self, nc: int = 80, anchors: Sequence = (), ch: Sequence[int] = (), inplace: bool = True) -> None:
        super().__init__()
        anchors = [list(a) if not isinstance(a, int) else list(range(2 * a)) for a in anchors]
        if not anchors or any(len(a) == 0 or len(a) % 2 or len(a) != len(anchors[0]) for a in anchors):
            raise ValueError(
                f"Detect: anchors must be one list of w,h pairs per level, all of the same length; got {anchors!r}"
            )
        if len(ch) != len(anchors):
            raise ValueError(f"Detect: {len(anchors)} anchor levels but {len(ch)} input layers")
        self.nc = int(nc)
        self.no = self.nc + 5
        self.nl = len(anchors)
        self.na = len(anchors[0]) // 2
        self.inplace = inplace
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32).view(self.nl, -1, 2))
        self.register_buffer("stride", torch.zeros(self.nl), persistent=False)
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in ch)
        self.grid: list[torch.Tensor] = [torch.zeros(1)] * self.nl  # cached cell offsets per level

    def forward(self, x: list[torch.Tensor]) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        x = list(x)
        z = []
        for i in range(self.nl):
            x[i] = self.m[i](x[i])
            bs, _, ny, nx = x[i].shape
            # (bs, na*no, ny, nx) -> (bs, na, ny, nx, no)
            x[i] = x[i].view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
            if not self.training:
                z.append(self._decode(x[i], i).view(bs, -1, self.no))
        return x if self.training else (torch.cat(z, 1), x)

    def _decode(self, p: torch.Tensor, i: int) -> torch.Tensor:
        ny, nx = p.shape[2:4]
        grid = self._grid(nx, ny, i, p)
        stride = self.stride[i].to(p.dtype)
        anchor_px = (self.anchors[i] * self.stride[i]).view(1, self.na, 1, 1, 2).to(p.dtype)
        y = p.sigmoid()
        if self.inplace:
            y[..., 0:2] = (y[..., 0:2] * 2 - 0.5 + grid) * stride
            y[..., 2:4] = (y[..., 2:4] * 2) ** 2 * anchor_px
            return y
        xy = (y[..., 0:2] * 2 - 0.5 + grid) * stride
        wh = (y[..., 2:4] * 2) ** 2 * anchor_px
        return torch.cat((xy, wh, y[..., 4:]), -1)

    def _grid(self, nx: int, ny: int, i: int, like: torch.Tensor) -> torch.Tensor:
        """(1, 1, ny, nx, 2) cell indices (x, y); cached, rebuilt when the size/device/dtype changes."""
        g = self.grid[i]
        if _tracing() or g.shape[2:4] != (ny, nx) or g.device != like.device or g.dtype != like.dtype:
            yv, xv = torch.meshgrid(
                torch.arange(ny, device=like.device), torch.arange(nx, device=like.device), indexing="ij"
            )
            g = torch.stack((xv, yv), 2).view(1, 1, ny, nx, 2).to(like.dtype)
            if not _tracing():
                self.grid[i] = g
        return g

    @torch.no_grad()
    def initialize_biases(self, class_freq: torch.Tensor | None = None) -> None:
        """YOLOv5's prior on the output biases, *added* to the current (PyTorch default) values.

        objectness += log(8 / (640 / s)**2) (about 8 objects per 640x640 image at stride s);
        classes += log(0.6 / (nc - 0.99)), or log(class_freq / class_freq.sum()) when given.
        Needs ``stride`` to be set.
        """
        if not bool((self.stride > 0).all()):
            raise RuntimeError("Detect.initialize_biases: strides are not set yet")
        for conv, s in zip(self.m, self.stride.tolist()):
            b = conv.bias.view(self.na, -1)  # a view: writes go to the parameter
            b[:, 4] += math.log(8 / (640 / s) ** 2)
            if class_freq is None:
                b[:, 5:] += math.log(0.6 / (self.nc - 0.99))
            else:
                freq = torch.as_tensor(class_freq, dtype=b.dtype, device=b.device)
                b[:, 5:] += torch.log(freq / freq.sum())

    def extra_repr(self) -> str:
        return f"nc={self.nc}, na={self.na}, nl={self.nl}"
