"""nostride benchmark: interleaved timing, percentiles, memory, forms, table/CSV/JSON and the CLI."""

from __future__ import annotations

import csv
import io
import json

import pytest
import torch

import nostride
from nostride.benchmark import benchmark, interleaved_latencies, peak_activation_bytes, percentile
from nostride.benchmark import forms as forms_mod
from nostride.cli import main
from nostride.utils.profile import count_flops


def test_percentile_interpolates():
    assert percentile([1, 2, 3, 4, 5], 50) == 3
    assert percentile([5, 1, 4, 2, 3], 90) == pytest.approx(4.6)
    assert percentile([7], 90) == 7
    with pytest.raises(ValueError):
        percentile([], 50)


def test_interleaved_rotates_and_counts():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    times = interleaved_latencies(fns, torch.device("cpu"), repeats=3, warmup=2)
    assert calls[:6] == ["a", "a", "b", "b", "c", "c"]  # warm-up
    # one call of each per round, each round starting one further on
    assert calls[6:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}


def test_peak_activation_bytes_counts_live_outputs():
    def fn():
        x = torch.ones(1000)  # 4000 bytes
        y = torch.ones(2000)  # 8000 bytes, x still alive
        del x
        z = y * 2  # 8000 bytes, y alive: 16000 peak
        return z.sum()  # 4 bytes more while y and z are alive

    assert peak_activation_bytes(fn, torch.device("cpu")) == 16004


def tiny_pair():
    torch.manual_seed(0)
    return [
        ("r18", nostride.create_model("resnet18", num_classes=10, width=8)),
        ("r18_spd", nostride.create_model("resnet18_spd", num_classes=10, width=8)),
    ]


@pytest.mark.slow
def test_benchmark_rows_ratios_and_outputs(tmp_path, monkeypatch):
    real = forms_mod.importlib.util.find_spec
    monkeypatch.setattr(forms_mod.importlib.util, "find_spec", lambda n, *a: None if n == "openvino" else real(n, *a))
    models = tiny_pair()
    report = benchmark(models, img_size=32, batch_size=[1, 2], forms=["eager", "fused", "openvino"], repeats=2, warmup=1)
    assert len(report.rows) == 2 * 3 * 2
    by = {(r.model, r.form, r.batch): r for r in report.rows}
    for batch in (1, 2):
        assert by[("r18", "eager", batch)].ratio == 1.0
        spd = by[("r18_spd", "fused", batch)]
        assert spd.ratio == pytest.approx(spd.latency_ms / by[("r18", "fused", batch)].latency_ms, rel=1e-2)
        assert spd.throughput == pytest.approx(batch / (spd.latency_ms / 1e3), rel=1e-2)
        assert spd.p90_ms >= spd.latency_ms > 0 and spd.peak_mb > 0
        # openvino "missing": a row that says why, no timings
        ov = by[("r18", "openvino", batch)]
        assert ov.latency_ms is None and "needs openvino" in ov.error
    assert by[("r18_spd", "eager", 1)].gflops == pytest.approx(count_flops(models[1][1], (1, 3, 32, 32)) / 1e9, abs=1e-3)
    assert by[("r18_spd", "eager", 1)].params == sum(p.numel() for p in models[1][1].parameters())

    table = report.table()
    assert "r18_spd" in table and "unavailable: needs openvino" in table and "ratio" in table
    rows = list(csv.DictReader(io.StringIO(report.to_csv(tmp_path / "b.csv"))))
    assert len(rows) == 12 and rows[0]["model"] == "r18" and (tmp_path / "b.csv").is_file()
    data = json.loads(report.to_json(tmp_path / "b.json"))
    assert data["repeats"] == 2 and len(data["rows"]) == 12 and data["rows"][1]["model"] == "r18_spd"


@pytest.mark.slow
def test_benchmark_onnxruntime_and_torchscript_forms():
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    report = benchmark(tiny_pair()[1:], img_size=32, forms=["torchscript", "onnxruntime"], repeats=2, warmup=1)
    assert [r.form for r in report.rows] == ["torchscript", "onnxruntime"]
    assert all(r.error is None and r.latency_ms > 0 for r in report.rows)
    assert report.rows[1].peak_mb is None  # not tracked outside PyTorch on the CPU


def test_benchmark_rejects_bad_options():
    with pytest.raises(ValueError, match="unknown form"):
        benchmark(tiny_pair(), forms=["tflite"])
    with pytest.raises(ValueError, match="CUDA only"):
        benchmark(tiny_pair(), half=True)
    with pytest.raises(KeyError, match="unknown model"):
        benchmark(["resnet17"])


@pytest.mark.slow
def test_cli_benchmark(tmp_path, capsys):
    out = tmp_path / "b.json"
    code = main(["benchmark", "resnet18", "resnet18_spd", "--img-size", "32", "--repeats", "2", "--warmup", "1",
                 "--forms", "eager", "--json", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "resnet18_spd" in text and "ratio" in text
    assert json.loads(out.read_text())["rows"][0]["model"] == "resnet18"
    with pytest.raises(SystemExit) as e:  # refused by the option parser, with the bound
        main(["benchmark", "resnet18", "--repeats", "0"])
    assert e.value.code == 2
    assert "argument --repeats: must be in [1, 10000], got 0" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_benchmark_cuda_half():
    report = benchmark(tiny_pair(), img_size=32, forms=["eager", "fused", "onnxruntime"], device="cuda", half=True,
                       repeats=2, warmup=1)
    rows = {(r.model, r.form): r for r in report.rows}
    assert rows[("r18_spd", "fused")].dtype == "float16" and rows[("r18_spd", "fused")].peak_mb > 0
    assert "float32 only" in rows[("r18", "onnxruntime")].error
