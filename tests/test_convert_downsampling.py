"""convert_downsampling, create_model(down=...) and `nostride convert --to`: torchvision, timm, ultralytics
and registry models, exact where the operator keeps the function, per-layer reports where it cannot serve."""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import nostride
from nostride import convert_downsampling, create_model, fuse, list_downsample_ops
from nostride.checkpoint import model_from_checkpoint, save_checkpoint, make_checkpoint
from nostride.convert import downsampling_sites
from nostride.utils.profile import count_parameters

pytestmark = pytest.mark.usefixtures("one_thread_module")


def strided(model: nn.Module) -> list[str]:
    return downsampling_sites(model)


@pytest.fixture(scope="module")
def tv_resnet():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=7).eval()


def test_conv_equal_keeps_a_torchvision_models_function_and_writes_each_spd_conv_as_one_strided_conv(tv_resnet):
    x = torch.randn(2, 3, 33, 31)  # odd sizes
    conv, report = convert_downsampling(tv_resnet, "conv-equal", exclude=["maxpool"], example_input=(1, 3, 64, 64))
    torch.testing.assert_close(conv.eval()(x), tv_resnet(x), atol=1e-5, rtol=1e-4)
    assert all(e.exact for e in report if e.action == "converted") and report.count_action("converted") == 7
    kernels = {tuple(m.kernel_size) for m in conv.modules() if isinstance(m, nn.Conv2d) and m.stride == (2, 2)}
    assert kernels == {(10, 10), (6, 6), (2, 2)}  # 7x7/2 -> SPD+5x5 -> 10x10/2; 3x3/2 -> 6x6/2; 1x1/2 -> 2x2/2
    from nostride.convert import GroupedSpaceToDepth

    assert not any(isinstance(m, (GroupedSpaceToDepth, nostride.SpaceToDepth)) for m in conv.modules())
    spd, _ = convert_downsampling(tv_resnet, "spd", exclude=["maxpool"], example_input=(1, 3, 64, 64))
    assert count_parameters(spd) == count_parameters(conv)  # the same parametrisation, rearranged


def test_every_operator_converts_a_torchvision_model_and_reports_each_layer(tv_resnet):
    x = torch.randn(1, 3, 64, 64)
    for op in list_downsample_ops():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model, report = convert_downsampling(tv_resnet, op, init="random", example_input=(1, 3, 64, 64))
        assert model.eval()(x).shape == (1, 7), op
        assert len(report) == 8, op  # conv1, maxpool, three strided convs and three strided shortcuts
        if op == "strided":
            assert report.count_action("kept") == 8
            continue
        assert report.count_action("converted") + report.count_action("unsupported") == 8
        if op == "adown":  # the 3-channel stem cannot be split in halves: reported, left as it was
            (entry,) = [e for e in report if e.action == "unsupported"]
            assert entry.name == "conv1" and "not both even" in entry.note and "conv1: adown cannot serve" in str(report)
            assert isinstance(model.conv1, nn.Conv2d) and model.conv1.stride == (2, 2)
            assert any("cannot serve 1 layers" in str(w.message) for w in caught)
        else:
            assert report.count_action("converted") == 8, op
        if op not in ("spd", "conv-equal"):
            assert "new (trained from scratch)" in str(report)


def test_unknown_operator_lists_the_known_ones(tv_resnet):
    with pytest.raises(ValueError, match="unknown downsampling operator 'wavelet'; known: strided, spd, conv-spd"):
        convert_downsampling(tv_resnet, "wavelet")
    with pytest.raises(ValueError, match="known: strided"):
        create_model("resnet18", down="wavelet")


def test_an_operator_that_cannot_serve_a_depthwise_or_stride_4_layer_leaves_it_and_says_why():
    net = nn.Sequential(nn.Conv2d(8, 8, 3, 2, 1, groups=8), nn.Conv2d(8, 16, 4, 4), nn.Conv2d(16, 16, 3, 2, 1))
    with pytest.warns(UserWarning, match="cannot serve 2 layers"):
        model, report = convert_downsampling(net, "hwd")
    notes = {e.name: e.note for e in report}
    assert "grouped convolution" in notes["0"] and "stride 4x4" in notes["1"]
    assert model[0] is not net[0] and model[0].groups == 8 and isinstance(model[2], nostride.layers.HWD)
    assert model(torch.randn(1, 8, 32, 32)).shape == (1, 16, 2, 2)
    # BlurPool serves the depthwise one (its stride-1 conv keeps the groups)
    with pytest.warns(UserWarning, match="cannot serve 1 layers"):
        model, _ = convert_downsampling(net, "blurpool")
    assert model[0].conv.groups == 8


def test_timm_model_conversion(one_thread):
    timm = pytest.importorskip("timm")
    net = timm.create_model("resnet10t", num_classes=5, pretrained=False).eval()
    x = torch.randn(1, 3, 64, 64)
    exact, report = convert_downsampling(net, "conv-equal", exclude=["maxpool"])
    torch.testing.assert_close(exact.eval()(x), net(x), atol=1e-5, rtol=1e-4)
    for op in ("hwd", "blurpool", "scdown"):
        model, report = convert_downsampling(net, op, init="random")
        assert model.eval()(x).shape == (1, 5) and report.count_action("converted") == len(report)


def test_ultralytics_model_conversion_keeps_routing_and_runs():
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(Path(tempfile.gettempdir()) / "nostride-tests-ultralytics"))
    import numpy as np

    save, printopts = torch.save, np.get_printoptions()
    tasks = pytest.importorskip("ultralytics.nn.tasks")
    torch.save = save
    np.set_printoptions(**printopts)
    torch.set_printoptions(profile="default")
    model = tasks.DetectionModel("yolov8n.yaml", verbose=False).eval()
    x = torch.randn(1, 3, 64, 64)
    with pytest.warns(UserWarning, match="YAML"):
        exact, report = convert_downsampling(model, "conv-equal")
    torch.testing.assert_close(exact.eval()(x)[0], model(x)[0])
    assert all(e.exact for e in report) and report.count_action("converted") == 7
    with pytest.warns(UserWarning):
        hwd, report = convert_downsampling(model, "hwd")
    layer = hwd.model[1]
    assert isinstance(layer, nostride.layers.HWD) and (layer.i, layer.f) == (1, -1)
    assert hwd.eval()(x)[0].shape == model(x)[0].shape
    hwd.fuse(verbose=False)  # ultralytics' own fuse leaves the new blocks alone


def test_down_option_replaces_every_site_of_registry_models():
    yolo = create_model("yolov5n", down="hwd", num_classes=3)
    assert not strided(yolo)  # every downsampling site now uses HWD
    assert sum(isinstance(m, nostride.layers.HWD) for m in yolo.modules()) == 7
    assert yolo.model_kwargs["down"] == "hwd"
    y = yolo.eval()(torch.randn(1, 3, 64, 64))
    assert y[0].shape[-1] == 8
    res = create_model("resnet18", down="blurpool", num_classes=4, width=8)
    # 4 blurs after a BN and ReLU (stem, three strided 3x3s), 3 after the 1x1 shortcuts, 1 after the max
    assert sum(isinstance(m, nostride.layers.BlurPool2d) for m in res.modules()) == 8
    assert sum(isinstance(m, nostride.layers.MaxBlurPool) for m in res.modules()) == 1
    assert res(torch.randn(2, 3, 32, 32)).shape == (2, 4)


def test_down_option_on_a_model_without_downsampling_sites_says_so():
    with pytest.raises(ValueError, match="'resnet18_spd' has no downsampling sites.*down='hwd' has nothing to replace"):
        create_model("resnet18_spd", down="hwd")


def test_down_model_round_trips_through_a_checkpoint_and_fuses(tmp_path):
    model = create_model("yolov5n", down="conv-equal", num_classes=2).eval()
    path = save_checkpoint(make_checkpoint(model), tmp_path / "m.pt")
    loaded = model_from_checkpoint(path)
    loaded = loaded[0] if isinstance(loaded, tuple) else loaded
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(loaded.eval()(x)[0], model(x)[0])
    fused = fuse(model)
    torch.testing.assert_close(fused(x)[0], model(x)[0], atol=1e-4, rtol=1e-4)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())


def test_yolov5n_down_spd_fuses_to_the_same_function():
    x = torch.randn(1, 3, 64, 64)
    for op in ("spd",):  # spdify's SPD inside YOLOv5's Conv blocks (the other blocks: test_downsample_ops.py)
        model = create_model("yolov5n", down=op, num_classes=2).eval()
        fused = fuse(model)
        torch.testing.assert_close(fused(x)[0], model(x)[0], atol=1e-4, rtol=1e-4)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules()), op


def test_spec_with_down_builds_through_the_comparison_specs():
    from nostride.comparison.matching import build_spec_model
    from nostride.comparison.specs import parse_model_spec

    spec = parse_model_spec("resnet18@down=hwd,width=8")
    assert spec.options == {"down": "hwd", "width": 8}
    model = build_spec_model(spec, 10, 32)
    assert any(isinstance(m, nostride.layers.HWD) for m in model.modules())


def test_cli_convert_to_an_operator_reports_and_saves_a_rebuildable_checkpoint(tmp_path, capsys):
    from nostride.cli import main

    out = tmp_path / "hwd.pt"
    assert main(["convert", "resnet18", "--to", "hwd", "--img-size", "32", "--num-classes", "3",
                 "--output", str(out)]) == 0
    text = capsys.readouterr().out
    assert "-> hwd" in text and "8 new (trained from scratch)" in text and "result: 8 new layers" in text
    loaded = model_from_checkpoint(out)
    loaded = loaded[0] if isinstance(loaded, tuple) else loaded
    assert sum(isinstance(m, nostride.layers.HWD) for m in loaded.modules()) == 8
    assert main(["convert", "resnet18", "--to", "wavelet"]) == 2
    err = capsys.readouterr().err
    assert "unknown downsampling operator 'wavelet'; known: strided" in err and "Traceback" not in err


@pytest.mark.slow
def test_cli_export_of_a_down_model_checkpoint_runs_in_onnxruntime(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from nostride.cli import main

    model = create_model("resnet18", down="hwd", width=4, num_classes=3)
    path = save_checkpoint(make_checkpoint(model), tmp_path / "hwd.pt")
    # export fuses the model (HWD + BN -> one 2x2 stride-2 conv) and checks the file in onnxruntime
    assert main(["export", "--weights", str(path), "--img-size", "32", "--output", str(tmp_path / "hwd.onnx")]) == 0
    ops = {n.op_type for n in onnx.load(str(tmp_path / "hwd.onnx")).graph.node}
    assert "BatchNormalization" not in ops and "Conv" in ops


def test_cli_train_down_becomes_a_builder_option(monkeypatch):
    import nostride.engine
    from nostride.cli import main

    seen = {}
    monkeypatch.setattr(nostride.engine, "train", lambda config=None, **options: seen.update(options))
    assert main(["train", "--model", "yolov5n", "--down", "hwd", "--data", "builtin:small-objects"]) == 0
    assert seen["model_options"] == {"down": "hwd"} and "down" not in seen


def test_blurpool_in_a_resnet_block_blurs_after_bn_and_relu_as_the_paper(tv_resnet):
    import torch.nn.functional as F

    from nostride.layers import BlurPool2d

    model, report = convert_downsampling(tv_resnet, "blurpool", example_input=(1, 3, 64, 64))
    block = model.layer2[0].eval()
    assert block.conv1.stride == (1, 1) and isinstance(block.bn1[2], BlurPool2d)
    x = torch.randn(2, 64, 15, 15)
    bn1 = block.bn1[0]
    inner = block.bn1[2](F.relu(bn1(block.conv1(x))))  # Zhang 2019: conv (stride 1) -> BN -> ReLU -> blur
    expected = F.relu(block.bn2(block.conv2(inner)) + block.downsample(x))
    torch.testing.assert_close(block(x), expected)
    (entry,) = [e for e in report if e.name == "layer2.0.conv1"]
    assert "the blur after layer2.0.bn1 and its ReLU" in entry.note


def test_a_checkpoints_downsample_record_is_checked_before_building(tmp_path):
    from nostride.checkpoint import WeightsFileError, check_checkpoint

    ckpt = {"model": {}, "downsample": [{"to": "hwd", "exclude": [], "example_input": [1, 3, 100000, 100000]}]}
    with pytest.raises(WeightsFileError, match="example_input .* values per sample"):
        check_checkpoint(ckpt)
    with pytest.raises(WeightsFileError, match="entry downsample must list"):
        check_checkpoint({"model": {}, "downsample": [{"to": "hwd", "inplace": True}]})
