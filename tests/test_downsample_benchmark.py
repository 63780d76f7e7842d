"""`nostride benchmark` rows for downsampling operators: op:NAME blocks, NAME@down=OP models, --down."""

from __future__ import annotations

import pytest

from nostride.benchmark import benchmark, resolve_model
from nostride.layers import HWD

pytestmark = pytest.mark.usefixtures("one_thread_module")


def test_operator_blocks_and_down_models_are_benchmarked_with_their_cost():
    label, block, size = resolve_model("op:hwd@c_in=8,c_out=16")
    assert isinstance(block, HWD) and size == 80 and block.conv.in_channels == 32
    label, model, size = resolve_model("resnet18@down=hwd,width=4")
    assert label == "resnet18@down=hwd,width=4" and any(isinstance(m, HWD) for m in model.modules())
    report = benchmark(["op:strided@c_in=32,c_out=64", "op:hwd@c_in=32,c_out=64"], img_size=64,
                       forms=["eager", "fused"], repeats=2, warmup=1, memory=False)
    rows = {(r.model, r.form): r for r in report.rows}
    strided, hwd = rows[("op:strided@c_in=32,c_out=64", "eager")], rows[("op:hwd@c_in=32,c_out=64", "eager")]
    assert strided.params == 9 * 32 * 64 + 2 * 64 and hwd.params == 4 * 32 * 64 + 2 * 64
    assert hwd.gflops < strided.gflops and strided.ratio == 1.0 and hwd.latency_ms > 0
    with pytest.raises(ValueError, match="an operator takes c_in, c_out and k"):
        resolve_model("op:hwd@width=3")
    with pytest.raises(ValueError, match="unknown downsampling operator 'haar'"):
        resolve_model("op:haar")


def test_cli_benchmark_down_expands_each_model_per_operator(capsys):
    from nostride.cli import main

    assert main(["benchmark", "resnet18@width=4", "--down", "strided,hwd", "--img-size", "32", "--batch-size", "2", "--forms", "eager", "train",
                 "--repeats", "1", "--warmup", "0", "--no-memory"]) == 0
    out = capsys.readouterr().out
    assert "resnet18@width=4,down=strided" in out and "resnet18@width=4,down=hwd" in out
    train_rows = [line for line in out.splitlines() if " train " in line and "down=" in line]
    assert len(train_rows) == 2 and not any("unavailable" in line for line in train_rows)
