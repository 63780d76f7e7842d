"""What the charts say: compare's error bars and GFLOPs ticks, the AP-by-size rule, an empty confusion matrix."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nostride.comparison import charts
from nostride.comparison.report import ModelRow
from nostride.comparison.specs import parse_model_spec
from nostride.comparison.stats import Summary
from nostride.tasks.detect import plots


def _row(spec: str, flops: float, scores: dict[int, float]) -> ModelRow:
    return ModelRow(128, parse_model_spec(spec), {"mAP50-95": scores}, 1_000_000, int(flops * 1e9), math.nan,
                    Summary(1.0, 0.0, len(scores)))


@pytest.fixture
def figures(monkeypatch):
    """The figures the plotting functions save, kept for inspection."""
    kept = []
    real = charts.save_figure

    def keep(fig, path):
        kept.append(fig)
        return real(fig, path)

    monkeypatch.setattr(charts, "save_figure", keep)
    monkeypatch.setattr(plots, "save_figure", keep)
    return kept


def test_metric_vs_gflops_says_what_its_error_bars_are_and_ticks_plain_gflops(figures, tmp_path):
    rows = [_row("yolov5n", 0.166, {0: 0.02, 1: 0.025, 2: 0.018}), _row("yolov5n_spd", 0.339, {0: 0.03, 1: 0.02, 2: 0.026})]
    charts.plot_metric_vs_flops(rows, "mAP50-95", "mAP50-95", tmp_path / "m.png")
    fig = figures[-1]
    assert fig._suptitle.get_text() == "mean of 3 seeds; error bars: ± 1 standard deviation over seeds"
    ax = fig.axes[0]
    fig.canvas.draw()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.166", "0.339"]
    assert not [t.get_text() for t in ax.get_xticklabels(minor=True) if t.get_text()]  # no 2x10^-1 between them
    one_seed = [_row("yolov5n", 0.166, {0: 0.02})]
    assert charts.error_bar_note(one_seed, "mAP50-95") == "one seed per model: no error bars"
    charts.plot_metric_vs_img_size(rows, "mAP50-95", "mAP50-95", tmp_path / "s.png")
    assert "error bars: ± 1 standard deviation" in figures[-1].axes[0].get_title()



def test_gflops_ticks_of_models_of_nearly_equal_cost_do_not_overprint(figures, tmp_path):
    rows = [_row("yolov5n", 0.166, {0: 0.3}), _row("yolov5n_p2", 0.196, {0: 0.3}),
            _row("yolov5n@down=spd", 0.308, {0: 0.3}), _row("yolov5n_spd", 0.339, {0: 0.3}),
            _row("yolov5n@width_multiple=0.344", 0.344, {0: 0.3})]
    charts.plot_metric_vs_flops(rows, "mAP50-95", "mAP50-95", tmp_path / "m.png")
    fig = figures[-1]
    fig.canvas.draw()
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["0.166", "0.196", "0.308"]

def test_ap_by_size_states_the_area_rule_of_the_docs(figures, tmp_path):
    plots.plot_ap_by_size({"AP_small": 0.1, "mAP50-95": 0.2, "instances": 3}, tmp_path / "ap.png")
    title = figures[-1].axes[0].get_title()
    assert "original-image pixels" in title and "small ≤ 32²" in title and "large ≥ 96²" in title


def test_a_confusion_matrix_without_detections_says_so(figures, tmp_path):
    missed = np.zeros((3, 3))
    missed[2, 0], missed[2, 1] = 5, 2  # every object of both classes predicted as background
    plots.plot_confusion_matrix(missed, ["a", "b"], tmp_path / "cm.png")
    assert "no detections above its\nconfidence threshold" in figures[-1].axes[0].get_title()
    found = missed.copy()
    found[0, 0] = 1
    assert plots.confusion_title(found) == "Confusion matrix (columns sum to 1)"
    assert "empty" in plots.confusion_title(np.zeros((3, 3)))
