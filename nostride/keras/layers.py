"""Keras 3 layers: space-to-depth and SPD-Conv, in nostride's channel order."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

__all__ = ["SPDConv", "SpaceToDepth", "load_torch_weights", "space_to_depth"]


def _data_format(data_format: str | None) -> str:
    fmt = keras.config.image_data_format() if data_format is None else data_format
    if fmt not in ("channels_last", "channels_first"):
        raise ValueError(f"data_format must be 'channels_last' or 'channels_first', got {data_format!r}")
    return fmt


def _check_scale(scale: Any) -> int:
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 2:
        raise ValueError(f"scale must be an integer >= 2, got {scale!r}")
    return scale


def space_to_depth(x, scale: int = 2, data_format: str | None = None, pad: bool = True):
    """Move every ``scale x scale`` block of pixels into channels (nostride's order).

    Output channel ``(r + s*c)*C + k`` holds input channel ``k`` at row offset ``r`` and column
    offset ``c`` of each block, as :func:`nostride.space_to_depth` in PyTorch.

    Args:
        x: (N, H, W, C) for ``channels_last``, (N, C, H, W) for ``channels_first``.
        scale: block size ``s`` (an integer >= 2).
        data_format: ``"channels_last"`` or ``"channels_first"``; default Keras'
            ``image_data_format()``.
        pad: zero-pad height/width that are not multiples of ``s`` at the bottom/right (output
            ``ceil(H/s) x ceil(W/s)``), or raise ``ValueError``.

    Returns:
        (N, ceil(H/s), ceil(W/s), s*s*C) or (N, s*s*C, ceil(H/s), ceil(W/s)).
    """
    s = _check_scale(scale)
    fmt = _data_format(data_format)
    if len(x.shape) != 4:
        raise ValueError(f"space_to_depth expects a 4-D input, got shape {tuple(x.shape)}")
    shape = ops.shape(x)
    if fmt == "channels_last":
        n, h, w, ch = shape
    else:
        n, ch, h, w = shape
    pad_h, pad_w = (-h) % s, (-w) % s
    if pad_h or pad_w:
        if not pad:
            raise ValueError(
                f"space_to_depth: input of shape {tuple(x.shape)} has a height or width not divisible by "
                f"scale={s}; pass pad=True to zero-pad at the bottom/right"
            )
        spatial = [[0, pad_h], [0, pad_w]]
        x = ops.pad(x, [[0, 0], *spatial, [0, 0]] if fmt == "channels_last" else [[0, 0], [0, 0], *spatial])
    ho, wo = (h + pad_h) // s, (w + pad_w) // s
    if fmt == "channels_last":
        # (N, Ho, r, Wo, c, C) -> (N, Ho, Wo, c, r, C): block index r + s*c, channels fastest
        x = ops.reshape(x, (n, ho, s, wo, s, ch))
        x = ops.transpose(x, (0, 1, 3, 4, 2, 5))
        return ops.reshape(x, (n, ho, wo, s * s * ch))
    # (N, C, Ho, r, Wo, c) -> (N, c, r, C, Ho, Wo)
    x = ops.reshape(x, (n, ch, ho, s, wo, s))
    x = ops.transpose(x, (0, 5, 3, 1, 2, 4))
    return ops.reshape(x, (n, s * s * ch, ho, wo))


def _spd_output_shape(input_shape, scale: int, data_format: str) -> tuple:
    def down(size):
        return None if size is None else -(-size // scale)

    if data_format == "channels_last":
        n, h, w, ch = input_shape
        return (n, down(h), down(w), None if ch is None else ch * scale * scale)
    n, ch, h, w = input_shape
    return (n, None if ch is None else ch * scale * scale, down(h), down(w))


@keras.saving.register_keras_serializable(package="nostride")
class SpaceToDepth(keras.layers.Layer):
    """Space-to-depth layer: parameter-free, lossless, downsamples by ``scale``.

    Args:
        scale: block size (an integer >= 2).
        data_format: ``"channels_last"`` or ``"channels_first"``; default Keras' setting.
        pad: zero-pad sizes that are not multiples of ``scale`` (default) or raise.
    """

    def __init__(self, scale: int = 2, data_format: str | None = None, pad: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.scale = _check_scale(scale)
        self.data_format = _data_format(data_format)
        self.pad = pad

    def call(self, inputs):
        return space_to_depth(inputs, self.scale, self.data_format, self.pad)

    def compute_output_shape(self, input_shape):
        return _spd_output_shape(input_shape, self.scale, self.data_format)

    def get_config(self) -> dict:
        return {**super().get_config(), "scale": self.scale, "data_format": self.data_format, "pad": self.pad}


@keras.saving.register_keras_serializable(package="nostride")
class SPDConv(keras.layers.Layer):
    """SPD(scale) -> stride-1 ``Conv2D`` ("same" padding) -> ``BatchNormalization`` -> activation.

    The Keras twin of :class:`nostride.SPDConv`: same arguments and defaults where Keras allows
    (``bn_momentum`` is PyTorch's, 0.1; Keras' momentum is ``1 - bn_momentum``), same function
    with the same weights (:func:`load_torch_weights`).

    Args:
        filters: output channels.
        kernel_size: odd kernel size of the non-strided convolution.
        scale: space-to-depth block size (the downsampling factor).
        norm: add ``BatchNormalization`` after the convolution (the conv then has no bias).
        activation: Keras activation name or callable (``None``: none); default ``"relu"``.
        pad: zero-pad inputs whose size is not divisible by ``scale`` (default) or raise.
        use_bias: force a conv bias on or off; default ``not norm``.
        bn_eps: BatchNorm epsilon (PyTorch's default 1e-5).
        bn_momentum: BatchNorm momentum in PyTorch's convention (weight of the new batch).
        data_format: ``"channels_last"`` or ``"channels_first"``; default Keras' setting.
        **kwargs: passed to ``keras.layers.Layer`` (``name``, ``dtype``...).

    Sub-layers: ``spd``, ``conv`` (``Conv2D``), ``bn`` (``BatchNormalization`` or ``None``),
    ``act`` (``Activation``).
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int = 3,
        scale: int = 2,
        norm: bool = True,
        activation: Any = "relu",
        pad: bool = True,
        use_bias: bool | None = None,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
        data_format: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"SPDConv needs an odd kernel_size for 'same' padding, got {kernel_size!r}")
        self.filters = int(filters)
        self.kernel_size = kernel_size
        self.scale = _check_scale(scale)
        self.norm = norm
        self.activation = keras.activations.get(activation)
        self.pad = pad
        self.use_bias = (not norm) if use_bias is None else use_bias
        self.bn_eps = bn_eps
        self.bn_momentum = bn_momentum
        self.data_format = _data_format(data_format)
        self.spd = SpaceToDepth(scale, self.data_format, pad, name="spd")
        self.conv = keras.layers.Conv2D(
            self.filters,
            kernel_size,
            strides=1,
            padding="same",  # odd kernel, stride 1: symmetric k//2, as in PyTorch
            use_bias=self.use_bias,
            data_format=self.data_format,
            name="conv",
        )
        axis = -1 if self.data_format == "channels_last" else 1
        self.bn = (
            keras.layers.BatchNormalization(axis=axis, momentum=1.0 - bn_momentum, epsilon=bn_eps, name="bn")
            if norm
            else None
        )
        self.act = keras.layers.Activation(self.activation, name="act")

    def build(self, input_shape) -> None:
        spd_shape = self.spd.compute_output_shape(input_shape)
        self.conv.build(spd_shape)
        if self.bn is not None:
            self.bn.build(self.conv.compute_output_shape(spd_shape))
        self.built = True

    def call(self, inputs, training=None):
        x = self.conv(self.spd(inputs))
        if self.bn is not None:
            x = self.bn(x, training=training)
        return self.act(x)

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(self.spd.compute_output_shape(input_shape))

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "scale": self.scale,
            "norm": self.norm,
            "activation": keras.activations.serialize(self.activation),
            "pad": self.pad,
            "use_bias": self.use_bias,
            "bn_eps": self.bn_eps,
            "bn_momentum": self.bn_momentum,
            "data_format": self.data_format,
        }


def load_torch_weights(layer: SPDConv, module) -> SPDConv:
    """Copy the weights of a PyTorch :class:`nostride.SPDConv` into a Keras :class:`SPDConv`.

    The conv kernel is transposed from PyTorch's (out, in, kh, kw) to Keras' (kh, kw, in, out);
    channels need no re-ordering (both layers use the same space-to-depth order). BatchNorm
    weight, bias, running mean and variance go to gamma, beta, moving mean and variance.

    Args:
        layer: the Keras layer (built, or built here from the PyTorch module's channels).
        module: the PyTorch ``nostride.SPDConv`` (or any module with ``conv`` and optional ``bn``).

    Returns:
        ``layer``.

    Raises:
        ValueError: the two layers disagree on kernel size, scale, channels, bias or norm.
    """
    conv = module.conv
    weight = conv.weight.detach().cpu().numpy()
    out_ch, in_ch, kh, kw = weight.shape
    scale = getattr(module, "scale", layer.scale)
    if (kh, kw) != (layer.kernel_size, layer.kernel_size) or scale != layer.scale or out_ch != layer.filters:
        raise ValueError(
            f"load_torch_weights: PyTorch layer has kernel {kh}x{kw}, scale {scale}, {out_ch} outputs; the Keras "
            f"layer has kernel {layer.kernel_size}, scale {layer.scale}, {layer.filters} filters"
        )
    if in_ch % (layer.scale**2):
        raise ValueError(f"load_torch_weights: {in_ch} conv inputs is not a multiple of scale**2 = {layer.scale**2}")
    if not layer.built:
        c = in_ch // layer.scale**2
        layer.build((None, None, None, c) if layer.data_format == "channels_last" else (None, c, None, None))
    has_bias = conv.bias is not None
    if has_bias != layer.use_bias:
        raise ValueError(f"load_torch_weights: PyTorch conv bias={has_bias}, Keras use_bias={layer.use_bias}")
    values = [weight.transpose(2, 3, 1, 0)]
    if has_bias:
        values.append(conv.bias.detach().cpu().numpy())
    layer.conv.set_weights(values)
    bn = getattr(module, "bn", None)
    torch_has_bn = bn is not None and hasattr(bn, "running_mean")
    if torch_has_bn != (layer.bn is not None):
        raise ValueError(f"load_torch_weights: PyTorch norm={torch_has_bn}, Keras norm={layer.bn is not None}")
    if layer.bn is not None:
        layer.bn.set_weights(
            [np.asarray(t.detach().cpu().numpy()) for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var)]
        )
    return layer
