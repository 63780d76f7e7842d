"""spdify on timm models: no strided op left, same shapes, same function (preserve init).

timm is a test extra; every test here skips when it is not installed.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from helpers import randomize_bn
import nostride
from nostride import spdify
from nostride.convert import SPDDownsample

timm = pytest.importorskip("timm")
pytestmark = pytest.mark.usefixtures("one_thread_module")

aten = torch.ops.aten
_WINDOW_OPS = {
    aten.convolution.default: 3,  # (input, weight, bias, stride, ...)
    aten.max_pool2d_with_indices.default: 2,  # (input, kernel, stride, ...)
    aten.max_pool2d.default: 2,
    aten.avg_pool2d.default: 2,
}


class StridedOps(TorchDispatchMode):
    """Records every convolution / pooling actually run with a stride > 1 (functional ones too)."""

    def __init__(self) -> None:
        super().__init__()
        self.strided: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        index = _WINDOW_OPS.get(func)
        if index is not None:
            stride = args[index] if len(args) > index else kwargs.get("stride")
            kernel = args[1] if func is not aten.convolution.default else None
            stride = stride or kernel  # pooling: stride [] means stride = kernel
            if stride and max(stride) > 1:
                self.strided.append(f"{func}(stride={list(stride)})")
        return func(*args, **kwargs)


def strided_ops_run(model: nn.Module, x: torch.Tensor) -> list[str]:
    with torch.no_grad(), StridedOps() as mode:
        model(x)
    return mode.strided


def assert_close(got: torch.Tensor, ref: torch.Tensor, rel: float = 1e-4) -> None:
    assert got.shape == ref.shape
    err = (got - ref).abs().max().item()
    assert err <= rel * ref.abs().max().item(), f"max abs diff {err} (outputs up to {ref.abs().max().item()})"


# (timm name, input sizes it accepts, what is special about it)
MODELS = [
    ("resnet18", [(64, 64), (67, 61)], "7x7 stem conv, strided max-pool, 1x1 shortcut"),
    ("efficientnet_b0", [(64, 64), (67, 61)], "depthwise 3x3/5x5 stride 2"),
    ("tf_efficientnet_b0", [(64, 64), (67, 61)], "Conv2dSame: TF 'SAME' padding from the input size"),
    ("regnetx_002", [(64, 64), (67, 61)], "grouped 3x3 stride 2"),
    ("convnext_atto", [(64, 64), (67, 61)], "4x4/s4 patchify stem, 2x2/s2 downsampling"),
    ("mobilenetv3_small_050", [(64, 64), (67, 61)], "hard-swish, SE, depthwise stride 2"),
    ("tresnet_m", [(64, 64), (96, 64)], "its own space-to-depth stem, BlurPool2d, ceil-mode avg-pool"),
]


@pytest.fixture(scope="module", params=MODELS, ids=[m[0] for m in MODELS])
def timm_model(request):
    name, sizes, _ = request.param
    model = timm.create_model(name, pretrained=False, num_classes=10).eval()
    return name, randomize_bn(model), sizes


def test_exact_conversion_keeps_the_function(timm_model):
    name, model, sizes = timm_model
    converted, report = spdify(model, pool={"max": "keep"}, example_input=(1, 3, *sizes[0]))
    assert report.count_action("converted") >= 3 and report.count_action("unsupported") == 0
    for hw in sizes:
        x = torch.randn(2, 3, *hw)
        # nothing strided runs any more except the max-pools that were kept
        left = strided_ops_run(converted, x)
        assert all("max_pool" in op for op in left), left
        with torch.no_grad():
            assert_close(converted(x), model(x))
    assert all(e.exact for e in report if e.action == "converted")
    # and the deployment form (SPD folded back into strided convs) still computes the same
    fused = nostride.fuse(converted)
    x = torch.randn(1, 3, *sizes[1])
    with torch.no_grad():
        assert_close(fused(x), model(x))


def test_full_conversion_leaves_no_strided_op_and_keeps_shapes(timm_model):
    name, model, sizes = timm_model
    assert strided_ops_run(model, torch.randn(1, 3, *sizes[0]))  # the original does downsample
    converted, report = spdify(model, example_input=(1, 3, *sizes[0]))
    assert report.count_action("converted") == len(report)
    modules, converted_modules = dict(model.named_modules()), dict(converted.named_modules())
    for hw in sizes:
        x = torch.randn(1, 3, *hw)
        assert strided_ops_run(converted, x) == []
        # every replacement has the output shape of the layer it replaced
        assert output_shapes(converted_modules, report, x, converted) == output_shapes(modules, report, x, model)


def output_shapes(modules: dict, report, x: torch.Tensor, model: nn.Module) -> dict[str, tuple]:
    shapes, handles = {}, []
    for e in report:
        hook = lambda m, i, o, n=e.name: shapes.__setitem__(n, tuple(o.shape))  # noqa: E731
        handles.append(modules[e.name].register_forward_hook(hook))
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return shapes


def test_pools_are_converted_without_an_example_input():
    # TResNet's first conv reads its space-to-depth stem's 48 channels: the input size comes from
    # the model's declared input (pretrained_cfg), not from that conv
    model = timm.create_model("tresnet_m", pretrained=False, num_classes=10).eval()
    converted, report = spdify(model)
    assert report.count_action("converted") == len(report) == 6
    with torch.no_grad():
        assert converted(torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_converted_timm_model_trains():
    model = timm.create_model("mobilenetv3_small_050", pretrained=False, num_classes=4)
    converted, _ = spdify(model)
    opt = torch.optim.Adam(converted.parameters(), lr=1e-3)
    x, y = torch.randn(8, 3, 64, 64), torch.tensor([0, 1, 2, 3] * 2)
    converted.train()
    losses = []
    for _ in range(5):
        loss = nn.functional.cross_entropy(converted(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    spd_convs = [m.conv for m in converted.modules() if isinstance(m, SPDDownsample)]
    assert spd_convs and all(c.weight.grad is not None for c in spd_convs)


# --- the timm layers spdify knows --------------------------------------------------------------------


@pytest.mark.parametrize("k,s,d", [(3, 2, 1), (5, 2, 1), (3, 2, 2), (1, 2, 1), (4, 4, 1)])
def test_conv2d_same_converted_exactly_for_every_parity(k, s, d):
    from timm.layers import Conv2dSame

    conv = Conv2dSame(4, 6, k, stride=s, dilation=d, bias=True)
    converted, report = spdify(nn.Sequential(conv))
    block = converted[0]
    assert isinstance(block, SPDDownsample) and block.input_padding == "same"
    assert "TF-SAME" in report[0].new
    for hw in [(8, 8), (9, 7), (13, 16), (5, 6)]:
        x = torch.randn(2, 4, *hw)
        assert_close(block(x), conv(x), rel=1e-5)


@pytest.mark.parametrize("filt_size,pad_mode", [(3, "reflect"), (5, "reflect"), (3, "constant")])
def test_blur_pool_becomes_a_trainable_depthwise_conv_initialised_to_the_filter(filt_size, pad_mode):
    from timm.layers import BlurPool2d

    blur = BlurPool2d(channels=6, filt_size=filt_size, stride=2, pad_mode=pad_mode)
    converted, report = spdify(nn.Sequential(blur))
    block = converted[0]
    assert isinstance(block, SPDDownsample) and block.conv.groups == 6 and block.conv.weight.requires_grad
    assert report[0].exact and report[0].params_after == block.conv.weight.numel()
    for hw in [(8, 8), (9, 7), (12, 15)]:
        x = torch.randn(2, 6, *hw)
        assert_close(block(x), blur(x), rel=1e-5)


def test_blur_pool_without_a_channel_count_is_reported_not_converted():
    from timm.layers import BlurPool2d

    with pytest.warns(UserWarning, match="left unchanged"):
        converted, report = spdify(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), BlurPool2d(channels=None)))
    assert report[0].action == "unsupported" and type(converted[1]).__name__ == "BlurPool2d"


def test_pool_subclass_with_its_own_forward_is_refused():
    from timm.layers.pool2d_same import MaxPool2dSame

    with pytest.raises(ValueError, match=r"layer '0'.*MaxPool2dSame overrides"):
        spdify(nn.Sequential(MaxPool2dSame(3, 2)), example_input=(1, 3, 16, 16))
    kept, _ = spdify(nn.Sequential(MaxPool2dSame(3, 2)), pool="keep")
    assert type(kept[0]).__name__ == "MaxPool2dSame"


@pytest.mark.slow
def test_timm_same_padding_and_blur_pool_export_to_onnx_with_dynamic_sizes(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from timm.layers import BlurPool2d, Conv2dSame

    from nostride.export import export_onnx

    model = nn.Sequential(Conv2dSame(3, 8, 5, stride=2), BlurPool2d(8, 3, 2))
    converted, _ = spdify(model.eval())
    # export_onnx checks onnxruntime against PyTorch at each shape (even and odd sizes: the TF-SAME
    # padding differs between them)
    export_onnx(converted, tmp_path / "m.onnx", (1, 3, 32, 32), dynamic=True, check_shapes=[(2, 3, 37, 35)])


@pytest.mark.slow
def test_cli_converts_a_timm_model_with_a_space_to_depth_stem_and_the_checkpoint_rebuilds(tmp_path, capsys):
    from nostride.checkpoint import model_from_checkpoint
    from nostride.cli import main

    out = tmp_path / "tresnet_spd.pt"
    main(["convert", "timm:tresnet_m", "--img-size", "64", "--num-classes", "10", "--output", str(out)])
    assert "6 converted" in capsys.readouterr().out
    rebuilt = model_from_checkpoint(out).eval()
    assert type(rebuilt).__name__ == "TResNet"
    assert [type(m).__name__ for m in rebuilt.modules()].count("SPDDownsample") == 6
    with torch.no_grad():
        assert rebuilt(torch.randn(1, 3, 64, 64)).shape == (1, 10)
