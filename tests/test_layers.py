"""SpaceToDepth / DepthToSpace / SPDConv / ConvBnAct / make_act against literal definitions."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nostride.layers import (
    ConvBnAct,
    DepthToSpace,
    SPDConv,
    SpaceToDepth,
    depth_to_space,
    make_act,
    space_to_depth,
)


def paper_spd(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Section 3.1 of the paper, literally: f_{x,y} = X[x::s, y::s], concatenated as
    f_{0,0}, f_{1,0}, ..., f_{s-1,0}, f_{0,1}, ..., f_{s-1,s-1} (row offset x varies fastest)."""
    subs = []
    for y in range(scale):  # column offset: outer loop
        for x_ in range(scale):  # row offset: inner loop
            subs.append(x[..., x_::scale, y::scale])
    return torch.cat(subs, dim=1)


def focus_cat(x: torch.Tensor) -> torch.Tensor:
    """YOLOv5 Focus's concatenation order."""
    return torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_space_to_depth_matches_paper_slicing(scale):
    x = torch.randn(2, 3, 4 * scale, 5 * scale)
    out = space_to_depth(x, scale)
    assert out.shape == (2, 3 * scale * scale, 4, 5)
    torch.testing.assert_close(out, paper_spd(x, scale), rtol=0, atol=0)
    torch.testing.assert_close(SpaceToDepth(scale)(x), out, rtol=0, atol=0)


def test_space_to_depth_formula_on_indices():
    # every value is its own position, so the check reads out[(r + s*c)*C + k, i, j] == x[k, s*i + r, s*j + c]
    s, ch, h, w = 3, 2, 6, 9
    x = torch.arange(ch * h * w, dtype=torch.float64).reshape(1, ch, h, w)
    out = space_to_depth(x, s)
    for r in range(s):
        for c in range(s):
            for k in range(ch):
                torch.testing.assert_close(out[0, (r + s * c) * ch + k], x[0, k, r::s, c::s], rtol=0, atol=0)


def test_space_to_depth_matches_yolov5_focus():
    x = torch.randn(2, 5, 8, 6)
    torch.testing.assert_close(space_to_depth(x, 2), focus_cat(x), rtol=0, atol=0)


def test_order_differs_from_pixel_unshuffle():
    # same values, another order: a guard against "simplifying" to F.pixel_unshuffle
    x = torch.randn(1, 3, 4, 4)
    ours, theirs = space_to_depth(x, 2), F.pixel_unshuffle(x, 2)
    assert not torch.equal(ours, theirs)
    torch.testing.assert_close(ours.flatten().sort().values, theirs.flatten().sort().values)


@pytest.mark.parametrize("scale", [2, 3])
def test_depth_to_space_round_trip(scale):
    x = torch.randn(2, 4, 3 * scale, 2 * scale)
    torch.testing.assert_close(depth_to_space(space_to_depth(x, scale), scale), x, rtol=0, atol=0)
    y = torch.randn(2, 4 * scale * scale, 3, 5)
    torch.testing.assert_close(space_to_depth(DepthToSpace(scale)(y), scale), y, rtol=0, atol=0)


def test_depth_to_space_rejects_bad_channels():
    with pytest.raises(ValueError, match="not divisible"):
        depth_to_space(torch.randn(1, 6, 2, 2), 2)


@pytest.mark.parametrize("scale,h,w", [(2, 7, 5), (3, 7, 8), (2, 1, 1), (4, 9, 6)])
def test_odd_sizes_are_zero_padded_bottom_right(scale, h, w):
    x = torch.randn(2, 3, h, w)
    out = space_to_depth(x, scale)
    ho, wo = math.ceil(h / scale), math.ceil(w / scale)
    assert out.shape == (2, 3 * scale * scale, ho, wo)
    padded = torch.zeros(2, 3, ho * scale, wo * scale)
    padded[..., :h, :w] = x
    torch.testing.assert_close(out, paper_spd(padded, scale), rtol=0, atol=0)
    # the round trip gives the input back in the top-left corner
    torch.testing.assert_close(depth_to_space(out, scale)[..., :h, :w], x, rtol=0, atol=0)


def test_pad_false_raises_naming_shape_and_scale():
    with pytest.raises(ValueError, match=r"\(1, 3, 7, 8\).*scale=2"):
        SpaceToDepth(2, pad=False)(torch.randn(1, 3, 7, 8))
    with pytest.raises(ValueError, match=r"\(1, 3, 9, 10\).*scale=3"):
        SPDConv(3, 4, scale=3, pad=False)(torch.randn(1, 3, 9, 10))
    assert SpaceToDepth(2, pad=False)(torch.randn(1, 3, 8, 8)).shape == (1, 12, 4, 4)


@pytest.mark.parametrize("scale", [1, 0, 2.0, True])
def test_bad_scale(scale):
    with pytest.raises(ValueError, match="scale"):
        SpaceToDepth(scale)


def test_space_to_depth_rejects_non_4d():
    with pytest.raises(ValueError, match="4-D"):
        space_to_depth(torch.randn(3, 4, 4))


@pytest.mark.parametrize("scale", [2, 3])
def test_channels_last_input_same_values(scale):
    x = torch.randn(2, 5, 6 * scale, 4 * scale + 1)
    xcl = x.to(memory_format=torch.channels_last)
    torch.testing.assert_close(space_to_depth(xcl, scale), space_to_depth(x, scale), rtol=0, atol=0)
    block = SPDConv(5, 7, scale=scale).eval()
    torch.testing.assert_close(block(xcl), block(x), rtol=1e-5, atol=1e-5)


def test_spd_conv_shapes_and_children():
    block = SPDConv(3, 16, kernel_size=3, scale=2)
    assert [name for name, _ in block.named_children()] == ["spd", "conv", "bn", "act"]
    assert block.conv.in_channels == 12 and block.conv.stride == (1, 1) and block.conv.padding == (1, 1)
    assert block.conv.bias is None
    assert block(torch.randn(2, 3, 17, 16)).shape == (2, 16, 9, 8)
    assert SPDConv(3, 16, 5, scale=4)(torch.randn(1, 3, 16, 14)).shape == (1, 16, 4, 4)


def test_spd_conv_equals_spd_then_conv_bn_act():
    block = SPDConv(4, 6, kernel_size=3, scale=3, act="silu").eval()
    x = torch.randn(2, 4, 9, 7)
    expected = F.silu(block.bn(F.conv2d(paper_spd(F.pad(x, (0, 2, 0, 0)), 3), block.conv.weight, padding=1)))
    torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)


def test_spd_conv_bias_and_norm_options():
    assert SPDConv(3, 4, norm=False).conv.bias is not None
    assert isinstance(SPDConv(3, 4, norm=False).bn, nn.Identity)
    assert SPDConv(3, 4, bias=True).conv.bias is not None
    with pytest.raises(ValueError, match="odd kernel_size"):
        SPDConv(3, 4, kernel_size=2)


def test_spd_conv_gradients_reach_every_input_pixel():
    block = SPDConv(3, 8, scale=2)
    x = torch.randn(2, 3, 9, 8, requires_grad=True)
    block(x).square().sum().backward()
    for p in block.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    # unlike a strided 1x1 conv, no pixel is skipped
    assert (x.grad != 0).all()


def test_spd_conv_act_none_and_custom():
    x = torch.randn(1, 3, 8, 8)
    plain = SPDConv(3, 4, act=None).eval()
    assert isinstance(plain.act, nn.Identity)
    assert (plain(x) < 0).any()  # no ReLU
    leaky = nn.LeakyReLU(0.3)
    assert SPDConv(3, 4, act=leaky).act is leaky
    assert isinstance(SPDConv(3, 4, act=nn.Tanh).act, nn.Tanh)
    assert isinstance(SPDConv(3, 4, act="silu").act, nn.SiLU)


def test_conv_bn_act():
    block = ConvBnAct(3, 8, 3, 2)
    assert block.conv.padding == (1, 1) and block.conv.bias is None
    assert isinstance(block.act, nn.SiLU)
    assert block(torch.randn(1, 3, 9, 9)).shape == (1, 8, 5, 5)
    plain = ConvBnAct(3, 8, 1, norm=False, act=None)
    assert isinstance(plain.bn, nn.Identity) and plain.conv.bias is not None


def test_make_act():
    assert isinstance(make_act("ReLU"), nn.ReLU)
    assert isinstance(make_act(None), nn.Identity) and isinstance(make_act(False), nn.Identity)
    assert isinstance(make_act(True), nn.SiLU)
    with pytest.raises(ValueError, match="unknown activation 'relux'"):
        make_act("relux")
    with pytest.raises(TypeError, match="not an nn.Module"):
        make_act(lambda: 3)
    with pytest.raises(TypeError, match="act must be"):
        make_act(1.5)


@pytest.mark.slow
def test_torch_compile_same_values():
    if not hasattr(torch, "compile"):
        pytest.skip("torch.compile is not available")
    block = SPDConv(3, 4, scale=2).eval()
    x = torch.randn(1, 3, 9, 8)
    try:
        compiled = torch.compile(block, backend="aot_eager", dynamic=False)
        out = compiled(x)
    except Exception as err:  # no compiler toolchain etc.: not what this test is about
        pytest.skip(f"torch.compile unavailable here: {type(err).__name__}: {err}")
    torch.testing.assert_close(out, block(x), rtol=1e-5, atol=1e-5)
