"""Every recipe in configs/ loads through the options loader, names a registered classifier, and each
SPD recipe has a strided baseline that differs only in the model."""

from __future__ import annotations

from pathlib import Path

import pytest

from nostride.engine import load_config_file
from nostride.models import model_info

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RECIPES = sorted(CONFIGS.glob("*.yaml"))


def test_recipes_exist():
    names = {p.name for p in RECIPES}
    assert {"resnet18_spd_tiny_imagenet.yaml", "resnet18_tiny_imagenet.yaml", "resnet50_spd_cifar10.yaml",
            "resnet50_cifar10.yaml", "resnet18_spd_cifar10.yaml", "resnet18_cifar10.yaml"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_loads(path):
    opts = load_config_file(path)  # unknown keys or wrong types raise
    assert model_info(opts["model"]).task == "classify"


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
