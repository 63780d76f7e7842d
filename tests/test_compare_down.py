"""`nostride compare --down`: one arm per downsampling operator, matched cost, ranking and the null check."""

from __future__ import annotations

import csv
import math

import pytest

from nostride.comparison.down_arms import DEFAULT_DOWN_OPS, down_arms, down_section, match_down_arms, parse_down
from nostride.comparison.matching import model_cost
from nostride.comparison.report import ModelRow
from nostride.comparison.specs import parse_model_list, parse_model_spec
from nostride.comparison.stats import Summary

pytestmark = pytest.mark.usefixtures("one_thread_module")
TINY_DATA = "builtin:lowres@train=4,val=2,test=2"


def test_operator_lists_and_arms():
    assert parse_down("all") == list(DEFAULT_DOWN_OPS) == parse_down("")
    assert parse_down("strided, hwd,Conv_Equal") == ["strided", "hwd", "conv-equal"]
    with pytest.raises(ValueError, match="unknown downsampling operator 'haar'; known: strided, spd"):
        parse_down("strided,haar")
    with pytest.raises(ValueError, match="twice"):
        parse_down("hwd,hwd")
    arms = down_arms(parse_model_list("resnet18@width=8"), ["strided", "spd", "hwd"])
    assert [a.text for a in arms] == ["resnet18@width=8,down=strided", "resnet18@width=8,down=spd",
                                      "resnet18@width=8,down=hwd"]
    assert [a.is_spd for a in arms] == [False, True, False]
    with pytest.raises(ValueError, match="'resnet18_spd@width=8' has no downsampling sites"):
        down_arms(parse_model_list("resnet18_spd@width=8"), ["hwd"])


def test_match_flops_widens_every_arm_to_the_most_expensive():
    arms = down_arms(parse_model_list("resnet18@width=4"), ["strided", "conv-equal"])
    notes: list[str] = []
    matched = match_down_arms(arms, "flops", 10, 16, notes.append)
    target = model_cost(arms[1], 10, 16).flops  # conv-equal: 4x the strided convs' FLOPs
    assert matched[1] == arms[1] and matched[1].matched_to is None
    spec = matched[0]
    assert spec.options["down"] == "strided" and spec.options["width"] > 4 and spec.matched_to == arms[1].text
    assert "(flops-matched" in spec.label
    assert abs(model_cost(spec, 10, 16).flops / target - 1) <= 0.05 or notes


def _row(op: str, scores: dict[int, float], flops: int) -> ModelRow:
    return ModelRow(32, parse_model_spec(f"resnet18@width=8,down={op}"), {"top1": scores}, 1000, flops, math.nan,
                    Summary(1.0, math.nan, 1))


def test_section_ranks_arms_and_states_the_null_check_in_words():
    rows = [_row("strided", {0: 50.0, 1: 52.0, 2: 51.0}, 100), _row("spd", {0: 55.0, 1: 56.0, 2: 58.0}, 400),
            _row("conv-equal", {0: 55.5, 1: 55.0, 2: 58.5}, 400), _row("hwd", {0: 40.0, 1: 41.0, 2: 43.0}, 50)]
    md = down_section(rows, "top1", "top-1 %")
    ranked = [line.split("|")[2].split()[0] for line in md.splitlines() if line.split("|")[1:2] and line.split("|")[1].strip().isdigit()]
    assert ranked == ["spd", "conv-equal", "strided", "hwd"]
    assert "| 4 | hwd" in md and md.count("better") == 1 and "-9.67 [-13.46, -5.87] worse" in md
    assert "no significant difference, as expected; the study passes its null check" in md
    rows[2] = _row("conv-equal", {0: 45.0, 1: 46.0, 2: 44.5}, 400)
    assert "a significant difference" in down_section(rows, "top1", "top-1 %")
    assert "Null check: not run" in down_section(rows[:1] + rows[3:], "top1", "top-1 %")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NOSTRIDE_CACHE", str(tmp_path / "cache"))


@pytest.mark.slow
def test_cli_compare_down_end_to_end(cache, tmp_path, capsys):
    from nostride.cli import main

    rc = main(["compare", "--data", TINY_DATA, "--down", "strided,spd,conv-equal,hwd", "--seeds", "2", "--epochs",
               "1", "--batch-size", "8", "--project", str(tmp_path), "--name", "ops", "--no-latency", "--jobs", "1"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "## Downsampling operators" in out and "ranked by top-1 %" in out
    assert "Null check at 32 px: SPD-Conv and conv-equal" in out
    summary = list(csv.DictReader(open(tmp_path / "ops" / "summary.csv")))
    assert [r["model"] for r in summary] == [f"resnet18@width=8,down={op}" for op in ("strided", "spd", "conv-equal", "hwd")]
    assert all(r["n_seeds"] == "2" for r in summary)
    flops = {r["model"].split("=")[-1]: int(r["flops"]) for r in summary}
    assert flops["spd"] == flops["conv-equal"] > flops["strided"] > flops["hwd"]
    params = {r["model"].split("=")[-1]: int(r["params"]) for r in summary}
    assert params["spd"] == params["conv-equal"]
