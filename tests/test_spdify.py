"""spdify: strided convs / pools -> SPD + stride-1 conv, exact with preserve-init, on any CNN."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nostride import space_to_depth, spdify
from nostride.convert import ConversionReport, SPDDownsample, grouped_space_to_depth
from nostride.utils import count_parameters

ODD_SIZES = [(8, 8), (9, 7), (13, 16)]


def assert_close(got: torch.Tensor, ref: torch.Tensor, rel: float = 1e-4) -> None:
    assert got.shape == ref.shape
    err = (got - ref).abs().max().item()
    assert err <= rel * max(ref.abs().max().item(), 1e-3), f"max abs diff {err}"


def strided_layers(model: nn.Module, pools: bool = True) -> list[str]:
    """Names of the strided Conv2d (and MaxPool2d/AvgPool2d) layers left in ``model``."""
    kinds = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d) if pools else (nn.Conv2d,)
    left = []
    for name, m in model.named_modules():
        if isinstance(m, kinds):
            stride = m.stride if m.stride is not None else m.kernel_size
            stride = stride if isinstance(stride, tuple) else (stride, stride)
            if max(stride) > 1:
                left.append(name)
    return left


def convert_one(layer: nn.Module, channels: int, **kwargs) -> nn.Module:
    converted, report = spdify(nn.Sequential(layer), example_input=(1, channels, 12, 12), **kwargs)
    assert isinstance(converted[0], SPDDownsample)
    return converted


# --- space-to-depth used by the replacement ---------------------------------------------------------


def test_grouped_space_to_depth_is_the_papers_order_for_one_group():
    x = torch.randn(2, 3, 9, 7)
    assert torch.equal(grouped_space_to_depth(x, (2, 2), 1), space_to_depth(x, 2))
    assert torch.equal(grouped_space_to_depth(x, (3, 3), 1), space_to_depth(x, 3))


def test_grouped_space_to_depth_orders_channels_group_major():
    x = torch.randn(1, 4, 6, 9)
    sh, sw, groups, cg = 2, 3, 2, 2
    y = grouped_space_to_depth(x, (sh, sw), groups)
    assert y.shape == (1, 4 * sh * sw, 3, 3)
    for g in range(groups):
        for r in range(sh):
            for c in range(sw):
                for k in range(cg):
                    channel = g * (sh * sw * cg) + (r + sh * c) * cg + k
                    assert torch.equal(y[0, channel], x[0, g * cg + k, r::sh, c::sw])


# --- convolutions: exact equivalence ------------------------------------------------------------


CONVS = {
    "3x3s2p1": dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1),
    "7x7s2p3_bias": dict(in_channels=3, out_channels=5, kernel_size=7, stride=2, padding=3, bias=True),
    "1x1s2": dict(in_channels=4, out_channels=8, kernel_size=1, stride=2),
    "2x2s2_crop": dict(in_channels=4, out_channels=8, kernel_size=2, stride=2),
    "4x4s4_crop": dict(in_channels=3, out_channels=8, kernel_size=4, stride=4),
    "3x3s3p0": dict(in_channels=2, out_channels=4, kernel_size=3, stride=3),
    "1x1s2p1_overpad": dict(in_channels=2, out_channels=3, kernel_size=1, stride=2, padding=1),
    "5x5s2p2_dilation2": dict(in_channels=2, out_channels=3, kernel_size=5, stride=2, padding=2, dilation=2),
    "non_square_stride_2x1": dict(in_channels=4, out_channels=4, kernel_size=3, stride=(2, 1), padding=1),
    "rect_kernel_3x1_s(1,3)": dict(in_channels=2, out_channels=4, kernel_size=(3, 1), stride=(1, 3), padding=(1, 0)),
    "groups2": dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=1, groups=2, bias=True),
    "depthwise": dict(in_channels=4, out_channels=4, kernel_size=3, stride=2, padding=1, groups=4),
    "depthwise_x2_5x5": dict(in_channels=4, out_channels=8, kernel_size=5, stride=2, padding=2, groups=4),
    "reflect": dict(in_channels=3, out_channels=4, kernel_size=3, stride=2, padding=1, padding_mode="reflect"),
    "circular": dict(in_channels=3, out_channels=4, kernel_size=3, stride=2, padding=1, padding_mode="circular"),
    "valid_string": dict(in_channels=3, out_channels=4, kernel_size=3, stride=2, padding="valid"),
}


@pytest.mark.parametrize("cfg", CONVS.values(), ids=CONVS.keys())
def test_strided_conv_converted_exactly(cfg):
    conv = nn.Conv2d(**{"bias": False, **cfg})
    converted = convert_one(conv, cfg["in_channels"])
    assert strided_layers(converted) == []
    assert converted[0].conv.stride == (1, 1) and converted[0].conv.out_channels == cfg["out_channels"]
    for hw in ODD_SIZES:
        x = torch.randn(2, cfg["in_channels"], *hw)
        assert_close(converted(x), conv(x), rel=1e-5)


def test_grouped_conversion_keeps_groups_apart():
    # group 1's output must not depend on group 0's input (it would with block-major SPD order)
    conv = nn.Conv2d(4, 4, 3, 2, 1, groups=2)
    converted = convert_one(conv, 4)
    assert converted[0].conv.groups == 2
    x = torch.randn(1, 4, 10, 10)
    x2 = x.clone()
    x2[:, :2] = torch.randn(1, 2, 10, 10)
    out, out2 = converted(x), converted(x2)
    assert torch.equal(out[:, 2:], out2[:, 2:])
    assert not torch.allclose(out[:, :2], out2[:, :2])


def test_automatic_kernel_sizes():
    cases = {(7, 2, 3): 5, (3, 2, 1): 3, (1, 2, 0): 1, (2, 2, 0): 1, (4, 4, 0): 1, (5, 2, 2): 3}
    for (k, s, p), expected in cases.items():
        converted = convert_one(nn.Conv2d(3, 4, k, s, p), 3)
        assert converted[0].conv.kernel_size == (expected, expected), (k, s, p)


def test_preserve_zeroes_taps_the_strided_conv_never_read():
    conv = nn.Conv2d(1, 1, 3, 2, 1, bias=False)
    w = convert_one(conv, 1)[0].conv.weight.detach()
    # 3x3 s2 p1 reads offsets a in {-1, 0}: the last row/column of the 3x3 kernel is never used
    assert w.shape == (1, 4, 3, 3)
    assert torch.count_nonzero(w[..., 2, :]) == 0 and torch.count_nonzero(w[..., :, 2]) == 0
    assert torch.count_nonzero(w) == 9


def test_larger_requested_kernel_is_still_exact():
    conv = nn.Conv2d(3, 4, 3, 2, 1)
    converted = convert_one(conv, 3, kernel_size=5)
    assert converted[0].conv.kernel_size == (5, 5)
    x = torch.randn(1, 3, 11, 12)
    assert_close(converted(x), conv(x), rel=1e-5)


def test_too_small_kernel_under_preserve_names_the_layer():
    model = nn.Sequential(nn.Conv2d(3, 4, 7, 2, 3), nn.ReLU())
    with pytest.raises(ValueError, match=r"layer '0'.*at least 5x5"):
        spdify(model, kernel_size=3)
    converted, _ = spdify(model, kernel_size=3, init="random")  # allowed for training from scratch
    assert converted[0].conv.kernel_size == (3, 3)
    assert converted(torch.randn(1, 3, 9, 9)).shape == model(torch.randn(1, 3, 9, 9)).shape


def test_bad_options_raise():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1))
    for kwargs in (dict(kernel_size=2), dict(pool="remove"), dict(init="zeros"), dict(pool={"min": "keep"})):
        with pytest.raises(ValueError):
            spdify(model, **kwargs)


def test_random_init_is_pytorch_default_not_preserved():
    conv = nn.Conv2d(3, 8, 3, 2, 1)
    converted = convert_one(conv, 3, init="random")
    w = converted[0].conv.weight
    assert torch.count_nonzero(w) == w.numel()  # no structural zeros
    bound = 1 / (3 * 4 * 9) ** 0.5  # kaiming_uniform(a=sqrt(5)) bound over fan_in = 12 * 3 * 3
    assert w.abs().max() <= bound + 1e-6
    x = torch.randn(1, 3, 9, 9)
    assert converted(x).shape == conv(x).shape


def test_conv_subclass_with_own_forward_is_refused():
    class WeightStdConv(nn.Conv2d):
        def forward(self, x):
            w = self.weight - self.weight.mean(dim=(1, 2, 3), keepdim=True)
            return F.conv2d(x, w, self.bias, self.stride, self.padding)

    with pytest.raises(ValueError, match=r"layer 'body'.*WeightStdConv"):
        spdify(_named("body", WeightStdConv(3, 4, 3, 2, 1)))


def _named(name: str, module: nn.Module) -> nn.Module:
    seq = nn.Sequential()
    seq.add_module(name, module)
    return seq


# --- pooling ---------------------------------------------------------------------------------------


AVG_POOLS = {
    "2x2": dict(kernel_size=2),
    "3x3s2p1": dict(kernel_size=3, stride=2, padding=1),
    "3x3s2p1_exclude_pad": dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
    "2x2_ceil_exclude_pad": dict(kernel_size=2, ceil_mode=True, count_include_pad=False),
    "3x3s2_ceil_include_pad": dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
    "divisor_override": dict(kernel_size=3, stride=2, padding=1, divisor_override=5),
    "non_square": dict(kernel_size=(2, 1), stride=(2, 1)),
}


@pytest.mark.parametrize("pool_conv", ["full", "depthwise"])
@pytest.mark.parametrize("cfg", AVG_POOLS.values(), ids=AVG_POOLS.keys())
def test_avg_pool_converted_exactly(cfg, pool_conv):
    pool = nn.AvgPool2d(**cfg)
    converted = convert_one(pool, 3, pool_conv=pool_conv)
    assert strided_layers(converted) == []
    conv = converted[0].conv
    stride = pool.stride if isinstance(pool.stride, tuple) else (pool.stride, pool.stride)
    assert conv.in_channels == 3 * stride[0] * stride[1] and conv.out_channels == 3
    assert conv.groups == (3 if pool_conv == "depthwise" else 1)
    for hw in ODD_SIZES:
        x = torch.randn(2, 3, *hw)
        assert_close(converted(x), pool(x), rel=1e-5)


@pytest.mark.parametrize(
    "cfg",
    [dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=2), dict(kernel_size=3, stride=2, ceil_mode=True)],
    ids=["3x3s2p1", "2x2", "3x3s2_ceil"],
)
def test_max_pool_starts_as_the_window_average(cfg):
    pool = nn.MaxPool2d(**cfg)
    converted, report = spdify(nn.Sequential(pool), example_input=(1, 3, 12, 12))
    assert report[0].kind == "maxpool" and report[0].action == "converted" and not report[0].exact
    k = cfg["kernel_size"]
    for hw in ODD_SIZES:
        x = torch.randn(2, 3, *hw)
        # documented init: sum of the k x k window (padding read as zeros) / (k*k)
        expected = F.avg_pool2d(
            x, k, cfg.get("stride"), cfg.get("padding", 0), cfg.get("ceil_mode", False), True, divisor_override=k * k
        )
        assert_close(converted(x), expected, rel=1e-5)
        assert converted(x).shape == pool(x).shape


def build_small_cnn() -> nn.Module:
    class SmallCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU())
            self.pool = nn.MaxPool2d(3, 2, 1)
            self.block = nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
            self.avg = nn.AvgPool2d(2, ceil_mode=True)
            self.head = nn.Linear(16, 5)

        def forward(self, x):
            x = self.avg(self.block(self.pool(self.stem(x))))
            return self.head(x.mean((2, 3)))

    return SmallCNN()


def test_pool_policies_keep_and_drop():
    model = build_small_cnn().eval()
    kept, report = spdify(model, pool="keep")
    assert isinstance(kept.pool, nn.MaxPool2d) and isinstance(kept.avg, nn.AvgPool2d)
    assert {e.name: e.action for e in report} == {
        "stem.0": "converted", "pool": "kept", "block.0": "converted", "avg": "kept"
    }
    x = torch.randn(2, 3, 23, 19)
    assert_close(kept(x), model(x))
    dropped, report = spdify(model, pool="drop")
    assert isinstance(dropped.pool, nn.Identity) and isinstance(dropped.avg, nn.Identity)
    assert strided_layers(dropped) == []
    # without the max-pool the block sees the stem's 12x10 map: twice the size (rounded up)
    assert dropped.block(dropped.pool(dropped.stem(x))).shape == (2, 16, 6, 5)
    assert dropped(x).shape == (2, 5)
    mixed, _ = spdify(model, pool={"max": "keep", "avg": "convert"})
    assert isinstance(mixed.pool, nn.MaxPool2d) and isinstance(mixed.avg, SPDDownsample)
    assert_close(mixed(x), model(x))


def test_custom_cnn_converted_same_shapes_and_gradients():
    model = build_small_cnn()
    converted, report = spdify(model)
    assert strided_layers(converted) == []
    assert report.count_action("converted") == 4
    x = torch.randn(2, 3, 21, 18)
    converted.train()
    out = converted(x)
    assert out.shape == model(x).shape
    out.square().mean().backward()
    for name, p in converted.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_pool_used_with_two_channel_counts_is_refused():
    class SharedPool(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 8, 3, padding=1)
            self.pool = nn.MaxPool2d(2)

        def forward(self, x):
            return self.pool(self.c2(self.pool(self.c1(x))))

    with pytest.raises(ValueError, match=r"'pool'.*\[4, 8\] channels"):
        spdify(SharedPool(), example_input=(1, 3, 16, 16))
    converted, _ = spdify(SharedPool(), pool="keep")  # the pool stays; convs have stride 1
    assert isinstance(converted.pool, nn.MaxPool2d)


def test_max_pool_with_indices_is_refused():
    with pytest.raises(ValueError, match="returns indices"):
        spdify(nn.Sequential(nn.MaxPool2d(2, return_indices=True)), example_input=(1, 3, 8, 8))


# --- options, report, copying -----------------------------------------------------------------------


def test_exclude_patterns_are_honoured():
    model = build_small_cnn()
    converted, report = spdify(model, exclude=["stem*", "avg"])
    assert isinstance(converted.stem[0], nn.Conv2d) and converted.stem[0].stride == (2, 2)
    assert isinstance(converted.avg, nn.AvgPool2d)
    assert isinstance(converted.block[0], SPDDownsample) and isinstance(converted.pool, SPDDownsample)
    assert {e.name for e in report if e.action == "excluded"} == {"stem.0", "avg"}
    with pytest.warns(UserWarning, match="match no module"):
        spdify(model, exclude=["nothing_called_like_this"], pool="keep")


def test_report_counts_match_the_models():
    model = build_small_cnn()
    converted, report = spdify(model)
    assert isinstance(report, ConversionReport)
    modules = dict(converted.named_modules())
    for e in report:
        assert e.params_after == count_parameters(modules[e.name])
        assert e.params_before == count_parameters(dict(model.named_modules())[e.name])
    assert report.model_params_before == count_parameters(model)
    assert report.model_params_after == count_parameters(converted)
    assert report.model_params_after - report.model_params_before == report.params_after - report.params_before
    text = str(report)
    assert "stem.0" in text and "block.0" in text and "Conv2d(3, 8, k=3, s=2, p=1)" in text
    assert f"{report.model_params_before:,} -> {report.model_params_after:,}" in text


def test_input_model_untouched_unless_inplace():
    model = build_small_cnn()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    converted, _ = spdify(model)
    assert converted is not model and isinstance(model.stem[0], nn.Conv2d)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    same, _ = spdify(model, inplace=True)
    assert same is model and isinstance(model.stem[0], SPDDownsample)


def test_root_module_can_be_a_strided_conv():
    conv = nn.Conv2d(3, 4, 3, 2, 1)
    converted, report = spdify(conv)
    assert isinstance(converted, SPDDownsample) and report[0].name == ""
    x = torch.randn(1, 3, 9, 9)
    assert_close(converted(x), conv(x), rel=1e-5)


def test_shared_conv_is_replaced_everywhere_by_one_module():
    conv = nn.Conv2d(4, 4, 3, 2, 1)
    model = nn.Sequential(conv, nn.ReLU(), conv)
    converted, report = spdify(model)
    assert isinstance(converted[0], SPDDownsample) and converted[0] is converted[2]
    assert len(report) == 1 and count_parameters(converted) == report.model_params_after
    x = torch.randn(1, 4, 13, 11)
    assert_close(converted(x), model(x), rel=1e-5)


def test_too_small_input_is_refused_like_the_original():
    converted = convert_one(nn.Conv2d(3, 4, 4, 4), 3)
    with pytest.raises(ValueError, match="too small"):
        converted(torch.randn(1, 3, 3, 8))


def test_unsupported_strided_layers_are_reported():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.Flatten(2), nn.Conv1d(4, 4, 3, stride=2))
    with pytest.warns(UserWarning, match="left unchanged: 2"):
        _, report = spdify(model)
    assert [e.action for e in report] == ["converted", "unsupported"]


def tricky_layers() -> nn.Module:
    """Layers exercising every shape path: "same" conv, crop (2x2 s2), zero-extension and border
    divisors (ceil_mode pools), grouped SPD."""
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, 2, 1),
        nn.Conv2d(4, 4, 3, 2, 1, groups=2),
        nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False),
        nn.MaxPool2d(3, 2, 1, ceil_mode=True),
        nn.Conv2d(4, 6, 2, 2),
    ).eval()


@pytest.mark.slow
def test_compiles_with_dynamic_shapes_without_graph_breaks():
    converted, _ = spdify(tricky_layers(), example_input=(1, 3, 32, 32))
    compiled = torch.compile(converted, fullgraph=True, dynamic=True, backend="eager")
    for hw in [(32, 32), (37, 35)]:
        x = torch.randn(1, 3, *hw)
        assert_close(compiled(x), converted(x), rel=1e-6)


@pytest.mark.slow
def test_onnx_export_with_dynamic_height_and_width(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from nostride.export import export_onnx

    model = tricky_layers()
    converted, _ = spdify(model, pool={"max": "keep"}, example_input=(1, 3, 32, 32))
    # export_onnx compares onnxruntime with PyTorch on each shape (odd ones included)
    path = export_onnx(converted, tmp_path / "m.onnx", (1, 3, 32, 32), dynamic=True, check_shapes=[(2, 3, 37, 35)])
    assert path.is_file()


# --- torchvision models ------------------------------------------------------------------------------

# (name, has strided max-pooling)
TORCHVISION = [
    ("resnet18", True),
    ("resnet50", True),
    ("vgg11_bn", True),
    ("mobilenet_v2", False),
    ("mobilenet_v3_small", False),
    ("efficientnet_b0", False),
    ("regnet_y_400mf", False),
    ("shufflenet_v2_x1_0", True),
    ("densenet121", True),
    ("convnext_tiny", False),
]


def output_shapes(model: nn.Module, names: list[str], x: torch.Tensor) -> dict[str, tuple]:
    shapes, handles = {}, []
    modules = dict(model.named_modules())
    for name in names:
        handles.append(modules[name].register_forward_hook(lambda m, i, o, n=name: shapes.__setitem__(n, o.shape)))
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return shapes


@pytest.mark.parametrize("name,has_max_pool", TORCHVISION, ids=[n for n, _ in TORCHVISION])
@pytest.mark.slow
def test_torchvision_model(name, has_max_pool):
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.get_model(name, weights=None, num_classes=10).eval()
    sizes = [(64, 64), (67, 61)]
    # exact: every strided conv and average pool converted, max-pools kept
    exact, report = spdify(model, pool={"max": "keep"}, example_input=(1, 3, 64, 64))
    assert strided_layers(exact, pools=False) == []
    left_pools = strided_layers(exact)
    assert all(isinstance(dict(exact.named_modules())[n], nn.MaxPool2d) for n in left_pools)
    assert bool(left_pools) == has_max_pool
    for hw in sizes:
        x = torch.randn(1, 3, *hw)
        with torch.no_grad():
            assert_close(exact(x), model(x))
    if has_max_pool:
        # everything converted: no strided layer left, each replacement has its layer's output shape
        full, report = spdify(model, example_input=(1, 3, 64, 64))
        assert strided_layers(full) == []
        names = [e.name for e in report]
        x = torch.randn(1, 3, *sizes[1])
        assert output_shapes(full, names, x) == output_shapes(model, names, x)
    assert report.count_action("converted") == len(report)


def test_converted_registry_model_round_trips_through_a_checkpoint(tmp_path):
    from nostride import create_model
    from nostride.checkpoint import make_checkpoint, model_from_checkpoint, save_checkpoint

    model = create_model("resnet18_cifar", num_classes=4, width=8)
    converted, _ = spdify(model, example_input=(1, 3, 32, 32), exclude=["layer4*"])
    converted, _ = spdify(converted, exclude=[])  # a second conversion is recorded too
    assert len(converted.spdify_options) == 2 and converted.spdify_options[0]["exclude"] == ["layer4*"]
    for m in converted.modules():  # non-default BN statistics, so a wrong rebuild shows
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
    save_checkpoint(make_checkpoint(converted.eval()), tmp_path / "spd.pt")
    rebuilt = model_from_checkpoint(tmp_path / "spd.pt")
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(rebuilt(x), converted(x))
    assert not strided_layers(rebuilt)


def test_an_integration_registers_its_finishing_step_for_its_library():
    """spdify runs the step registered for a library whose modules the model holds, and no other."""
    from nostride.convert import thirdparty

    class Block(nn.Module):  # a module of an outside library
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)

        def forward(self, x):
            return self.conv(x)

    Block.__module__ = "otherlib.blocks"
    seen = []
    thirdparty.register_after_spdify("otherlib.", lambda m: seen.append(type(m).__name__))
    try:
        spdify(nn.Sequential(Block()), example_input=(1, 3, 16, 16))
        assert seen == ["Sequential"]
        spdify(nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1)), example_input=(1, 3, 16, 16))
        assert seen == ["Sequential"]  # no otherlib module: not run
    finally:
        thirdparty._FINISHERS.pop("otherlib.", None)
