"""Model registry and the model families (ResNet, YOLOv5) built on nostride's layers."""

from ._registry import ModelInfo, create_model, list_models, model_info, register_model
from . import resnet  # noqa: F401  (registers the ResNet builders)
from . import yolo  # noqa: F401  (registers the YOLOv5 builders)
from .spd_form import SPD_FORMS, set_spd_form

__all__ = ["ModelInfo", "SPD_FORMS", "create_model", "list_models", "model_info", "register_model", "set_spd_form"]
