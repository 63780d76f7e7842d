"""``set_spd_form``: SPD-Conv layers computed as one strided conv give the SPD form's outputs and gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nostride.layers import SPDConv, spd_strided_conv2d, spd_weight_to_strided, space_to_depth
from nostride.models import create_model, set_spd_form
from nostride.models.yolo import C3, Concat, Focus
from nostride.layers import SpaceToDepth

from helpers import randomize_bn

pytestmark = pytest.mark.usefixtures("one_thread_module")


def _outputs_and_grads(model: nn.Module, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, dict]:
    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    out = model(x)
    outs = list(out) if isinstance(out, (list, tuple)) else [out]
    g = torch.Generator().manual_seed(1)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in outs)
    loss.backward()
    return [o.detach() for o in outs], x.grad, {n: p.grad.clone() for n, p in model.named_parameters()}


def _check_same(model: nn.Module, x: torch.Tensor, sites: int) -> None:
    """In float64, so the comparison is tight (in float32 the two orders of summation differ by
    rounding that deep train-mode BatchNorm stacks amplify to ~1e-4)."""
    model, x = model.double(), x.double()
    ref = _outputs_and_grads(model, x)
    keys = list(model.state_dict())
    assert set_spd_form(model, "strided") == sites
    assert list(model.state_dict()) == keys  # same parameters, buffers and names
    got = _outputs_and_grads(model, x)
    for a, b in zip(got[0], ref[0]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(got[1], ref[1], rtol=1e-9, atol=1e-9)
    assert got[2].keys() == ref[2].keys()
    for name in ref[2]:
        torch.testing.assert_close(got[2][name], ref[2][name], rtol=1e-9, atol=1e-9, msg=lambda m: f"{name}: {m}")
    assert set_spd_form(model, "spd") == 0  # and back: the plain computation again
    back = _outputs_and_grads(model, x)
    for a, b in zip(back[0], ref[0]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_weight_rearrangement_matches_space_to_depth():
    g = torch.Generator().manual_seed(0)
    for k, h in ((3, 9), (1, 8), (2, 7), (5, 6)):  # odd and even kernels, odd and even sizes
        x = torch.randn(2, 3, h, h + 1, generator=g)
        w = torch.randn(4, 12, k, k, generator=g)
        b = torch.randn(4, generator=g)
        ref = nn.functional.conv2d(space_to_depth(x, 2), w, b, padding=k // 2)
        got = spd_strided_conv2d(x, w, b, 2, (k // 2, k // 2))
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    assert spd_weight_to_strided(torch.zeros(4, 12, 3, 3)).shape == (4, 3, 6, 6)


def test_resnet18_spd_strided_form_same_outputs_and_gradients():
    torch.manual_seed(0)
    model = create_model("resnet18_spd", num_classes=10, width=8).train()
    randomize_bn(model)
    x = torch.randn(2, 3, 33, 32)  # an odd height: the padded space-to-depth path too
    _check_same(model, x, sites=4)
    assert all(not m.strided for m in model.modules() if isinstance(m, SPDConv))


@pytest.mark.parametrize("spd_order", ["conv-spd", "spd-conv"])
def test_yolov5_spd_strided_form_same_outputs_and_gradients(spd_order):
    torch.manual_seed(0)
    model = create_model("yolov5n_spd", num_classes=3, spd_order=spd_order).train()
    randomize_bn(model)
    n_spd = sum(isinstance(m, (SPDConv, Focus)) for m in model.modules()) + sum(
        type(m) is SpaceToDepth for m in model.model)
    _check_same(model, torch.randn(2, 3, 64, 96), sites=n_spd)
    # back to the plain classes everywhere
    assert all(type(m) in (C3, Concat, SpaceToDepth) for m in model.modules()
               if isinstance(m, (C3, Concat, SpaceToDepth)))


def test_yolov5n_spd_strided_form_reaches_every_space_to_depth_layer():
    model = create_model("yolov5n_spd", num_classes=3)
    # Focus + 4 backbone + 2 head SPD layers, each read by a C3 (two of them through a Concat)
    assert set_spd_form(model, "strided") == 7
    assert not any(type(m) is SpaceToDepth for m in model.modules())


def test_unknown_form_is_refused():
    with pytest.raises(ValueError, match="spd_form"):
        set_spd_form(nn.Conv2d(1, 1, 1), "fused")
