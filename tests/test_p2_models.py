"""YOLOv5 with a P2 head (yolov5{n,s,m,l}_p2 and their SPD variants): layout, cost, loss, fuse, compare specs."""

from __future__ import annotations

import pytest
import torch

from nostride import create_model, fuse
from nostride.utils.profile import count_flops, count_parameters

pytestmark = pytest.mark.usefixtures("one_thread_module")


@pytest.mark.parametrize("name", ["yolov5n_p2", "yolov5n_spd_p2"])
def test_p2_models_detect_at_four_strides_and_cost_more_than_without(name):
    base = create_model(name.replace("_p2", ""), num_classes=3)
    model = create_model(name, num_classes=3).eval()
    assert model.stride.tolist() == [4.0, 8.0, 16.0, 32.0]
    assert model.detect.anchors.shape == (4, 3, 2)
    x = torch.randn(1, 3, 64, 64)
    out = model(x)[0]
    assert out.shape == (1, 3 * (16 * 16 + 8 * 8 + 4 * 4 + 2 * 2), 8)
    assert count_parameters(model) > count_parameters(base)
    assert count_flops(model, (1, 3, 64, 64)) > count_flops(base, (1, 3, 64, 64))
    if "spd" in name:  # the P2 layout's SPD layers fold like YOLOv5-SPD's
        torch.testing.assert_close(fuse(model)(x)[0], out, atol=1e-4, rtol=1e-4)


def test_p2_spd_in_the_papers_order_and_the_loss_of_four_levels():
    from nostride.tasks.detect.loss import YOLOv5Loss

    model = create_model("yolov5n_spd_p2", num_classes=2, spd_order="spd-conv")
    assert model.stride.tolist() == [4.0, 8.0, 16.0, 32.0]
    preds = model.train()(torch.randn(2, 3, 64, 64))
    assert len(preds) == 4
    loss, items = YOLOv5Loss(model)(preds, torch.tensor([[0, 1, 0.5, 0.5, 0.1, 0.1], [1, 0, 0.3, 0.4, 0.05, 0.05]]))
    loss.sum().backward()
    assert torch.isfinite(loss).all()


def test_p2_arms_pair_with_their_strided_baseline_in_compare():
    from nostride.comparison.api import _own_baseline
    from nostride.comparison.specs import parse_model_list

    p2, spd_p2 = parse_model_list("yolov5n_p2,yolov5n_spd_p2")
    assert not p2.is_spd and spd_p2.is_spd
    assert _own_baseline(spd_p2).text == "yolov5n_p2"
