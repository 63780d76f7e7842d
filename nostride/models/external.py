"""Models by name from any source: nostride's registry, torchvision, timm.

A name is ``NAME`` or ``SOURCE:NAME`` with ``SOURCE`` one of ``nostride``, ``torchvision``, ``timm``.
Every model built here records where it came from (``source``, ``source_model``, ``model_kwargs``;
registry models also ``model_name``), so a checkpoint of it (:func:`nostride.checkpoint.make_checkpoint`)
can rebuild it.
"""

from __future__ import annotations

import difflib
from typing import Any

from torch import nn

__all__ = ["SOURCES", "build_named_model", "split_model_name"]

SOURCES = ("nostride", "torchvision", "timm")


def split_model_name(spec: str) -> tuple[str, str]:
    """``("torchvision", "resnet18")`` for ``"torchvision:resnet18"``; ``("", name)`` without a prefix."""
    source, _, name = spec.rpartition(":")
    if source not in ("", *SOURCES):
        raise ValueError(f"unknown model source {source!r} in {spec!r}: use "
                         + ", ".join(f"'{s}:NAME'" for s in SOURCES))
    return source, name


def _timm():
    try:
        import timm
    except ImportError:
        raise ValueError("timm models need the timm package: pip install timm (or pip install 'nostride[timm]')") from None
    return timm


def build_named_model(spec: str, num_classes: int | None = None, prefer: str = "nostride",
                      **kwargs: Any) -> tuple[nn.Module, str, str]:
    """``(model, source, name)`` for a model name, randomly initialised.

    Args:
        spec: ``NAME`` or ``SOURCE:NAME`` (``nostride``, ``torchvision``, ``timm``).
        num_classes: classifier outputs (``None``: the model's own default).
        prefer: for a bare name both nostride and torchvision have (``resnet18``), which one.
        **kwargs: more keyword arguments for the builder (``None`` values are left out).

    Raises:
        ValueError: unknown name (with close matches), timm missing, or arguments the builder refuses.
    """
    from nostride.models import create_model, list_models

    source, name = split_model_name(spec)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    down = kwargs.pop("down", None)  # a downsampling operator for every strided conv / pool
    if down is not None:
        model, source, name = build_named_model(spec, num_classes, prefer, **kwargs)
        if source == "nostride":  # the registry records down= among the model's keyword arguments
            return create_model(name, **model.model_kwargs, down=down), source, name
        from ._registry import with_downsampling

        return with_downsampling(model, spec, str(down), record=True), source, name
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if source == "timm":
        timm = _timm()
        if not timm.is_model(name):
            close = difflib.get_close_matches(name, timm.list_models(), n=5)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise ValueError(f"unknown timm model {name!r} (timm.list_models() lists them).{hint}")
        try:
            model = timm.create_model(name, pretrained=False, **kwargs)
        except TypeError as e:
            raise ValueError(f"cannot build {spec!r} with {kwargs}: {e}") from None
        return _record(model, "timm", name, kwargs), "timm", name

    import torchvision

    tv_names = torchvision.models.list_models()
    order = [source] if source else (["nostride", "torchvision"] if prefer == "nostride" else ["torchvision", "nostride"])
    try:
        for candidate in order:
            if candidate == "torchvision" and name in tv_names:
                model = torchvision.models.get_model(name, weights=None, **kwargs)
                return _record(model, "torchvision", name, kwargs), "torchvision", name
            if candidate == "nostride" and name in list_models():
                return create_model(name, **kwargs), "nostride", name
    except TypeError as e:  # e.g. num_classes for a builder without that argument
        raise ValueError(f"cannot build {spec!r} with {kwargs}: {e}") from None
    close = difflib.get_close_matches(name, sorted(set(tv_names) | set(list_models())), n=5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ValueError(
        f"unknown model {spec!r}: not a torchvision model (list them with "
        f"python -c \"import torchvision; print(torchvision.models.list_models())\") nor a nostride model "
        f"(`nostride models`); timm models are named timm:NAME.{hint}"
    )


def _record(model: nn.Module, source: str, name: str, kwargs: dict[str, Any]) -> nn.Module:
    model.source = source
    model.source_model = name
    model.model_kwargs = dict(kwargs)
    return model
