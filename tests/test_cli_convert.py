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
    # preserve-init with max-pools kept: outputs unchanged
    diff, scale = map(float, re.search(r"max \|SPD-Conv - original\| = (\S+) .*outputs up to (\S+)\)", out).groups())
    assert diff <= 1e-4 * scale
    assert "not an exact conversion" not in out

    # the checkpoint rebuilds: torchvision model + spdify with the saved options + the weights
    ckpt = load_checkpoint(out_file)
    assert (ckpt["source"], ckpt["source_model"]) == ("torchvision", MODEL)
    rebuilt = model_from_checkpoint(out_file)  # strict load: same architecture
    assert all(torch.equal(v, ckpt["model"][k]) for k, v in rebuilt.state_dict().items())
    # saved weights are the preserve-init ones: 9 of the 4 blocks x 3x3 taps per filter are used
    w = rebuilt.features[0].conv.weight
    assert w.shape == (64, 12, 3, 3) and torch.count_nonzero(w) == 64 * 3 * 9
    assert rebuilt.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_converted_max_pools_are_flagged_inexact(capsys):
    assert main(["convert", MODEL, "--img-size", "48", "--num-classes", "10", "--pool-conv", "depthwise"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"features\.2\s+converted\s+MaxPool2d\(k=3, s=2, ceil_mode=True\)\s+SPD\(2, groups=64\)", out)
    assert re.search(r"^features\.2 .* no$", out, re.MULTILINE)
    assert "not an exact conversion: 3 layer(s)" in out


def test_unknown_model_is_a_clean_error(capsys):
    assert main(["convert", "resnet19"]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'resnet19'" in err and "torchvision.models.list_models()" in err
    assert "nostride models" in err and "resnet18" in err


def test_kernel_too_small_for_preserve_names_the_layer(capsys):
    assert main(["convert", MODEL, "--img-size", "48", "--kernel-size", "1", "--pool", "keep"]) == 2
    err = capsys.readouterr().err
    assert "layer 'features.0'" in err and "at least 3x3" in err
