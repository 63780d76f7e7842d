"""Every shipped recipe (nostride/configs/) loads through the options loader, names a registered model, and each
SPD recipe has a strided baseline that differs only in the model."""

from __future__ import annotations

from pathlib import Path

import pytest

from nostride.engine import load_config_file
from nostride.models import model_info

CONFIGS = Path(__file__).resolve().parents[1] / "nostride" / "configs"
RECIPES = sorted(CONFIGS.glob("*.yaml"))


def test_recipes_exist():
    names = {p.name for p in RECIPES}
    assert {"resnet18_spd_tiny_imagenet.yaml", "resnet18_tiny_imagenet.yaml", "resnet50_spd_cifar10.yaml",
            "resnet50_cifar10.yaml", "resnet18_spd_cifar10.yaml", "resnet18_cifar10.yaml"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_loads(path):
    opts = load_config_file(path)  # unknown keys or wrong types raise
    assert model_info(opts["model"]).task == ("detect" if opts["model"].startswith("yolov5") else "classify")


@pytest.mark.parametrize("path", [p for p in RECIPES if "_spd_" in p.name], ids=lambda p: p.name)
def test_spd_recipe_has_matching_baseline(path):
    baseline = CONFIGS / path.name.replace("_spd", "")
    spd, base = load_config_file(path), load_config_file(baseline)
    assert spd.pop("model").endswith("_spd") and not base.pop("model").endswith("_spd")
    assert spd == base


def test_paper_hyper_parameters():
    tiny = load_config_file(CONFIGS / "resnet18_spd_tiny_imagenet.yaml")
    assert (tiny["lr"], tiny["momentum"], tiny["batch_size"], tiny["weight_decay"], tiny["epochs"]) == \
        (0.01793, 0.9447, 256, 0.002113, 200)
    c10 = load_config_file(CONFIGS / "resnet50_spd_cifar10.yaml")
    assert (c10["lr"], c10["momentum"], c10["batch_size"], c10["weight_decay"], c10["epochs"]) == \
        (0.1, 0.9, 128, 0.0001, 200)
    assert tiny["schedule"] == c10["schedule"] == "step"


@pytest.mark.parametrize("scale", ["n", "s", "m", "l"])
def test_paper_detection_recipes(scale):
    """SGD momentum 0.937, weight decay 5e-4, lr 0.01, 3 warm-up epochs, cosine to 0.001, batch 128
    for n/s and 32 for m/l, 640 px, from scratch, the fork's hyp file (scratch)."""
    from nostride.engine import build_config

    cfg = build_config(CONFIGS / f"yolov5{scale}_spd_coco.yaml")
    assert (cfg.optimizer, cfg.momentum, cfg.weight_decay, cfg.lr, cfg.lr * cfg.lrf) == ("sgd", 0.937, 5e-4, 0.01,
                                                                                         pytest.approx(0.001))
    assert (cfg.warmup_epochs, cfg.schedule, cfg.img_size, cfg.hyp, cfg.weights) == (3, "cosine", 640, "scratch", "")
    assert cfg.batch_size == (128 if scale in "ns" else 32) and cfg.nominal_batch_size == 64 and cfg.ema
