"""What :func:`nostride.spdify` did, layer by layer."""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ConversionEntry", "ConversionReport"]


@dataclass
class ConversionEntry:
    """One strided layer that :func:`nostride.spdify` met.

    Attributes:
        name: qualified module name (``""`` for the root module).
        kind: ``"conv"``, ``"maxpool"``, ``"avgpool"`` or ``"other"`` (a strided layer spdify does
            not convert, e.g. ``Conv1d`` or ``LPPool2d``).
        action: ``"converted"``, ``"dropped"`` (replaced by ``nn.Identity``), ``"kept"`` (pool
            policy ``keep``), ``"excluded"`` (matched an ``exclude`` pattern) or ``"unsupported"``.
        old: repr of the original module.
        new: one-line description of the module now in its place (``old`` when unchanged).
        params_before: parameters of the original module.
        params_after: parameters of its replacement.
        exact: the replacement computes exactly what the original computed (preserve init).
        note: why a layer was left unchanged, or what replaced it (``convert_downsampling``).
    """

    name: str
    kind: str
    action: str
    old: str
    new: str
    params_before: int
    params_after: int
    exact: bool
    note: str = ""


class ConversionReport(list):
    """A list of :class:`ConversionEntry` with model totals and a printable table.

    Attributes:
        model_params_before: parameters of the whole model before conversion.
        model_params_after: parameters of the converted model.
    """

    def __init__(self, entries=(), model_params_before: int = 0, model_params_after: int = 0) -> None:
        super().__init__(entries)
        self.model_params_before = model_params_before
        self.model_params_after = model_params_after

    def count_action(self, action: str) -> int:
        """Number of entries with this ``action`` (e.g. ``"converted"``)."""
        return sum(1 for e in self if e.action == action)

    @property
    def params_before(self) -> int:
        """Parameters of the listed layers before conversion."""
        return sum(e.params_before for e in self)

    @property
    def params_after(self) -> int:
        """Parameters of the listed layers after conversion."""
        return sum(e.params_after for e in self)

    def __str__(self) -> str:
        header = ("layer", "action", "original", "replacement", "params", "-> params", "exact")
        rows = [
            (
                e.name or "(model)",
                e.action,
                _compact(e.old),
                _compact(e.new) if e.action in ("converted", "dropped") else "(unchanged)",
                f"{e.params_before:,}",
                f"{e.params_after:,}",
                "yes" if e.exact else "no",
            )
            for e in self
        ]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        right = {4, 5}  # numbers right-aligned

        def fmt(row: tuple[str, ...]) -> str:
            cells = [c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(row)]
            return "  ".join(cells).rstrip()

        lines = [fmt(header), fmt(tuple("-" * w for w in widths))]
        lines += [fmt(r) for r in rows]
        counts = ", ".join(
            f"{self.count_action(a)} {a}"
            for a in ("converted", "dropped", "kept", "excluded", "unsupported")
            if self.count_action(a) or a == "converted"
        )
        for e in self:
            if e.action == "unsupported" and e.note:
                lines.append(f"{e.name or '(model)'}: {e.note}")
        converted = [e for e in self if e.action == "converted"]
        if converted and any(e.note for e in converted):
            n_exact = sum(e.exact for e in converted)
            lines.append(f"{n_exact} exact (function kept), {len(converted) - n_exact} new (trained from scratch)")
        lines.append(f"{len(self)} strided {'layer' if len(self) == 1 else 'layers'}: {counts}")
        lines.append(f"layer parameters: {self.params_before:,} -> {self.params_after:,}")
        before, after = self.model_params_before, self.model_params_after
        change = f" ({(after - before) / before:+.1%})" if before else ""
        lines.append(f"model parameters: {before:,} -> {after:,}{change}")
        return "\n".join(lines)


_PAIR = re.compile(r"\b(kernel_size|stride|padding|dilation)=\((\d+), (\d+)\)")
_DEFAULTS = re.compile(r", (stride=1|padding=0|dilation=1|ceil_mode=False)\b")
_SHORT = {"kernel_size": "k", "stride": "s", "padding": "p", "dilation": "d"}


def _compact(text: str) -> str:
    """Shorter module reprs for the table: ``kernel_size=(3, 3), stride=(1, 1)`` -> ``k=3``."""
    text = _PAIR.sub(lambda m: f"{m[1]}={m[2]}" if m[2] == m[3] else f"{m[1]}={m[2]}x{m[3]}", text)
    text = _DEFAULTS.sub("", text)
    return re.sub(r"\b(kernel_size|stride|padding|dilation)=", lambda m: _SHORT[m[1]] + "=", text)
