"""Model specs of a comparison: ``NAME``, ``NAME@key=value,...`` (builder options) and ``spdify:NAME[@...]``
(the registry model converted with :func:`nostride.spdify` before training)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..utils.specs import format_spec, parse_spec

__all__ = ["ModelSpec", "parse_model_spec", "parse_model_list"]

SPDIFY_PREFIX = "spdify:"


@dataclass(eq=False)
class ModelSpec:
    """One model of a study.

    Attributes:
        name: registry name (``resnet18``).
        options: builder options (``width`` and any other keyword of the builder).
        spdify: convert the built model with :func:`nostride.spdify` (random initialisation).
        matched_to: for a baseline added by ``match``: the spec text of the SPD model it was widened
            to match, and ``match_metric`` says on what ("flops" or "params").
    """

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    spdify: bool = False
    matched_to: str | None = None
    match_metric: str | None = None
    match_error: float | None = None  # achieved / target - 1 of a matched baseline

    def __hash__(self) -> int:
        return hash(self.text)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ModelSpec) and other.text == self.text

    @property
    def text(self) -> str:
        """The spec as the user writes it (``spdify:resnet18@width=32``)."""
        return (SPDIFY_PREFIX if self.spdify else "") + format_spec(self.name, self.options)

    @property
    def label(self) -> str:
        """Table label: the spec, plus what a matched baseline was matched to."""
        if self.matched_to:
            off = f", {self.match_error:+.1%}" if self.match_error is not None and abs(self.match_error) > 0.05 else ""
            return f"{self.text} ({self.match_metric}-matched{off})"
        return self.text

    @property
    def slug(self) -> str:
        """A folder name for the spec (``spdify-resnet18-width32``)."""
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", self.text.replace("@", "-").replace("=", "")).strip("-")

    @property
    def is_spd(self) -> bool:
        """True for SPD models: converted ones, registry names ending in ``_spd`` (or ``_spd_p2``) and
        ``down=spd`` arms."""
        return (self.spdify or self.name.endswith("_spd") or self.name.endswith("_spd_p2")
                or self.options.get("down") == "spd")

    def train_options(self) -> dict[str, Any]:
        """The training options that build this model (``model``, ``width``, ``model_options``, ``spdify``)."""
        options = dict(self.options)
        out: dict[str, Any] = {"model": self.name, "spdify": self.spdify}
        if "width" in options:
            out["width"] = options.pop("width")
        out["model_options"] = options
        return out

    def with_options(self, **changes: Any) -> "ModelSpec":
        """A copy with some builder options changed."""
        return ModelSpec(self.name, {**self.options, **changes}, self.spdify)


def parse_model_spec(text: str) -> ModelSpec:
    """``"spdify:resnet18@width=32"`` -> ``ModelSpec("resnet18", {"width": 32}, spdify=True)``.

    Raises:
        KeyError: the model name is not registered (the message lists close names).
        ValueError: malformed options.
    """
    from nostride.models import model_info

    text = str(text).strip()
    spdify = text.startswith(SPDIFY_PREFIX)
    if spdify:
        text = text[len(SPDIFY_PREFIX):]
    name, options = parse_spec(text, "model")
    model_info(name)  # unknown names fail here, with suggestions
    return ModelSpec(name, options, spdify)


def parse_model_list(models: str | list[str] | tuple[str, ...]) -> list[ModelSpec]:
    """A comma-separated string or a list of specs -> specs (duplicates refused).

    Commas inside options are allowed: ``"resnet18@width=32,zero_init_residual=true,resnet18_spd"``
    splits before ``resnet18_spd`` because ``zero_init_residual=true`` holds an ``=``.
    """
    if isinstance(models, str):
        parts: list[str] = []
        for piece in (p.strip() for p in models.split(",")):
            if not piece:
                continue
            key = piece.split("=")[0]
            if parts and "@" in parts[-1] and "=" in piece and not any(c in key for c in "@:"):
                parts[-1] += "," + piece  # another option of the previous spec
            else:
                parts.append(piece)
    else:
        parts = [str(m) for m in models]
    specs = [parse_model_spec(p) for p in parts]
    seen: set[str] = set()
    for s in specs:
        if s.text in seen:
            raise ValueError(f"model {s.text!r} is listed twice")
        seen.add(s.text)
    if not specs:
        raise ValueError("no models given")
    return specs
