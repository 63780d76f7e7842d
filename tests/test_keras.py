"""nostride.keras: SpaceToDepth and SPDConv on the Keras torch backend, against the PyTorch layers.

keras is a test extra; every test here skips when it is not installed (no TensorFlow needed).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
if keras.backend.backend() != "torch":
    pytest.skip(f"Keras runs on the {keras.backend.backend()} backend here; these tests use torch",
                allow_module_level=True)

import nostride  # noqa: E402
from helpers import randomize_bn  # noqa: E402
from nostride.keras import SPDConv, SpaceToDepth, load_torch_weights, space_to_depth  # noqa: E402

pytestmark = [
    pytest.mark.usefixtures("one_thread_module"),
    # Keras' torch backend converts tensors with np.array(x) (its own code, harmless)
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"),
]
FORMATS = ["channels_last", "channels_first"]


def to_keras(x: torch.Tensor, fmt: str) -> torch.Tensor:
    return x.permute(0, 2, 3, 1).contiguous() if fmt == "channels_last" else x


def from_keras(y, fmt: str) -> torch.Tensor:
    y = torch.as_tensor(keras.ops.convert_to_numpy(y))
    return y.permute(0, 3, 1, 2) if fmt == "channels_last" else y


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("scale", [2, 3])
@pytest.mark.parametrize("hw", [(8, 12), (9, 7)])
def test_space_to_depth_is_nostrides_channel_order(fmt, scale, hw):
    x = torch.randn(2, 5, *hw)
    ref = nostride.space_to_depth(x, scale)
    layer = SpaceToDepth(scale, data_format=fmt)
    got = from_keras(layer(to_keras(x, fmt)), fmt)
    assert torch.equal(got, ref)
    assert tuple(layer.compute_output_shape(tuple(to_keras(x, fmt).shape))) == tuple(to_keras(ref, fmt).shape)
    # the order spelled out: channel (r + s*c)*C + k is x[k, r::s, c::s] (even sizes: no padding)
    if hw[0] % scale == 0 and hw[1] % scale == 0:
        for r in range(scale):
            for c in range(scale):
                block = got[:, (r + scale * c) * 5 : (r + scale * c + 1) * 5]
                assert torch.equal(block, x[:, :, r::scale, c::scale])


def test_space_to_depth_without_padding_refuses_odd_sizes():
    with pytest.raises(ValueError, match="not divisible"):
        space_to_depth(torch.randn(1, 7, 7, 3), 2, "channels_last", pad=False)
    with pytest.raises(ValueError, match="scale"):
        SpaceToDepth(1)


CONFIGS = {
    "k3_bn_relu": dict(kernel_size=3, norm=True, act="relu"),
    "k1_bn_silu": dict(kernel_size=1, norm=True, act="silu"),
    "k3_bias_no_norm": dict(kernel_size=3, norm=False, act=None),
    "k5_scale3": dict(kernel_size=5, scale=3, norm=True, act="relu"),
}


def twin_layers(cfg: dict, fmt: str, in_channels: int = 3, out_channels: int = 8):
    torch_layer = randomize_bn(nostride.SPDConv(in_channels, out_channels, **cfg)).eval()
    kwargs = {k: v for k, v in cfg.items() if k != "act"}
    keras_layer = SPDConv(out_channels, activation=cfg["act"], data_format=fmt, **kwargs)
    load_torch_weights(keras_layer, torch_layer)
    return torch_layer, keras_layer


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("cfg", CONFIGS.values(), ids=CONFIGS.keys())
def test_spd_conv_matches_pytorch_with_the_same_weights(cfg, fmt):
    torch_layer, keras_layer = twin_layers(cfg, fmt)
    for hw in [(16, 16), (13, 10)]:
        x = torch.randn(2, 3, *hw)
        with torch.no_grad():
            ref = torch_layer(x)
        got = from_keras(keras_layer(to_keras(x, fmt), training=False), fmt)
        assert got.shape == ref.shape
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
        assert tuple(keras_layer.compute_output_shape(tuple(to_keras(x, fmt).shape))) == tuple(
            to_keras(ref, fmt).shape
        )


@pytest.mark.parametrize("fmt", FORMATS)
def test_training_mode_batch_norm_matches_pytorch(fmt):
    torch_layer, keras_layer = twin_layers(CONFIGS["k3_bn_relu"], fmt)
    torch_layer.train()
    x = torch.randn(4, 3, 12, 12)
    ref = torch_layer(x).detach()
    got = from_keras(keras_layer(to_keras(x, fmt), training=True), fmt)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    # running mean updated with PyTorch's momentum convention (0.1 of the batch)
    moving_mean = keras.ops.convert_to_numpy(keras_layer.bn.moving_mean)
    np.testing.assert_allclose(moving_mean, torch_layer.bn.running_mean.numpy(), rtol=1e-5, atol=1e-6)


def test_load_torch_weights_refuses_a_mismatch():
    torch_layer = nostride.SPDConv(3, 8, kernel_size=3)
    with pytest.raises(ValueError, match="kernel"):
        load_torch_weights(SPDConv(8, kernel_size=5), torch_layer)
    with pytest.raises(ValueError, match="norm"):
        load_torch_weights(SPDConv(8, norm=False, use_bias=False), torch_layer)


def test_model_trains_saves_and_reloads(tmp_path):
    inputs = keras.Input((None, None, 3))
    x = SPDConv(8, name="down1")(inputs)
    x = SpaceToDepth(2)(x)
    x = SPDConv(16, kernel_size=1, scale=2, activation="silu")(x)
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.SparseCategoricalCrossentropy(True))
    images = np.random.default_rng(0).normal(size=(16, 17, 15, 3)).astype("float32")
    labels = (images.mean(axis=(1, 2, 3)) > 0).astype("int64")
    history = model.fit(images, labels, batch_size=8, epochs=3, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    path = tmp_path / "spd.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    assert isinstance(reloaded.get_layer("down1"), SPDConv)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(reloaded.predict(images, verbose=0)),
        keras.ops.convert_to_numpy(model.predict(images, verbose=0)),
        rtol=1e-5, atol=1e-5,
    )
