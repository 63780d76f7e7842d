"""nostride.fuse: the fused (deployment) form computes the same function as the original."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nostride import fuse
from nostride.convert.fuse import fold_bn, spd_conv_to_strided
from nostride.layers import ConvBnAct, FusedSPDConv, SPDConv, SpaceToDepth

from helpers import randomize_bn


def assert_same_function(original: nn.Module, fused: nn.Module, shapes, atol=1e-10):
    original.eval()
    for shape in shapes:
        x = torch.randn(*shape, dtype=torch.float64)
        torch.testing.assert_close(fused(x), original(x), rtol=0, atol=atol)


@pytest.mark.parametrize("norm", [True, False])
@pytest.mark.parametrize("scale", [2, 3])
@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_spd_conv_fuses_to_one_strided_conv(kernel, scale, norm):
    block = randomize_bn(SPDConv(3, 5, kernel, scale, norm=norm, act="silu").double())
    fused = fuse(block)
    assert isinstance(fused, FusedSPDConv)
    conv = fused.conv
    assert conv.kernel_size == (scale * kernel,) * 2 and conv.stride == (scale, scale)
    assert conv.padding == (scale * (kernel // 2),) * 2 and conv.in_channels == 3
    assert [type(m) for m in fused.modules()] == [FusedSPDConv, nn.Conv2d, nn.SiLU]
    size = 4 * scale
    # even (divisible) and odd sizes, including inputs smaller than the fused kernel
    assert_same_function(block, fused, [(2, 3, size, size), (2, 3, size + 1, size - 1), (1, 3, 5, 7), (1, 3, 1, 2)])


def test_spd_conv_with_bias_and_norm():
    block = randomize_bn(SPDConv(4, 6, 3, 2, norm=True, bias=True, act=None).double())
    with torch.no_grad():
        block.conv.bias.normal_()
    assert_same_function(block, fuse(block), [(2, 4, 10, 9)])


def test_weight_mapping_formula_and_orientation():
    # W_fused[o, i, s*u + r, s*v + c] == W[o, (r + s*c)*C + i, u, v], r = row offset, c = column offset
    s, cin, k = 3, 2, 3
    conv = nn.Conv2d(s * s * cin, 4, k, padding=1, bias=False)
    fused = spd_conv_to_strided(conv, s).conv.weight
    w = conv.weight
    for r in range(s):
        for c in range(s):
            for u in range(k):
                for v in range(k):
                    torch.testing.assert_close(fused[:, :, s * u + r, s * v + c], w[:, (r + s * c) * cin : (r + s * c + 1) * cin, u, v])
    # a mapping with r and c swapped computes something else on a non-symmetric input
    swapped = fused.detach().reshape(4, cin, k, s, k, s).transpose(3, 5).reshape_as(fused)
    x = torch.randn(1, cin, 9, 9)
    reference = conv(SpaceToDepth(s)(x))
    torch.testing.assert_close(F.conv2d(x, fused, stride=s, padding=s), reference, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(F.conv2d(x, swapped, stride=s, padding=s), reference, atol=1e-3)


def test_float32_tolerance():
    block = randomize_bn(SPDConv(16, 32, 3, 2))
    fused = fuse(block)
    block.eval()
    x = torch.randn(2, 16, 15, 16)
    torch.testing.assert_close(fused(x), block(x), rtol=1e-5, atol=1e-5)


def test_fold_bn_alone():
    for bias, affine in [(False, True), (True, True), (True, False)]:
        conv = nn.Conv2d(3, 6, 3, stride=2, padding=1, bias=bias).double()
        bn = randomize_bn(nn.BatchNorm2d(6, eps=1e-3, affine=affine).double()).eval()
        folded = fold_bn(conv, bn)
        assert type(folded) is nn.Conv2d and folded.stride == (2, 2) and folded.bias is not None
        x = torch.randn(2, 3, 9, 8, dtype=torch.float64)
        torch.testing.assert_close(folded(x), bn(conv(x)), rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match="running statistics"):
        fold_bn(nn.Conv2d(3, 6, 1), nn.BatchNorm2d(6, track_running_stats=False))
    with pytest.raises(ValueError, match="6 outputs"):
        fold_bn(nn.Conv2d(3, 6, 1), nn.BatchNorm2d(5))


def test_conv_bn_act_folds_in_place_of_bn():
    block = randomize_bn(ConvBnAct(3, 8, 3, 2, act="silu").double())
    fused = fuse(block)
    assert type(fused) is ConvBnAct and isinstance(fused.bn, nn.Identity) and fused.conv.bias is not None
    assert_same_function(block, fused, [(2, 3, 9, 10)])


def test_sequential_spd_then_conv_and_conv_bn():
    seq = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        SpaceToDepth(2),
        nn.Conv2d(16, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        SpaceToDepth(3),
        ConvBnAct(72, 6, 1, act="relu"),
    )
    seq = randomize_bn(seq.double())
    fused = fuse(seq)
    kinds = [type(m) for m in fused]
    assert kinds == [nn.Conv2d, nn.Identity, nn.ReLU, nn.Identity, FusedSPDConv, nn.Identity, nn.Identity, FusedSPDConv]
    assert fused[4].conv.kernel_size == (6, 6) and fused[7].conv.kernel_size == (3, 3)
    assert not any(isinstance(m, (nn.BatchNorm2d, SpaceToDepth)) for m in fused.modules())
    assert_same_function(seq, fused, [(2, 3, 12, 12), (1, 3, 13, 17)])


def test_unfusable_pairs_are_kept():
    seq = nn.Sequential(SpaceToDepth(2), nn.Conv2d(12, 6, 3, stride=2, padding=1), SpaceToDepth(2), nn.Conv2d(24, 6, 3, padding=1, groups=2))
    fused = fuse(seq)
    assert [type(m) for m in fused] == [SpaceToDepth, nn.Conv2d, SpaceToDepth, nn.Conv2d]
    with pytest.raises(ValueError, match="stride"):
        spd_conv_to_strided(nn.Conv2d(12, 6, 3, stride=2), 2)
    with pytest.raises(ValueError, match="not divisible"):
        spd_conv_to_strided(nn.Conv2d(10, 6, 3), 2)


def test_nested_modules_and_module_list():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(SPDConv(3, 8, 3), nn.Sequential(SPDConv(8, 8, 1, scale=3, act="silu")))
            self.blocks = nn.ModuleList([ConvBnAct(8, 8, 3), SPDConv(8, 16, 5)])

        def forward(self, x):
            x = self.stem(x)
            for block in self.blocks:
                x = block(x)
            return x

    net = randomize_bn(Net().double())
    fused = fuse(net)
    assert not any(isinstance(m, (nn.BatchNorm2d, SPDConv, SpaceToDepth)) for m in fused.modules())
    assert isinstance(fused.stem[0], FusedSPDConv) and isinstance(fused.stem[1][0], FusedSPDConv)
    assert isinstance(fused.blocks[1], FusedSPDConv)
    assert_same_function(net, fused, [(2, 3, 24, 24), (1, 3, 25, 19)])


def test_original_untouched_and_inplace():
    net = randomize_bn(nn.Sequential(SPDConv(3, 8), ConvBnAct(8, 8, 3))).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fused = fuse(net)
    assert fused is not net and isinstance(net[0], SPDConv) and isinstance(net[1].bn, nn.BatchNorm2d)
    assert net.training and not fused.training  # the result is in eval mode, the original keeps its mode
    after = net.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    same = fuse(net, inplace=True)
    assert same is net and isinstance(net[0], FusedSPDConv)


def test_pad_false_kept_after_fusion():
    fused = fuse(SPDConv(3, 4, pad=False))
    with pytest.raises(ValueError, match=r"\(1, 3, 7, 8\).*scale=2"):
        fused(torch.randn(1, 3, 7, 8))


class CustomBlock(nn.Module):
    """A model-family block with its own deployment form (like YOLOv5's Focus/Conv)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.double_it = True

    def forward(self, x):
        return self.conv(x) * 2

    def fuse_module(self) -> nn.Module:
        conv = nn.Conv2d(3, 4, 3, padding=1)
        with torch.no_grad():
            conv.weight.copy_(self.conv.weight * 2)
            conv.bias.copy_(self.conv.bias * 2)
        # the hook's result may contain blocks that fuse itself then handles
        return nn.Sequential(conv, SPDConv(4, 4))


def test_fuse_module_hook():
    net = nn.Sequential(CustomBlock(), nn.ReLU())
    fused = fuse(net)
    assert isinstance(fused[0], nn.Sequential) and isinstance(fused[0][1], FusedSPDConv)
    x = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(fused[0][0](x), net[0](x), rtol=1e-5, atol=1e-5)

    class ReturnsSelf(CustomBlock):
        calls = 0

        def fuse_module(self):
            type(self).calls += 1
            return self

    block = ReturnsSelf()
    assert fuse(block, inplace=True) is block and ReturnsSelf.calls == 1

    class Broken(CustomBlock):
        def fuse_module(self):
            return 3

    with pytest.raises(TypeError, match="Broken.fuse_module"):
        fuse(Broken())


def test_spdify_output_fuses_to_strided_convs():
    from nostride.convert import SPDDownsample, spdify

    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, 2, 1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, 2, 1, groups=4),  # grouped: group-major SPD
        nn.MaxPool2d(3, 2, 1),
        nn.Conv2d(16, 16, (3, 1), (2, 1), (1, 0)),  # non-square block
        nn.AvgPool2d(2, 2, ceil_mode=True),  # zero-extended SPD map: left unfused
        nn.Conv2d(16, 8, 1, 2),
        nn.BatchNorm2d(8),
    )
    net = randomize_bn(net.double()).eval()
    converted, _ = spdify(net, example_input=(1, 3, 32, 32))
    converted = converted.double().eval()
    fused = fuse(converted)
    downsamples = [m for m in fused if isinstance(m, SPDDownsample)]
    assert len(downsamples) == 6
    assert sum(isinstance(m.conv, FusedSPDConv) for m in downsamples) == 5
    assert isinstance(fused[0].conv, FusedSPDConv) and fused[0].conv.conv.bias is not None  # BN folded
    assert fused[3].conv.conv.groups == 4 and fused[5].conv.conv.kernel_size == (6, 1)
    assert isinstance(fused[1], nn.Identity) and isinstance(fused[8], nn.Identity)
    assert_same_function(converted, fused, [(2, 3, 32, 32), (1, 3, 35, 29)])
