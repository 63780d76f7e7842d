"""Cost of a model spec (parameters, FLOPs) and widening a strided baseline to match an SPD model's cost."""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from torch import nn

from ..utils.profile import count_flops, count_parameters
from .specs import ModelSpec

__all__ = ["MATCH_TOLERANCE", "ModelCost", "build_spec_model", "model_cost", "match_baseline"]

MATCH_TOLERANCE = 0.05  # a matched baseline lands within 5 % of the target (warned about otherwise)
_METRICS = ("flops", "params")


@dataclass(frozen=True)
class ModelCost:
    """Parameters and FLOPs (one forward pass at batch 1) of a model at an image size."""

    params: int
    flops: int

    def get(self, metric: str) -> int:
        return self.params if metric == "params" else self.flops


def build_spec_model(spec: ModelSpec, num_classes: int, img_size: int) -> nn.Module:
    """The model a spec describes, built as training builds it (registry builder, then spdify)."""
    from nostride.models import create_model

    options = {**spec.train_options()["model_options"], "num_classes": num_classes}
    if "width" in spec.options:
        options["width"] = spec.options["width"]
    model = create_model(spec.name, **options)
    if spec.spdify:
        from nostride.convert import spdify

        model, _ = spdify(model, init="random", example_input=(1, 3, img_size, img_size), inplace=True)
    return model


@lru_cache(maxsize=256)
def _cost(text: str, num_classes: int, img_size: int) -> ModelCost:
    from .specs import parse_model_spec

    model = build_spec_model(parse_model_spec(text), num_classes, img_size)
    try:
        flops = count_flops(model, (1, 3, img_size, img_size))
    except RuntimeError as e:  # e.g. a layer whose window is larger than its input at this size
        raise ValueError(f"{text} cannot run on {img_size} x {img_size} images: {str(e).splitlines()[0]}") from None
    return ModelCost(count_parameters(model), flops)


def model_cost(spec: ModelSpec, num_classes: int, img_size: int) -> ModelCost:
    """Parameters and FLOPs of ``spec`` for ``num_classes`` at ``img_size`` x ``img_size`` (cached)."""
    return _cost(spec.text, int(num_classes), int(img_size))


def _width_knob(spec: ModelSpec) -> tuple[str, type, float]:
    """(builder option that widens the model, its type, its default)."""
    from nostride.models import model_info

    params = inspect.signature(model_info(spec.name).builder).parameters
    for knob, kind in (("width", int), ("width_multiple", float)):
        if knob in params:
            value = spec.options.get(knob, params[knob].default)
            return knob, kind, float(value) if value is not None else 0.25  # (only where the search starts)
    raise ValueError(f"{spec.text}: its builder has no width option, so it cannot be widened to match "
                     f"(builders with 'width' or 'width_multiple' can)")


def match_baseline(baseline: ModelSpec, target: ModelSpec, metric: str, num_classes: int,
                   img_size: int) -> tuple[ModelSpec, float]:
    """``baseline`` widened until its ``metric`` ("flops" or "params") at ``img_size`` is closest to
    ``target``'s; returns the widened spec and its relative difference from the target (achieved /
    target - 1). Warns when that misses :data:`MATCH_TOLERANCE` (the width steps are too coarse).
    """
    if metric not in _METRICS:
        raise ValueError(f"match must be one of {_METRICS}, got {metric!r}")
    goal = model_cost(target, num_classes, img_size).get(metric)
    knob, kind, start = _width_knob(baseline)

    def value(w: Any) -> int:
        return model_cost(baseline.with_options(**{knob: w}), num_classes, img_size).get(metric)

    if kind is int:
        lo, hi = 1, max(int(start), 1)
        while value(hi) < goal:  # cost grows with width: double until above the goal
            lo, hi = hi, hi * 2
            if hi > 1 << 14:
                raise ValueError(f"{baseline.text}: cannot reach {metric} {goal:,} by widening")
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if value(mid) < goal else (lo, mid)
        candidates = [lo, hi]
    else:
        lo, hi = 0.01, max(start, 0.01)
        while value(hi) < goal:
            lo, hi = hi, hi * 2
            if hi > 64:
                raise ValueError(f"{baseline.text}: cannot reach {metric} {goal:,} by widening")
        candidates = []
        for _ in range(10):  # channels are rounded to multiples of 8: finer steps change nothing
            mid = round((lo + hi) / 2, 3)
            candidates.append(mid)
            lo, hi = (mid, hi) if value(mid) < goal else (lo, mid)
        candidates += [lo, hi]
    best = min(candidates, key=lambda w: (abs(value(w) - goal), w))
    error = value(best) / goal - 1
    spec = baseline.with_options(**{knob: best})
    spec.matched_to, spec.match_metric, spec.match_error = target.text, metric, error
    if abs(error) > MATCH_TOLERANCE:
        warnings.warn(f"{spec.text}: closest {metric} to {target.text} at {img_size} px is {error:+.1%} off "
                      f"(the width steps are too coarse at this size)", RuntimeWarning, stacklevel=2)
    return spec, error
