"""The downsampling operators of nostride.layers: formulas on hand-computed cases, shapes at odd
sizes, parameter and FLOP counts, the two exact equivalences, half precision, fuse and ONNX."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nostride.layers import (
    ADown, BlurConv, BlurPool2d, ConvEqual, HWD, HaarDownsample, MaxBlurPool, PoolConv, SCDown, SPDConv,
    build_downsample, downsample_op, list_downsample_ops,
)
from nostride.layers.downsample import haar_mixing, haar_weight_to_spd, spd_weight_to_haar, strided_weight_to_spd
from nostride.layers.fused import FusedSPDConv, spd_weight_to_strided
from nostride.utils.profile import count_flops

pytestmark = pytest.mark.usefixtures("one_thread_module")

OPS = list_downsample_ops()


def test_registry_lists_every_operator_and_refuses_unknown_names_listing_them():
    assert {"strided", "spd", "conv-spd", "conv-equal", "blurpool", "blurpool5", "hwd", "adown", "scdown",
            "avgpool-conv", "maxpool-conv"} <= set(OPS)
    with pytest.raises(ValueError, match=r"unknown downsampling operator 'haar'; known: strided, spd"):
        downsample_op("haar")
    assert downsample_op("Conv_Equal").name == "conv-equal"
    for name in OPS:
        op = downsample_op(name)
        assert op.formula and op.source and op.params and op.flops


# --- formulas on hand-computed cases ------------------------------------------------------------


def test_haar_bands_of_one_block():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])  # a=1 b=2 / c=3 d=4
    out = HaarDownsample()(x).flatten().tolist()
    assert out == [5.0, -2.0, -1.0, 0.0]  # LL=(1+2+3+4)/2, LH=(1+2-3-4)/2, HL=(1-2+3-4)/2, HH=(1-2-3+4)/2


def test_haar_pads_odd_sizes_with_zeros_at_the_bottom_right():
    x = torch.tensor([[[[1.0, 2.0, 3.0]]]])  # 1 x 3: blocks [[1,2],[0,0]] and [[3,0],[0,0]]
    out = HaarDownsample()(x)
    assert out.shape == (1, 4, 1, 2)
    assert out[0, :, 0, 1].tolist() == [1.5, 1.5, 1.5, 1.5]
    assert out[0, :, 0, 0].tolist() == [1.5, 1.5, -0.5, -0.5]


def test_binomial_filters():
    from nostride.layers.downsample import binomial_filter

    torch.testing.assert_close(binomial_filter(3), torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16)
    row = torch.tensor([1.0, 4, 6, 4, 1])
    torch.testing.assert_close(binomial_filter(5), row[:, None] * row[None, :] / 256)
    with pytest.raises(ValueError, match="one of"):
        binomial_filter(4)


def test_blur_of_an_impulse_by_hand():
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 1, 1] = 16.0
    # centred at (0,0): the impulse and its three reflections each weigh 1/16; (0,1) and (1,0) see two; (1,1) one
    out = BlurPool2d(1, 3)(x)
    assert out[0, 0].tolist() == [[4.0, 2.0], [2.0, 1.0]]
    assert BlurPool2d(3, 5)(torch.ones(1, 3, 5, 5)).tolist() == torch.ones(1, 3, 3, 3).tolist()


def test_blur_conv_and_max_blur_pool_are_their_definitions():
    x = torch.randn(2, 3, 9, 7)
    m = BlurConv(3, 4, 3, 5, norm=False, act="relu").eval()
    torch.testing.assert_close(m(x), m.blur(F.relu(F.conv2d(x, m.conv.weight, m.conv.bias, padding=1))))
    p = MaxBlurPool(3, 3, 1, filt_size=3)
    torch.testing.assert_close(p(x), p.blur(F.max_pool2d(x, 3, 1, 1)))
    # a map too small to reflect-pad still blurs (replicate)
    assert BlurPool2d(3, 5)(torch.randn(1, 3, 2, 2)).shape == (1, 3, 1, 1)


def _identity_bn(module: nn.Module) -> nn.Module:
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = 0.0
    return module.eval()


def test_adown_by_hand():
    m = _identity_bn(ADown(2, 2, act=None))
    with torch.no_grad():
        m.cv1.conv.weight.fill_(0).__setitem__((0, 0, 1, 1), 2.0)  # centre tap 2
        m.cv2.conv.weight.fill_(3.0)
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]]])
    # avg 2x2/1 -> (2.5, 6.5); branch 1: 2 * 2.5; branch 2: maxpool of one pixel, then 3 * 6.5
    assert m(x).flatten().tolist() == [5.0, 19.5]


def test_adown_of_one_pixel_is_that_pixel_averaged_with_itself():
    """The last stage of a small image can be 1 x 1, where YOLOv9's 2x2/1 pool has nothing to average."""
    m = _identity_bn(ADown(2, 2, act=None))
    with torch.no_grad():
        m.cv1.conv.weight.fill_(0).__setitem__((0, 0, 1, 1), 2.0)
        m.cv2.conv.weight.fill_(3.0)
    assert m(torch.tensor([[[[1.0]], [[5.0]]]])).flatten().tolist() == [2.0, 15.0]


def test_every_operator_runs_in_resnet18_on_16_pixel_images():
    """At 16 px ResNet-18's last stages are 2 x 2 and 1 x 1: every operator's arm builds, runs and
    is counted there (what a study of the operators at 16 px needs before it trains)."""
    from nostride.comparison.matching import model_cost
    from nostride.comparison.specs import parse_model_spec

    for name in OPS:
        spec = parse_model_spec(f"resnet18@width=8,down={name}")
        cost = model_cost(spec, 10, 16)
        assert cost.flops > 0 and cost.params > 0, name


def test_adown_refuses_odd_channels():
    with pytest.raises(ValueError, match="even"):
        ADown(3, 4)


def test_scdown_by_hand():
    m = _identity_bn(SCDown(1, 1, act=None))
    with torch.no_grad():
        m.cv1.conv.weight.fill_(2.0)
        m.cv2.conv.weight.fill_(1.0)
    # pointwise x2, then the 3x3/2 window at (0,0) holds the four pixels of the 2x2 input
    assert m(torch.ones(1, 1, 2, 2)).flatten().tolist() == [8.0]


@pytest.mark.parametrize("pool,expected", [("avg", 2.5), ("max", 4.0)])
def test_pool_conv_by_hand(pool, expected):
    m = PoolConv(1, 1, 1, pool, norm=False, act=None)
    with torch.no_grad():
        m.conv.conv.weight.fill_(1.0)
        m.conv.conv.bias.zero_()
    assert m(torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])).flatten().tolist() == [expected]


def test_conv_equal_is_the_6x6_stride_2_conv_with_padding_2():
    m = ConvEqual(3, 4, 3, norm=False, act=None)
    assert (m.conv.kernel_size, m.conv.stride, m.conv.padding) == ((6, 6), (2, 2), (2, 2))
    x = torch.randn(1, 3, 8, 6)
    torch.testing.assert_close(m(x), F.conv2d(x, m.conv.weight, m.conv.bias, stride=2, padding=2))


# --- shapes ------------------------------------------------------------------------------------


@pytest.mark.parametrize("h,w", [(7, 9), (8, 10), (1, 3)])
def test_every_operator_halves_like_a_strided_conv(h, w):
    x = torch.randn(2, 8, h, w)
    for name in OPS:
        y = build_downsample(name, 8, 16)(x)
        # ADown's 2x2/1 average pool loses a row first: floor(H/2) at odd sizes (as in YOLOv9); a
        # side of one pixel stays one
        expect = (max(h // 2, 1), max(w // 2, 1)) if name == "adown" else (-(-h // 2), -(-w // 2))
        assert y.shape == (2, 16, *expect), name


# --- parameter and FLOP counts -----------------------------------------------------------------


def _conv_params(m: nn.Module) -> int:
    return sum(p.numel() for mod in m.modules() if isinstance(mod, nn.Conv2d) for p in mod.parameters())


def test_parameter_and_flop_counts_relative_to_the_strided_conv():
    c, co, h = 16, 32, 16  # output 8 x 8
    hw = (h // 2) ** 2
    expected = {  # (conv parameters, FLOPs = 2 x multiply-adds), by the formulas of the docstrings
        "strided": (9 * c * co, 2 * 9 * c * co * hw),
        "spd": (36 * c * co, 2 * 36 * c * co * hw),
        "conv-equal": (36 * c * co, 2 * 36 * c * co * hw),
        "conv-spd": (9 * c * co // 4, 2 * 9 * c * (co // 4) * 4 * hw),
        "blurpool": (9 * c * co, 2 * (9 * c * co * 4 * hw + 9 * co * hw)),
        "blurpool5": (9 * c * co, 2 * (9 * c * co * 4 * hw + 25 * co * hw)),
        "hwd": (4 * c * co, 2 * 4 * c * co * hw),
        "adown": (10 * (c // 2) * (co // 2), 2 * 10 * (c // 2) * (co // 2) * hw),
        "scdown": (c * co + 9 * co, 2 * (c * co * 4 * hw + 9 * co * hw)),
        "avgpool-conv": (9 * c * co, 2 * 9 * c * co * hw),
        "maxpool-conv": (9 * c * co, 2 * 9 * c * co * hw),
    }
    assert set(expected) == set(OPS)
    for name, (params, flops) in expected.items():
        m = build_downsample(name, c, co)
        assert _conv_params(m) == params, name
        assert count_flops(m, (1, c, h, h)) == flops, name


# --- the two exact equivalences ----------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3])
def test_conv_equal_and_spd_conv_map_onto_each_other_exactly(k):
    spd = SPDConv(5, 6, k, norm=False, act=None, bias=True)
    eq = ConvEqual.from_spd(spd)
    assert eq.conv.kernel_size == (2 * k, 2 * k)
    assert sum(p.numel() for p in eq.parameters()) == sum(p.numel() for p in spd.parameters())
    for shape in [(2, 5, 8, 10), (1, 5, 7, 9)]:  # even and odd
        x = torch.randn(shape, dtype=torch.float64)
        torch.testing.assert_close(eq.double()(x), spd.double()(x))
    # and back: the round trip of the weights is the identity, bit for bit
    back = eq.to_spd()
    assert torch.equal(back.conv.weight, spd.conv.weight)
    w = torch.randn(4, 3, 2 * k, 2 * k)
    assert torch.equal(spd_weight_to_strided(strided_weight_to_spd(w)), w)
    fresh = ConvEqual(5, 6, k, norm=False, act=None)
    x = torch.randn(1, 5, 9, 7)
    torch.testing.assert_close(fresh.to_spd()(x), fresh(x))


def test_conv_equal_starts_from_spd_convs_initial_distribution():
    fan = nn.init._calculate_fan_in_and_fan_out
    # PyTorch's default initialisation draws from U(-b, b), b from the fan-in: the same for both
    assert fan(ConvEqual(16, 32, 3).conv.weight)[0] == fan(SPDConv(16, 32, 3).conv.weight)[0]
    torch.manual_seed(1)
    a = ConvEqual(64, 64, 3).conv.weight
    b = SPDConv(64, 64, 3).conv.weight
    assert abs(a.std().item() / b.std().item() - 1) < 0.02  # same uniform bound 1/sqrt(fan_in)
    assert abs(a.abs().max().item() - b.abs().max().item()) < 1e-3


def test_hwd_plus_1x1_is_spd_plus_1x1_after_a_fixed_orthogonal_mixing():
    m = haar_mixing(torch.float64)
    torch.testing.assert_close(m @ m.T, torch.eye(4, dtype=torch.float64))
    hwd = HWD(3, 5, norm=False, act=None, bias=True).double()
    spd = SPDConv(3, 5, 1, norm=False, act=None, bias=True).double()
    with torch.no_grad():
        spd.conv.weight.copy_(haar_weight_to_spd(hwd.conv.weight))
        spd.conv.bias.copy_(hwd.conv.bias)
    for shape in [(2, 3, 8, 6), (1, 3, 7, 5)]:
        x = torch.randn(shape, dtype=torch.float64)
        torch.testing.assert_close(hwd(x), spd(x))
    # and the other way
    torch.testing.assert_close(spd_weight_to_haar(spd.conv.weight), hwd.conv.weight)


def test_hwd_runs_in_half_precision_and_under_autocast():
    m = HWD(4, 8).eval()
    x = torch.randn(2, 4, 9, 8)
    ref = m(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=0.1, rtol=0.05)
    half = HaarDownsample()(x.half())
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), HaarDownsample()(x), atol=1e-2, rtol=1e-2)


# --- fuse and ONNX -----------------------------------------------------------------------------


def _trained_bn(m: nn.Module, channels: int = 4) -> nn.Module:
    """``m`` with BatchNorm statistics that are not the identity (so folding them is tested)."""
    m.train()
    with torch.no_grad():
        for _ in range(2):
            m(torch.randn(4, channels, 8, 8) * 3 + 1)
    return m.eval()


def test_fuse_folds_hwd_into_one_2x2_stride_2_conv_and_conv_equal_into_one_conv():
    from nostride import fuse

    for m in (HWD(4, 6), ConvEqual(4, 6, 3), BlurConv(4, 6), ADown(4, 6), SCDown(4, 6), PoolConv(4, 6)):
        m = _trained_bn(m)
        fused = fuse(m)
        assert not any(isinstance(c, nn.BatchNorm2d) for c in fused.modules()), type(m).__name__
        for shape in [(1, 4, 8, 8), (1, 4, 7, 9)]:
            x = torch.randn(shape)
            torch.testing.assert_close(fused(x), m(x), atol=1e-5, rtol=1e-4)
    fused = fuse(_trained_bn(HWD(4, 6)))
    assert isinstance(fused, FusedSPDConv) and fused.conv.kernel_size == (2, 2) and fused.conv.stride == (2, 2)


@pytest.mark.slow
def test_every_operator_exports_to_onnx_and_runs_in_onnxruntime(tmp_path):
    pytest.importorskip("onnxruntime")
    from nostride.export import export_onnx

    class All(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ops = nn.ModuleList(build_downsample(n, 4, 8) for n in OPS)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.cat([op(x).flatten(1) for op in self.ops], 1)

    # export_onnx runs the file in onnxruntime and compares it with PyTorch (raises on a mismatch)
    # dynamic height and width, checked at even and odd sizes (ADown's output is floor(H/2) at odd ones)
    export_onnx(_trained_bn(All()), tmp_path / "ops.onnx", (1, 4, 16, 12), dynamic=True, dynamo=False,
                check_shapes=[(1, 4, 16, 12), (2, 4, 20, 24)])
    for name in ("hwd", "conv-equal", "blurpool"):  # the padded ones, at odd sizes, each on its own
        export_onnx(_trained_bn(build_downsample(name, 4, 8)), tmp_path / f"{name}.onnx", (1, 4, 16, 12),
                    dynamic=True, dynamo=False, check_shapes=[(1, 4, 16, 12), (1, 4, 15, 13)])


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_spd_conv_and_conv_equal_train_alike_from_mapped_weights(optimizer):
    """The null arm differs from SPD-Conv only in how the same weights are laid out: AdamW and SGD act
    element by element (weight decay included), so from mapped weights both take mapped steps."""
    torch.manual_seed(0)
    spd = SPDConv(8, 16, 3, norm=False, act=None, bias=True)
    eq = ConvEqual.from_spd(spd)
    make = {"adamw": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.05),
            "sgd": lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)}[optimizer]
    opt_spd, opt_eq = make(spd.parameters()), make(eq.parameters())
    x = torch.randn(4, 8, 12, 10)
    for _ in range(5):
        for module, opt in ((spd, opt_spd), (eq, opt_eq)):
            opt.zero_grad()
            (module(x) ** 2).mean().backward()
            opt.step()
    torch.testing.assert_close(eq.conv.weight, spd_weight_to_strided(spd.conv.weight, (2, 2)), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(eq.conv.bias, spd.conv.bias, rtol=1e-4, atol=1e-5)


def test_a_model_that_cannot_run_at_the_size_is_a_one_line_error(monkeypatch):
    from nostride.comparison import matching
    from nostride.comparison.specs import parse_model_spec

    def too_small(model, shape):
        raise RuntimeError("Given input size: (128x1x1). Calculated output size: (128x0x0). Output size is too small\nmore")

    monkeypatch.setattr(matching, "count_flops", too_small)
    matching._cost.cache_clear()
    try:
        with pytest.raises(ValueError, match=r"^resnet18@width=8 cannot run on 16 x 16 images: Given input size: "
                                             r"\(128x1x1\)\. Calculated output size: \(128x0x0\)\. Output size is too small$"):
            matching.model_cost(parse_model_spec("resnet18@width=8"), 10, 16)
    finally:
        matching._cost.cache_clear()
