"""nostride: SPD-Conv ("No More Strided Convolutions or Pooling", Sunkara & Luo, 2022) for PyTorch.

Layers (:class:`SpaceToDepth`, :class:`SPDConv`), conversion of any CNN (:func:`spdify`), the
deployment form (:func:`fuse`), and the paper's models through :func:`create_model`.
"""

__version__ = "0.1.0"

from .checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from .convert import fuse, spdify
from .layers import DepthToSpace, SPDConv, SpaceToDepth, depth_to_space, space_to_depth
from .models import create_model, list_models
from .models.yolo.import_yolov5 import load_yolov5


def train(model=None, data=None, **options):
    """Train a model (see :func:`nostride.engine.train`; imported lazily to keep ``import nostride`` light)."""
    from .engine import train as _train

    return _train(model, data, **options)


__all__ = [
    "DepthToSpace",
    "SPDConv",
    "SpaceToDepth",
    "__version__",
    "create_model",
    "depth_to_space",
    "fuse",
    "list_models",
    "load_checkpoint",
    "load_yolov5",
    "model_from_checkpoint",
    "save_checkpoint",
    "space_to_depth",
    "spdify",
    "train",
]
