"""``nostride benchmark`` as a library: what each model costs at inference, in each deployment form.

>>> report = benchmark(["resnet18", "resnet18_spd"], img_size=64, forms=["eager", "fused"], repeats=3)  # doctest: +SKIP
>>> print(report.table())  # doctest: +SKIP
"""

from .forms import FORMS, FormUnavailable
from .measure import interleaved_latencies, peak_activation_bytes, percentile
from .report import BenchmarkReport, BenchmarkRow
from .run import benchmark, resolve_model

__all__ = [
    "FORMS",
    "BenchmarkReport",
    "BenchmarkRow",
    "FormUnavailable",
    "benchmark",
    "interleaved_latencies",
    "peak_activation_bytes",
    "percentile",
    "resolve_model",
]
