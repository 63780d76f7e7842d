"""ResNet baselines and ResNet-SPD (paper Table 3): shapes, no strides in SPD models, torchvision parity."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from nostride.layers import SPDConv
from nostride.models import create_model, list_models, model_info
from nostride.models.resnet import ResNet
from nostride.utils import count_parameters

from helpers import randomize_bn

pytestmark = pytest.mark.usefixtures("one_thread")

ALL = ["resnet18", "resnet50", "resnet18_spd", "resnet50_spd", "resnet18_cifar", "resnet50_cifar"]
REDUCTION = {"resnet18": 32, "resnet50": 32, "resnet18_spd": 16, "resnet50_spd": 16,
             "resnet18_cifar": 8, "resnet50_cifar": 8}


def test_registered_as_classifiers():
    assert set(ALL) <= set(list_models(task="classify"))
    assert list_models("resnet*_spd") == ["resnet18_spd", "resnet50_spd"]
    assert all(model_info(n).task == "classify" for n in ALL)


@pytest.mark.parametrize("name", ALL)
def test_output_and_feature_shapes(name):
    model = create_model(name, num_classes=7, width=16).eval()
    assert model.model_name == name and model.model_kwargs == {"num_classes": 7, "width": 16}
    assert model.task == "classify"
    expansion = 4 if "50" in name else 1
    assert model.num_features == 16 * 8 * expansion
    for size in (32, 64):
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            feats = model.forward_features(x)
            logits = model(x)
        side = max(size // REDUCTION[name], 1)
        assert feats.shape == (2, model.num_features, side, side)
        assert logits.shape == (2, 7)


def _strided_layers(model: nn.Module) -> list[str]:
    bad = []
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and tuple(m.stride) != (1, 1):
            bad.append(name)
        if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
            stride = m.stride if isinstance(m.stride, tuple) else (m.stride,)
            if any(s > 1 for s in stride):
                bad.append(name)
    return bad


@pytest.mark.parametrize("name", ["resnet18_spd", "resnet50_spd"])
def test_spd_models_have_no_strided_conv_or_pooling(name):
    model = create_model(name, num_classes=10, width=16)
    assert _strided_layers(model) == []
    spd = {n for n, m in model.named_modules() if isinstance(m, SPDConv)}
    assert spd == {"spd1", "spd2", "spd3", "spd4"}
    # spd2..spd4 are channel-preserving 3x3 SPD-Convs; spd1 maps the image to `width` channels
    assert (model.spd1.in_channels, model.spd1.out_channels, model.spd1.kernel_size) == (3, 16, 3)
    for i, ch in zip((2, 3, 4), (16, 32, 64) if name == "resnet18_spd" else (64, 128, 256)):
        layer = getattr(model, f"spd{i}")
        assert (layer.in_channels, layer.out_channels, layer.kernel_size, layer.scale) == (ch, ch, 3, 2)


def test_baselines_do_downsample_with_strides():
    # guards the walker above: it finds the strides that the baselines do have
    assert _strided_layers(create_model("resnet18", width=16)) == [
        "conv1", "maxpool", "layer2.0.conv1", "layer2.0.downsample.0", "layer3.0.conv1",
        "layer3.0.downsample.0", "layer4.0.conv1", "layer4.0.downsample.0"]
    cifar = _strided_layers(create_model("resnet50_cifar", width=16))
    assert "conv1" not in cifar and "maxpool" not in cifar and "layer2.0.conv2" in cifar


@pytest.mark.parametrize("name,expected", [("resnet18", 11_689_512), ("resnet50", 25_557_032)])
def test_torchvision_parity(name, expected):
    ours = create_model(name)
    theirs = getattr(torchvision.models, name)()  # random init, no download
    assert count_parameters(ours) == count_parameters(theirs) == expected
    randomize_bn(theirs, seed=1)  # equal outputs must not rely on the initial running stats
    ours.load_state_dict(theirs.state_dict(), strict=True)
    ours.eval(), theirs.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)


def _bn(c: int) -> int:
    return 2 * c


def _resnet18_stage_params(w: int) -> int:
    """Parameters of ResNet-18's four stages (BasicBlock, [2,2,2,2]) at base width w."""
    total = 2 * (2 * 9 * w * w + 2 * _bn(w))  # layer1: no projection
    for c_in, c in ((w, 2 * w), (2 * w, 4 * w), (4 * w, 8 * w)):
        block0 = 9 * c_in * c + 9 * c * c + 2 * _bn(c) + c_in * c + _bn(c)  # + 1x1 projection
        block1 = 2 * 9 * c * c + 2 * _bn(c)
        total += block0 + block1
    return total


@pytest.mark.parametrize("width,classes", [(64, 1000), (64, 10), (16, 200)])
def test_resnet18_spd_parameter_formula(width, classes):
    w, n = width, classes
    head = 8 * w * n + n
    baseline = 3 * w * 7 * 7 + _bn(w) + _resnet18_stage_params(w) + head
    # spd1: SPD(2) turns 3 channels into 12, then a 3x3 conv to w channels + BN;
    # spd2..4: SPD(2) turns C into 4C, 3x3 conv back to C + BN, for C = w, 2w, 4w
    spd = 4 * 3 * w * 9 + _bn(w) + sum(4 * c * c * 9 + _bn(c) for c in (w, 2 * w, 4 * w))
    expected = spd + _resnet18_stage_params(w) + head
    assert count_parameters(create_model("resnet18", num_classes=n, width=w)) == baseline
    assert count_parameters(create_model("resnet18_spd", num_classes=n, width=w)) == expected


def test_resnet50_spd_parameters_are_baseline_plus_spd_layers():
    w, n = 16, 10
    base = create_model("resnet50", num_classes=n, width=w)
    spd = create_model("resnet50_spd", num_classes=n, width=w)
    stem = 3 * w * 49 + _bn(w)
    # Bottleneck stages output 4w, 8w, 16w channels in front of spd2, spd3, spd4
    extra = 4 * 3 * w * 9 + _bn(w) + sum(4 * c * c * 9 + _bn(c) for c in (4 * w, 8 * w, 16 * w))
    assert count_parameters(spd) == count_parameters(base) - stem + extra
    # stage blocks have the same shapes as the baseline's: their weights transfer
    stage_keys = {k: v.shape for k, v in base.state_dict().items() if k.startswith("layer")}
    assert {k: v.shape for k, v in spd.state_dict().items() if k.startswith("layer")} == stage_keys


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
@pytest.mark.parametrize("name", ["resnet18", "resnet50_cifar"])
def test_baselines_are_scriptable(name):
    model = create_model(name, num_classes=3, width=8).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.script(model)(x), model(x))


def test_cifar_stem():
    model = create_model("resnet18_cifar", num_classes=10, width=16)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)


@pytest.mark.parametrize("name", ["resnet18_spd", "resnet50_cifar"])
def test_gradients_reach_every_parameter(name):
    model = create_model(name, num_classes=5, width=8, in_chans=1)
    loss = nn.functional.cross_entropy(model(torch.randn(4, 1, 32, 32)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


def test_zero_init_residual_and_options():
    model = create_model("resnet50_spd", width=8, num_classes=3, zero_init_residual=True)
    assert all(b.bn3.weight.abs().sum() == 0 for b in model.modules() if hasattr(b, "bn3"))
    model.reset_classifier(4)
    assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 4)
    headless = create_model("resnet18", width=8, num_classes=0).eval()
    assert headless(torch.randn(1, 3, 32, 32)).shape == (1, 64)


def test_bad_arguments():
    with pytest.raises(TypeError, match="resnet18_spd"):
        create_model("resnet18_spd", num_clases=10)
    with pytest.raises(ValueError, match="width"):
        create_model("resnet18", width=0)
    with pytest.raises(ValueError, match="stem"):
        ResNet(nn.Module, (2, 2, 2, 2), stem="focus")
