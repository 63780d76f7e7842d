"""What a bare ``nostride compare`` runs (no PyTorch import here: ``--help`` shows these)."""

from __future__ import annotations

from pathlib import Path

# YOLOv5n against YOLOv5n-SPD on the built-in small objects at 128 px, 8-24 px each (every object
# "small" by COCO's rule, area < 32^2), with a short-schedule recipe sized to finish within about
# 10 minutes on a 2-core CPU. Objects from 8 px: with 4-24 px, two in five of them under 8 px, YOLOv5n
# reached 17 % mAP50 in the same budget against 61 % (same recipe, 15 epochs, one seed)
DEFAULT_MODELS = "yolov5n,yolov5n_spd"
DEFAULT_DATA = "builtin:small-objects@img_size=128,min_size=8,max_size=24"
DEFAULT_RECIPE = "small-objects-cpu"  # used when the data is the default and no recipe is given
DEFAULT_SEEDS = 3
# with --data but no --models: a strided ResNet-18 against ResNet18-SPD at a CPU-sized width for
# classification data (an image folder, CIFAR-10, Tiny ImageNet, builtin:lowres)
DEFAULT_CLASSIFY_MODELS = "resnet18@width=8,resnet18_spd@width=8"


def default_models(data: str | None) -> str:
    """The models a study of ``data`` compares when none are given: YOLOv5n against YOLOv5n-SPD for
    detection data (a dataset YAML, ``builtin:small-objects``), ResNet-18 against ResNet18-SPD
    otherwise."""
    if not data:
        return DEFAULT_MODELS
    text = str(data).lower()
    if text.startswith("builtin:"):
        return DEFAULT_MODELS if text.startswith("builtin:small-objects") else DEFAULT_CLASSIFY_MODELS
    return DEFAULT_MODELS if text.endswith((".yaml", ".yml")) else DEFAULT_CLASSIFY_MODELS

RECIPE_DIR = Path(__file__).with_name("recipes")


def packaged_recipes() -> list[str]:
    """Names of the recipes shipped with nostride (``--recipe NAME``)."""
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def resolve_recipe(recipe: str) -> Path:
    """A recipe file: ``recipe`` itself when it is a file, else the packaged recipe of that name.

    Raises:
        FileNotFoundError: neither (the message lists the packaged recipes).
    """
    path = Path(recipe)
    if path.is_file():
        return path
    packaged = RECIPE_DIR / f"{recipe}.yaml"
    if packaged.is_file():
        return packaged
    from nostride.configs import find_config

    try:
        return find_config(recipe)  # a shipped training recipe (yolov5n_coco); its model is set per run
    except FileNotFoundError:
        pass
    raise FileNotFoundError(f"recipe {recipe!r}: no such file and no packaged recipe of that name "
                            f"(packaged: {', '.join(packaged_recipes())}, or a training recipe of "
                            "nostride train --config)")
