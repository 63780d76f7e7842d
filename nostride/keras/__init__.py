"""SPD-Conv for Keras 3: :class:`SpaceToDepth` and :class:`SPDConv` layers (``pip install "nostride[keras]"``).

The layers use ``keras.ops`` only (no backend-specific code); they are tested on the torch
backend against nostride's PyTorch layers with the same weights.
Channels are in the same order as :func:`nostride.space_to_depth` (block ``r + s*c``, ``r`` the
row offset, ``c`` the column offset), for ``channels_last`` and ``channels_first`` alike, so
weights move between PyTorch and Keras without re-ordering (:func:`load_torch_weights`).

Importing this module when Keras is not imported yet, ``KERAS_BACKEND`` is unset and TensorFlow
is not installed selects the torch backend (Keras' own default, TensorFlow, would fail to load).
"""

from __future__ import annotations

import importlib.util
import os
import sys

if "keras" not in sys.modules and "KERAS_BACKEND" not in os.environ and importlib.util.find_spec("tensorflow") is None:
    os.environ["KERAS_BACKEND"] = "torch"

from .layers import SPDConv, SpaceToDepth, load_torch_weights, space_to_depth  # noqa: E402

__all__ = ["SPDConv", "SpaceToDepth", "load_torch_weights", "space_to_depth"]
