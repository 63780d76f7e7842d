"""End to end on real CIFAR-10 JPEGs (../shared/data): `nostride train`, resume, recipes, `nostride val`."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from nostride.checkpoint import load_checkpoint
from nostride.cli import main

pytestmark = [pytest.mark.usefixtures("one_thread_module"), pytest.mark.slow, pytest.mark.data]


@pytest.fixture(scope="module")
def cifar_subset(shared_data, tmp_path_factory):
    """150 train + 150 test JPEGs per class of the real CIFAR-10 (1,500 / 1,500 images)."""
    from nostride.data.classification import extract_subset

    out = tmp_path_factory.mktemp("cifar10_subset")
    return extract_subset(shared_data / "cifar10-jpg.tar.gz", out, per_class=150, splits=("train", "test"))


@pytest.fixture(scope="module")
def trained_run(cifar_subset, tmp_path_factory):
    """5 epochs of a width-16 ResNet18-SPD through the CLI, then --resume for a 6th epoch.

    The step schedule's milestone is explicit, so raising --epochs on resume does not move it."""
    project = tmp_path_factory.mktemp("runs")
    args = ["train", "--model", "resnet18_spd", "--data", str(cifar_subset), "--width", "16", "--epochs", "5",
            "--batch-size", "32", "--lr", "0.05", "--schedule", "step", "--milestones", "4", "--no-augment", "--workers", "0", "--device", "cpu",
            "--project", str(project), "--name", "c10", "--seed", "0", "--quiet"]
    assert main(args) == 0
    run = project / "c10"
    after_5 = list(csv.DictReader(open(run / "results.csv")))
    assert main(["train", "--resume", str(run / "weights" / "last.pt"), "--epochs", "6", "--quiet"]) == 0
    return run, after_5


def test_cli_training_learns_and_writes_outputs(trained_run):
    run, after_5 = trained_run
    for f in ("weights/last.pt", "weights/best.pt", "results.csv", "results.png", "args.yaml", "final_metrics.json"):
        assert (run / f).is_file(), f
    assert [int(r["epoch"]) for r in after_5] == [1, 2, 3, 4, 5]  # numbered from 1, as on the console
    final = json.loads((run / "final_metrics.json").read_text())
    # 10 classes: chance is 10 %; over seeds 0-3 this setup reached 28-37 % test top-1 (1,500 images)
    assert final["test"]["count"] == 1500 and final["test"]["top1"] > 22.0, final["test"]
    assert final["val"]["count"] == 150 and final["val"]["top1"] > 18.0
    ckpt = load_checkpoint(run / "weights" / "best.pt")
    assert ckpt["model_name"] == "resnet18_spd" and ckpt["model_kwargs"] == {"num_classes": 10, "width": 16}
    assert len(ckpt["names"]) == 10 and ckpt["img_size"] == 32 and len(ckpt["mean"]) == 3


def test_resume_continues_epoch_count(trained_run):
    run, after_5 = trained_run
    rows = list(csv.DictReader(open(run / "results.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert rows[:5] == after_5  # appended, earlier rows untouched
    assert load_checkpoint(run / "weights" / "last.pt")["epoch"] == 6
    args = yaml.safe_load((run / "args.yaml").read_text())
    assert args["epochs"] == 6 and args["resume"].endswith("last.pt") and args["width"] == 16
    assert not (run.parent / "c102").exists()  # resume reuses the run folder


def test_val_command_on_trained_checkpoint(trained_run, tmp_path, capsys):
    run, _ = trained_run
    final = json.loads((run / "final_metrics.json").read_text())
    rc = main(["val", "--weights", str(run / "weights" / "best.pt"), "--device", "cpu", "--workers", "0",
               "--project", str(tmp_path), "--name", "val"])
    assert rc == 0
    metrics = json.loads((tmp_path / "val" / "metrics.json").read_text())
    got = metrics.get("metrics", metrics)
    assert got["count"] == 1500
    assert got["top1"] == pytest.approx(final["test"]["top1"])  # same weights, same split, same numbers


def test_recipe_file_with_overrides(cifar_subset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a shipped recipe by name, from a folder that is not a checkout
    rc = main(["train", "--config", "resnet18_spd_cifar10", "--data", str(cifar_subset),
               "--width", "8", "--epochs", "1", "--batch-size", "64", "--max-per-class", "10", "--workers", "0",
               "--device", "cpu", "--project", str(tmp_path), "--name", "recipe", "--quiet", "--ema"])
    assert rc == 0
    args = yaml.safe_load((tmp_path / "recipe" / "args.yaml").read_text())
    assert args["model"] == "resnet18_spd" and args["label_smoothing"] == 0.1 and args["nesterov"] is True
    assert args["epochs"] == 1 and args["width"] == 8 and args["ema"] is True
    assert load_checkpoint(tmp_path / "recipe" / "weights" / "last.pt")["ema"] is not None


def test_bad_options_get_a_clear_error(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: 0.1\nmomentun: 0.9\n")
    assert main(["train", "--config", str(bad), "--model", "resnet18_cifar", "--data", str(tmp_path)]) == 2
    assert "unknown option 'momentun' (did you mean momentum" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "nothing.pt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
