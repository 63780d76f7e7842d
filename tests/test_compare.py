"""nostride compare: model specs, FLOPs/params matching, statistics, resumable studies, the CLI."""

from __future__ import annotations

import csv
import json
import math
import re

import pytest

from nostride.comparison import paired_difference, parse_model_list, parse_model_spec, summarize
from nostride.comparison.matching import MATCH_TOLERANCE, match_baseline, model_cost
from nostride.comparison.stats import t_quantile_975

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_DATA = "builtin:lowres@train=4,val=2,test=2"


# ------------------------------------------------------------------------------------------ specs
def test_model_specs_parse_options_and_spdify():
    s = parse_model_spec("spdify:resnet18@width=32,zero_init_residual=true")
    assert (s.name, s.options, s.spdify, s.is_spd) == ("resnet18", {"width": 32, "zero_init_residual": True},
                                                       True, True)
    assert s.text == "spdify:resnet18@width=32,zero_init_residual=true" and s.slug == \
        "spdify-resnet18-width32-zero_init_residualtrue"
    assert s.train_options() == {"model": "resnet18", "spdify": True, "width": 32,
                                 "model_options": {"zero_init_residual": True}}
    specs = parse_model_list("resnet18@width=8,zero_init_residual=true,resnet18_spd@width=8,resnet18_cifar")
    assert [x.text for x in specs] == ["resnet18@width=8,zero_init_residual=true", "resnet18_spd@width=8",
                                       "resnet18_cifar"]
    assert [x.is_spd for x in specs] == [False, True, False]
    with pytest.raises(KeyError, match="unknown model 'resnet99'"):
        parse_model_spec("resnet99")
    with pytest.raises(ValueError, match="expected key=value"):
        parse_model_spec("resnet18@width")
    with pytest.raises(ValueError, match="listed twice"):
        parse_model_list("resnet18,resnet18")


# --------------------------------------------------------------------------------------- matching
@pytest.mark.parametrize("metric,size", [("flops", 32), ("flops", 16), ("params", 32)])
def test_matched_baseline_lands_within_5_percent(metric, size):
    base, spd = parse_model_spec("resnet18@width=16"), parse_model_spec("resnet18_spd@width=16")
    matched, error = match_baseline(base, spd, metric, 10, size)
    got, goal = model_cost(matched, 10, size).get(metric), model_cost(spd, 10, size).get(metric)
    assert abs(got / goal - 1) <= MATCH_TOLERANCE and error == pytest.approx(got / goal - 1)
    assert matched.options["width"] > 16 and matched.matched_to == "resnet18_spd@width=16"
    # the nearest width: one step either way is no closer
    w = matched.options["width"]
    for other in (w - 1, w + 1):
        assert abs(model_cost(base.with_options(width=other), 10, size).get(metric) - goal) >= abs(got - goal)


def test_matching_a_converted_model_and_costs_of_specs():
    spd = parse_model_spec("spdify:resnet18@width=8")
    cost = model_cost(spd, 10, 32)
    plain = model_cost(parse_model_spec("resnet18@width=8"), 10, 32)
    assert cost.flops > 1.5 * plain.flops and cost.params > plain.params  # stride-1 convs on 4x the channels
    matched, error = match_baseline(parse_model_spec("resnet18@width=8"), spd, "flops", 10, 32)
    assert abs(error) <= MATCH_TOLERANCE


# ------------------------------------------------------------------------------------- statistics
def test_summary_and_paired_difference_on_hand_made_numbers():
    s = summarize([1.0, 2.0, 3.0, math.nan])
    assert (s.mean, s.std, s.n) == (2.0, 1.0, 3) and s.format() == "2.00 ± 1.00"
    assert summarize([5.0]).format() == "5.00" and summarize([]).n == 0
    # differences 1, 2, 3: mean 2, sd 1, t(0.975, 2) = 4.303 -> half-width 4.303 / sqrt(3) = 2.4843
    d = paired_difference({0: 11.0, 1: 12.0, 2: 13.0, 3: 99.0}, {0: 10.0, 1: 10.0, 2: 10.0})
    assert d.n == 3 and d.mean == pytest.approx(2.0)
    assert (d.low, d.high) == (pytest.approx(2 - 2.48434, abs=1e-4), pytest.approx(2 + 2.48434, abs=1e-4))
    assert not d.significant and d.verdict() == "no significant difference"
    # a consistent gain is significant; the verdict follows the sign
    d = paired_difference({0: 11.0, 1: 12.1, 2: 13.0, 3: 14.0}, {0: 10.0, 1: 11.0, 2: 12.0, 3: 13.1})
    assert d.significant and d.verdict() == "better" and d.low > 0
    assert paired_difference({0: 1.0, 1: 1.0}, {0: 2.0, 1: 2.1}).verdict() == "worse"
    assert paired_difference({0: 1.0}, {0: 2.0}).verdict() == "one seed: no interval"
    # the same difference on every seed (a metric moving in coarse steps): no interval, never "better"
    d = paired_difference({0: 15.0, 1: 20.0}, {0: 10.0, 1: 15.0})
    assert d.no_spread and not d.significant and d.verdict() == "same difference on every seed: no interval, add seeds"
    assert paired_difference({0: 1.0, 1: 2.0}, {0: 1.0, 1: 2.0}).verdict() == "no significant difference"
    assert t_quantile_975(1) == 12.706 and t_quantile_975(30) == 2.042
    assert t_quantile_975(1000) == pytest.approx(1.962, abs=1e-3)


# ----------------------------------------------------------------------------------- end to end
@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NOSTRIDE_CACHE", str(tmp_path / "cache"))


@pytest.mark.slow
def test_tiny_study_end_to_end_and_resume_runs_only_what_is_missing(cache, tmp_path, capsys, monkeypatch):
    import nostride
    from nostride.comparison import study

    kwargs = dict(epochs=1, seeds=2, project=tmp_path / "runs", batch_size=16, latency=False, jobs=1)
    # interrupt the study after its first run: a KeyboardInterrupt in the second
    real, calls = study._train_in_process, []

    def flaky(run, *a):
        calls.append(run.title)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(run, *a)

    monkeypatch.setattr(study, "_train_in_process", flaky)
    with pytest.raises(KeyboardInterrupt):
        nostride.compare("resnet18@width=4,resnet18_spd@width=4", TINY_DATA, **kwargs)
    monkeypatch.setattr(study, "_train_in_process", real)
    trained = []
    monkeypatch.setattr(study, "_train_in_process", lambda run, *a: trained.append(run.title) or real(run, *a))
    result = nostride.compare("resnet18@width=4,resnet18_spd@width=4", TINY_DATA, **kwargs)
    assert result.dir == tmp_path / "runs" / "exp"  # the same study continued, not exp2
    assert trained == ["32px resnet18_spd@width=4 seed 0", "32px resnet18@width=4 seed 1",
                       "32px resnet18_spd@width=4 seed 1"]
    out = capsys.readouterr().out
    assert "[1/4] 32px resnet18@width=4 seed 0: top-1 % " in out and "(done before)" in out
    assert "| resnet18_spd@width=4 | resnet18@width=4 | top-1 % |" in out

    # every run: its own folder, 1 epoch, the test split scored with best.pt; same split seed for all
    runs = list(csv.DictReader(open(result.dir / "runs.csv")))
    assert len(runs) == 4 and {r["seed"] for r in runs} == {"0", "1"}
    for r in runs:
        final = json.loads(open(f"{r['run_dir']}/final_metrics.json").read())
        assert float(r["top1"]) == pytest.approx(final["test"]["top1"], rel=1e-5) and final["test"]["count"] == 20
        args = (tmp_path / r["run_dir"] / "args.yaml").read_text()
        assert "split_seed: 0" in args and "epochs: 1" in args
    row = result.row("resnet18_spd@width=4")
    assert row.summary("top1").n == 2 and row.flops == model_cost(parse_model_spec("resnet18_spd@width=4"), 10, 32).flops
    (d,) = result.differences
    assert d.diff.n == 2 and d.diff.mean == pytest.approx(
        row.summary("top1").mean - result.row("resnet18@width=4").summary("top1").mean)
    for name in ("report.md", "summary.csv", "differences.csv", "metric_vs_gflops.png"):
        assert (result.dir / name).is_file()

    # again: nothing trained; a different study (other epochs) goes to a new folder
    trained.clear()
    again = nostride.compare("resnet18@width=4,resnet18_spd@width=4", TINY_DATA, quiet=True, **kwargs)
    assert trained == [] and again.markdown == result.markdown


@pytest.mark.slow
def test_cli_compare_with_matching_and_two_sizes(cache, tmp_path, capsys):
    from nostride.cli import main

    rc = main(["compare", "--models", "resnet18_spd@width=4", "--data", TINY_DATA, "--epochs", "1", "--seeds", "1",
               "--img-sizes", "32,16", "--match", "flops", "--batch-size", "16", "--project", str(tmp_path),
               "--name", "s", "--no-latency", "--set", "label_smoothing=0.1", "--jobs", "1"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "### 32 x 32 pixels" in out and "### 16 x 16 pixels" in out and "(flops-matched" in out
    summary = list(csv.DictReader(open(tmp_path / "s" / "summary.csv")))
    assert {(r["img_size"], r["spd"]) for r in summary} == {("32", "1"), ("32", "0"), ("16", "1"), ("16", "0")}
    assert (tmp_path / "s" / "metric_vs_img_size.png").is_file()
    assert "label_smoothing: 0.1" in next((tmp_path / "s" / "runs").rglob("args.yaml")).read_text()


def test_cli_compare_bad_input_gets_one_line(capsys, tmp_path):
    from nostride.cli import main

    assert main(["compare", "--models", "resnet18,yolov5n", "--project", str(tmp_path)]) == 2
    assert "mix tasks" in capsys.readouterr().err
    assert main(["compare", "--set", "seed=3", "--project", str(tmp_path)]) == 2
    assert "set per run by compare" in capsys.readouterr().err
    assert main(["compare", "--set", "lrr=3", "--project", str(tmp_path)]) == 2
    assert "unknown option 'lrr'" in capsys.readouterr().err


def test_cli_data_make(tmp_path, capsys):
    from nostride.cli import main

    assert main(["data", "make", "lowres", str(tmp_path / "d"), "train=1", "val=1", "test=1", "seed=2"]) == 0
    assert len(list((tmp_path / "d").rglob("*.png"))) == 30
    assert json.loads((tmp_path / "d" / "builtin.json").read_text())["options"]["seed"] == 2
    assert main(["data", "make", "lowres", str(tmp_path / "e"), "colour=1"]) == 2
    assert "has no option 'colour'" in capsys.readouterr().err


def test_yolov5_scale_builders_take_a_width_multiple():
    from nostride.models import create_model
    from nostride.utils.profile import count_parameters

    # yolov5n and yolov5s differ only in width (0.25 vs 0.5): n widened to 0.5 is s
    wide = create_model("yolov5n", num_classes=8, width_multiple=0.5)
    assert count_parameters(wide) == count_parameters(create_model("yolov5s", num_classes=8))
    assert wide.model_kwargs["width_multiple"] == 0.5
    with pytest.raises(ValueError, match="width_multiple must be > 0"):
        create_model("yolov5n_spd", width_multiple=0)


def test_detection_study_adapter(cache):
    from nostride.comparison.tasks import study_task

    det = study_task("detect")
    scores = det.scores({"test": {"mAP50-95": 0.25, "AP_small": None, "mAP50": 0.5}, "val": {"mAP50-95": 0.9}})
    assert scores["mAP50-95"] == 0.25 and scores["mAP50"] == 0.5 and math.isnan(scores["AP_small"])  # as val
    assert det.describe("builtin:small-objects@img_size=64,train=1,val=1,test=1,max_size=16", None) == (8, 64)
    assert det.describe("builtin:small-objects@img_size=64,train=1,val=1,test=1,max_size=16", 32) == (8, 32)


@pytest.mark.slow
def test_parallel_jobs_train_each_run_in_its_own_process(cache, tmp_path):
    import nostride

    result = nostride.compare("resnet18@width=4,resnet18_spd@width=4", TINY_DATA, epochs=1, seeds=1, jobs=2,
                              batch_size=16, latency=False, quiet=True, project=tmp_path, name="par")
    assert not result.failed and [r.summary("top1").n for r in result.rows] == [1, 1]
    for folder in (tmp_path / "par" / "runs" / "32px").glob("*/seed0"):
        assert (folder / "compare_run.yaml").is_file() and (folder / "final_metrics.json").is_file()
        assert "done:" in (folder / "train.log").read_text()  # the worker's own output, kept in the run folder


@pytest.mark.slow
def test_tiny_detection_study_end_to_end(cache, tmp_path, capsys):
    """yolov5n against yolov5n_spd on a tiny built-in small-object set: two seeds, one epoch each, the
    test split scored with each run's best.pt and compared by mAP50-95, AP small and mAP50."""
    import nostride

    data = "builtin:small-objects@img_size=64,train=4,val=2,test=3,max_size=16,min_objects=2,max_objects=4"
    models = "yolov5n@width_multiple=0.0625,yolov5n_spd@width_multiple=0.0625"
    result = nostride.compare(models, data, epochs=1, seeds=2, batch_size=4, latency=False, jobs=1,
                              project=tmp_path, name="det", workers=0)
    assert not result.failed
    spd, strided = result.row("yolov5n_spd@width_multiple=0.0625"), result.row("yolov5n@width_multiple=0.0625")
    for row in (spd, strided):
        assert row.summary("mAP50-95").n == 2 and row.summary("AP_small").n == 2
        assert row.flops > 0 and row.params > 0
    assert spd.flops > strided.flops  # space-to-depth keeps every pixel: more computation
    # one paired difference per metric, each over both seeds
    assert [d.metric for d in result.differences] == ["mAP50-95", "AP_small", "mAP50"]
    assert all(d.diff.n == 2 for d in result.differences)
    runs = list(csv.DictReader(open(result.dir / "runs.csv")))
    assert len(runs) == 4
    for r in runs:
        final = json.loads(open(f"{r['run_dir']}/final_metrics.json").read())
        assert float(r["mAP50-95"]) == pytest.approx(final["test"]["mAP50-95"], rel=1e-5, abs=1e-9)
        assert (tmp_path / r["run_dir"] / "weights" / "best.pt").is_file()
    # the progress line shows each run's metric in the table's unit (fractions, as nostride val)
    out = capsys.readouterr().out
    assert f"64px {runs[0]['model']} seed 0: mAP50-95 {float(runs[0]['mAP50-95']):.4f} (" in out
    report = (result.dir / "report.md").read_text()
    assert "| mAP50-95 (mean ± std) | AP small (mean ± std)" in report and "64 x 64 pixels" in report
    assert ("mAP50-95 of the test split (best checkpoint), mean ± std over seeds; scores in fractions (0-1), "
            "as `nostride val` prints them") in report


def test_defaults_models_by_task_of_the_data_and_packaged_recipes():
    from nostride.comparison.defaults import (DEFAULT_CLASSIFY_MODELS, DEFAULT_DATA, DEFAULT_MODELS, DEFAULT_RECIPE,
                                              default_models, resolve_recipe)
    from nostride.engine.config import build_config, load_config_file

    assert default_models(None) == DEFAULT_MODELS == "yolov5n,yolov5n_spd"
    assert default_models("builtin:small-objects@img_size=64") == DEFAULT_MODELS
    assert default_models("data/coco128.yaml") == DEFAULT_MODELS
    for data in ("builtin:lowres", "/data/cifar10", "tiny-imagenet-200.zip"):
        assert default_models(data) == DEFAULT_CLASSIFY_MODELS
    # the bare study's recipe is a valid set of training options for its models and data
    recipe = load_config_file(resolve_recipe(DEFAULT_RECIPE))
    assert recipe["optimizer"] == "adamw" and recipe["epochs"] == 20
    cfg = build_config(**recipe, model="yolov5n_spd", data=DEFAULT_DATA)
    assert cfg.task_options["mosaic"] == 0.0 and cfg.task_options["cls"] == 4.0 and cfg.lr == 0.008
    # the CIFAR recipe: valid for the classification models, bfloat16 on CPU through amp
    cifar = load_config_file(resolve_recipe("cifar-cpu"))
    cfg = build_config(**cifar, model="resnet18_spd", data="/data/cifar10")
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.nesterov, cfg.amp, cfg.channels_last) == (15, 128, 0.1, True,
                                                                                            True, True)
    assert cfg.cache == "ram"  # JPEG folders decoded once
    with pytest.raises(FileNotFoundError, match="packaged: cifar-cpu, small-objects-cpu"):
        resolve_recipe("no-such-recipe")


def test_progress_line_shows_the_metric_in_the_tables_unit(capsys, tmp_path):
    from nostride.comparison.study import Run, RunResult, StudyProgress
    from nostride.comparison.tasks import study_task

    run = Run(128, parse_model_spec("yolov5n"), 1, tmp_path, {"epochs": 3})
    progress = StudyProgress(total_epochs=3, total_runs=1)
    det = study_task("detect")
    progress.finished(RunResult(run, final={"test": {"mAP50-95": 0.123456}}, train_time=5.0), *det.metrics[0],
                      det.scale, det.digits)
    progress.close()
    assert "[1/1] 128px yolov5n seed 1: mAP50-95 0.1235 (5 s training)" in capsys.readouterr().out
    # the unit of each task is the one `nostride val` prints: detection fractions, classification percent
    assert (det.unit, det.scale) == ("fractions (0-1)", 1.0)
    assert study_task("classify").unit == "percent" and study_task("classify").metrics[0][1] == "top-1 %"


def test_default_jobs_two_one_thread_runs_on_a_multicore_cpu(monkeypatch):
    import os

    from nostride.comparison import placement as api

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert api.default_jobs(["cpu"], 1) == 2
    assert api.default_jobs(["cuda:0", "cuda:1"], 1) == 2
    assert api.default_jobs(["cuda:0"], 1) == 1
    assert api.default_jobs(["cpu"], 2) == 1  # each run is already a torchrun group
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert api.default_jobs(["cpu"], 1) == 1


def test_report_names_the_split_its_scores_come_from(tmp_path):
    from nostride.comparison.api import _scored_split
    from nostride.comparison.study import Run, RunResult

    run = Run(128, parse_model_spec("yolov5n"), 0, tmp_path, {"epochs": 1})
    with_test = RunResult(run, final={"test": {"mAP50-95": 0.1}, "val": {"mAP50-95": 0.2}})
    val_only = RunResult(run, final={"val": {"mAP50-95": 0.2}})  # coco128: train = val, no test split
    assert _scored_split([with_test, with_test]) == "test split"
    assert _scored_split([val_only]) == "validation split (the data has no test split)"
    assert _scored_split([with_test, val_only]).startswith("test split (validation split")


def test_redirected_output_gets_a_study_progress_line_at_a_steady_interval(capsys, tmp_path):
    """When stderr is not a terminal (a log file, CI), the study writes a progress line every interval,
    counting the epochs worker processes have finished (their results.csv rows) between run ends."""
    import time

    from nostride.comparison.study import StudyProgress

    progress = StudyProgress(total_epochs=10, total_runs=2, interval=0.1)
    progress.epochs(2)  # a run in this process: two epochs so far
    worker = tmp_path / "seed0"
    worker.mkdir()
    (worker / "results.csv").write_text("epoch,time\n1,0.5\n")  # resumed: one epoch before this session
    progress.run_started(worker)
    (worker / "results.csv").write_text("epoch,time\n1,0.5\n2,0.5\n3,0.5\n4,0.5\n")  # three more since
    time.sleep(0.55)
    progress.close()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("study: ")]
    assert len(lines) >= 3  # one per interval, not one per finished run
    assert lines[-1].startswith("study: 5/10 epochs (50%), 0/2 runs done, ") and "left" in lines[-1]
    time.sleep(0.25)
    assert not capsys.readouterr().err  # closed: no more lines
    assert StudyProgress(10, 2, quiet=True)._ticker is None
    assert StudyProgress(10, 2, interval=0)._ticker is None


@pytest.mark.slow
def test_a_task_option_is_the_same_study_from_a_recipe_or_from_set(cache, tmp_path, capsys):
    """``mosaic: 0.0`` in a recipe and ``--set mosaic=0.0`` are one option: rerun the other way, the
    study continues in its folder (nothing trained again) instead of starting a second one."""
    from nostride.cli import main

    data = "builtin:small-objects@img_size=64,train=4,val=2,test=3,max_size=16,min_objects=2,max_objects=4"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("mosaic: 0.0\nbatch_size: 4\n")
    common = ["compare", "--models", "yolov5n@width_multiple=0.0625", "--data", data, "--epochs", "1",
              "--seeds", "1", "--jobs", "1", "--no-latency", "--workers", "0", "--project", str(tmp_path)]
    assert main([*common, "--recipe", str(recipe)]) == 0
    first = json.loads((tmp_path / "exp" / "study.json").read_text())["identity"]
    assert first["common"]["task_options"]["mosaic"] == 0.0
    capsys.readouterr()
    assert main([*common, "--set", "mosaic=0.0", "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    assert not (tmp_path / "exp2").exists(), out
    assert "(continuing)" in out and re.search(r"seed 0: mAP50-95 \S+ \(done before\)", out), out


def test_dry_run_prints_the_plan_and_trains_and_writes_nothing(tmp_path, capsys):
    """--dry-run: the arms (a matched baseline included) with their cost, the runs a study folder
    already holds, each arm's share of the training left; no folder made, nothing trained."""
    from helpers import image_folder

    from nostride.cli import main

    data = image_folder(tmp_path / "data", train_counts=(6, 6), test_counts=(3, 3), size=16)
    study = ["compare", "--models", "resnet18@width=4,resnet18_spd@width=4", "--data", str(data), "--epochs", "1",
             "--batch-size", "4", "--project", str(tmp_path / "studies"), "--name", "s", "--no-latency"]
    assert main([*study, "--seeds", "1", "--match", "flops", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "| resnet18_spd@width=4 | 0.0" in out and "(flops-matched) |" in out and "| 0 / 1 | " in out
    assert "3 runs of 1 epoch, 3 to train" in out and "(new)" in out
    assert not (tmp_path / "studies").exists()

    assert main([*study, "--seeds", "1", "--jobs", "1"]) == 0  # one seed trained
    capsys.readouterr()
    assert main([*study, "--seeds", "2", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "| resnet18@width=4 | " in out and "| 1 / 2 | " in out
    assert "4 runs of 1 epoch, 2 to train" in out and "(continuing: 2 finished)" in out
    shares = [int(line.rsplit("|", 2)[1].strip(" %")) for line in out.splitlines() if line.count("/ 2 |")]
    assert len(shares) == 2 and sum(shares) in (99, 100, 101) and shares[1] > shares[0]  # SPD costs more
    runs = sorted(p.relative_to(tmp_path / "studies") for p in (tmp_path / "studies").rglob("final_metrics.json"))
    assert len(runs) == 2  # the dry run trained nothing

    # --no-train: the report of what is finished, the rest named, nothing trained
    assert main([*study, "--seeds", "2", "--no-train"]) == 0
    out = capsys.readouterr().out
    assert "Partial report (--no-train): 2 runs of 4 finished; not trained yet, so not in these tables: " \
           "16px resnet18@width=4 seed 1, 16px resnet18_spd@width=4 seed 1." in out
    assert "| resnet18_spd@width=4 | resnet18@width=4 | top-1 % | " in out and "(1 pair)" not in out
    assert len(list((tmp_path / "studies").rglob("final_metrics.json"))) == 2
    assert main([*study, "--seeds", "2", "--no-train", "--lr", "0.5"]) == 2  # other options: another study
    assert "no study with these options to report" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "studies").iterdir()) == ["s"]  # no folder made for it
