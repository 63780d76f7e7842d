"""``nostride convert``: report table, parameter/FLOP summary, equivalence check, saved weights."""

from __future__ import annotations

import re

import pytest
import torch

from nostride import spdify
from nostride.checkpoint import load_checkpoint, model_from_checkpoint
from nostride.cli import main
from nostride.utils import count_flops, count_parameters

torchvision = pytest.importorskip("torchvision")

# squeezenet1_1: small, a strided 3x3 conv without padding and ceil_mode max-pools
MODEL = "squeezenet1_1"


@pytest.mark.slow
def test_convert_prints_report_counts_and_exact_check(capsys, tmp_path):
    out_file = tmp_path / "sq_spd.pt"
    args = [MODEL, "--img-size", "64", "--num-classes", "10", "--max-pool", "keep", "--output", str(out_file)]
    assert main(["convert", *args]) == 0
    out = capsys.readouterr().out

    original = torchvision.models.get_model(MODEL, weights=None, num_classes=10).eval()
    converted, report = spdify(original, pool={"max": "keep"}, example_input=(1, 3, 64, 64))
    # the report table: each strided layer, what became of it
    assert re.search(r"features\.0\s+converted\s+Conv2d\(3, 64, k=3, s=2\)\s+SPD\(2\) -> Conv2d\(12, 64, k=3, p=1\)", out)
    for name in ("features.2", "features.5", "features.8"):
        assert re.search(rf"{re.escape(name)}\s+kept\s+MaxPool2d", out)
    assert "4 strided layers: 1 converted, 3 kept" in out
    # parameters and FLOPs before/after are the real ones
    params = (count_parameters(original), count_parameters(converted))
    flops = [count_flops(m, (1, 3, 64, 64)) / 1e9 for m in (original, converted)]
    assert re.search(rf"original\s+{params[0]:,}\s+{flops[0]:.3f}", out)
    assert re.search(rf"SPD-Conv\s+{params[1]:,}\s+{flops[1]:.3f}", out)
    # preserve-init with max-pools kept: outputs unchanged, said in words
    assert "result: exact: all 1 converted layer compute" not in out  # plural/singular wording
    assert re.search(r"result: exact: the 1 converted layer computes what the original layer computed", out)
    rel = float(re.search(r"whole model: (\S+) of the output scale", out).group(1))
    assert rel <= 1e-4
    assert "approximate" not in out

    # the checkpoint rebuilds: torchvision model + spdify with the saved options + the weights
    ckpt = load_checkpoint(out_file)
    assert (ckpt["source"], ckpt["source_model"]) == ("torchvision", MODEL)
    rebuilt = model_from_checkpoint(out_file)  # strict load: same architecture
    assert all(torch.equal(v, ckpt["model"][k]) for k, v in rebuilt.state_dict().items())
    # saved weights are the preserve-init ones: 9 of the 4 blocks x 3x3 taps per filter are used
    w = rebuilt.features[0].conv.weight
    assert w.shape == (64, 12, 3, 3) and torch.count_nonzero(w) == 64 * 3 * 9
    assert rebuilt.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 10)


@pytest.mark.slow
def test_converted_max_pools_are_flagged_inexact(capsys):
    assert main(["convert", MODEL, "--img-size", "48", "--num-classes", "10", "--pool-conv", "depthwise"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"features\.2\s+converted\s+MaxPool2d\(k=3, s=2, ceil_mode=True\)\s+SPD\(2, groups=64\)", out)
    assert re.search(r"^features\.2 .* no$", out, re.MULTILINE)
    assert "result: approximate: 1 of 4 converted layers exact" in out
    assert "3 max-pools (features.2, features.5, features.8)" in out and "not linear" in out
    # the exact layer is checked on its own, and is exact
    m = re.search(r"the 1 exact layer alone .*: (\S+) of the output scale .*: exact$", out, re.MULTILINE)
    assert m and float(m.group(1)) <= 1e-4


def test_unknown_model_is_a_clean_error(capsys):
    assert main(["convert", "resnet19"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'resnet19'" in err and "torchvision.models.list_models()" in err
    assert "nostride models" in err and "resnet18" in err


def test_kernel_too_small_for_preserve_names_the_layer(capsys):
    assert main(["convert", MODEL, "--img-size", "48", "--kernel-size", "1", "--pool", "keep"]) == 2
    err = capsys.readouterr().err
    assert "layer 'features.0'" in err and "at least 3x3" in err


def _relative(out: str) -> float:
    m = re.search(r"whole model: (\S+?)(%?) of the output scale", out)
    return float(m.group(1)) / (100 if m.group(2) else 1)


@pytest.mark.slow
def test_resnet18_default_report_is_honest_in_words(capsys):
    """The README's first command: max-pool converted by default, so the report says approximate, where and why."""
    assert main(["convert", "resnet18", "--img-size", "64"]) == 0
    out = capsys.readouterr().out
    assert "weights: random initialisation (pass --weights FILE" in out
    assert "result: approximate: 7 of 8 converted layers exact" in out
    assert "1 max-pool (maxpool): a maximum is not linear" in out
    exact_part = float(re.search(r"the 7 exact layers alone .*?: (\S+) of the output scale", out).group(1))
    assert exact_part <= 1e-4 and _relative(out) > 0.01  # a difference relative to the outputs' scale
    assert main(["convert", "resnet18", "--img-size", "64", "--max-pool", "keep"]) == 0
    out = capsys.readouterr().out
    assert "result: exact: all 7 converted layers compute what the original layers computed" in out


@pytest.mark.slow
def test_tiny_outputs_are_judged_relative_to_their_scale(capsys):
    """mobilenet_v3_small with random weights has outputs ~1e-9: an absolute difference would mean nothing."""
    assert main(["convert", "mobilenet_v3_small", "--img-size", "32"]) == 0
    out = capsys.readouterr().out
    scale = float(re.search(r"outputs up to (\S+)\)", out).group(1))
    assert scale < 1e-6 and _relative(out) <= 1e-4 and "result: exact" in out


@pytest.mark.slow
def test_convert_with_weights_file(capsys, tmp_path):
    """--weights: a training checkpoint's nested, DDP-prefixed state dict with its own class count."""
    torch.manual_seed(1)
    original = torchvision.models.get_model(MODEL, weights=None, num_classes=7).eval()
    weights = tmp_path / "trained.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in original.state_dict().items()}, "epoch": 3}, weights)
    out_file = tmp_path / "converted.pt"
    assert main(["convert", MODEL, "--img-size", "48", "--max-pool", "keep", "--weights", str(weights),
                 "--output", str(out_file)]) == 0
    out = capsys.readouterr().out
    assert f"weights: {weights} (checkpoint (its 'state_dict' weights), 52 tensors, 7 classes as in the file)" in out
    assert "result: exact" in out
    # the saved model is the file's function, in SPD-Conv form
    rebuilt = model_from_checkpoint(out_file)
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), original(x), atol=1e-5, rtol=1e-4)
    assert load_checkpoint(out_file)["converted_from"] == str(weights)


def test_weights_for_another_model_is_a_short_error(capsys, tmp_path):
    weights = tmp_path / "other.pth"
    torch.save(torchvision.models.get_model("mobilenet_v3_small", weights=None).state_dict(), weights)
    assert main(["convert", MODEL, "--weights", str(weights)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and str(weights) in err and "weights do not fit" in err
    assert "and 4" in err or "more" in err  # a few key names, never all of them
    assert len(err) < 600


@pytest.mark.slow
def test_convert_timm_model(capsys, tmp_path):
    pytest.importorskip("timm")
    out_file = tmp_path / "timm_spd.pt"
    assert main(["convert", "timm:resnet18", "--img-size", "48", "--max-pool", "keep", "--num-classes", "5",
                 "--output", str(out_file)]) == 0
    out = capsys.readouterr().out
    assert "timm model 'resnet18'" in out and "result: exact" in out
    rebuilt = model_from_checkpoint(out_file)
    assert rebuilt(torch.randn(1, 3, 48, 48)).shape == (1, 5)
    assert main(["convert", "timm:resnt18"]) == 2
    assert "Did you mean: resnet18" in capsys.readouterr().err


@pytest.mark.slow
def test_val_counts_the_classes_of_a_converted_torchvision_model(tmp_path):
    """`convert --output` without --num-classes: the 1000-way fc is the class count (not 'num_classes=0')."""
    from nostride.tasks.classify.evaluate import _checkpoint_classes

    out_file = tmp_path / "r.pt"
    assert main(["convert", MODEL, "--img-size", "48", "--output", str(out_file)]) == 0
    ckpt = load_checkpoint(out_file)
    assert _checkpoint_classes(ckpt, model_from_checkpoint(ckpt)) == 1000
