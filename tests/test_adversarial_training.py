"""Adversarial training runs: a kill at every write of an epoch (deterministic fault injection),
Ctrl-C inside a checkpoint write, stale temp files, --resume best.pt, relative data paths on resume
and val, NaN metrics written as strict JSON."""

from __future__ import annotations

import csv
import json
import os
import signal
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

import nostride.engine.hooks as hooks_module
from nostride.checkpoint import load_checkpoint, save_checkpoint
from nostride.engine import Hook, Trainer, build_config, resolve_config
from nostride.engine.results import ResultsWriter
from nostride.tasks.base import DatasetSplits
from nostride.tasks.classify.task import ClassificationTask

pytestmark = pytest.mark.usefixtures("one_thread_module")

EPOCHS = 3
SCRIPTED_FITNESS = {1: 0.5, 2: 0.7, 3: 0.6}  # best at epochs 1 and 2, not at 3
_current_epoch = [0]


class Blobs(Dataset):
    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.y = torch.randint(0, 2, (n,), generator=g)
        self.x = torch.randn(n, 3, 8, 8, generator=g) * 0.3
        self.x[:, 0] += self.y.float()[:, None, None]

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], int(self.y[i])


class ScriptedTask(ClassificationTask):
    """Tiny data; fitness scripted per epoch so that best.pt is written at epochs 1 and 2 only."""

    def build_datasets(self) -> DatasetSplits:
        self.names = ["a", "b"]
        return DatasetSplits(Blobs(24, 1), Blobs(8, 2), Blobs(8, 3))

    def fitness(self, metrics):
        return SCRIPTED_FITNESS[_current_epoch[0]]


class TrackEpoch(Hook):
    def before_epoch(self, trainer) -> None:
        _current_epoch[0] = trainer.epoch + 1


class Killed(BaseException):
    """A SIGKILL stand-in: nothing catches it, nothing runs after it."""


def _cfg(tmp_path: Path, name: str, **kw):
    opts = dict(model="resnet18_cifar", width=4, epochs=EPOCHS, batch_size=8, lr=0.05, workers=0, device="cpu",
                project=str(tmp_path), name=name, quiet=True, deterministic=True, seed=1, warmup_epochs=0)
    opts.update(kw)
    return build_config(**opts)


def _run(cfg):
    return Trainer(cfg, task=ScriptedTask(cfg), hooks=[TrackEpoch()]).train()


def _rows(run: Path) -> list[dict]:
    with open(run / "results.csv", newline="") as f:
        return [{k: v for k, v in r.items() if not k.startswith("time")} for r in csv.DictReader(f)]


def _state(path: Path) -> tuple:
    ck = load_checkpoint(path)
    return ck["epoch"], ck.get("best_epoch"), ck.get("best_fitness"), {k: v.clone() for k, v in ck["model"].items()}


def _same(a: tuple, b: tuple) -> bool:
    return a[:3] == b[:3] and a[3].keys() == b[3].keys() and all(torch.equal(a[3][k], b[3][k]) for k in a[3])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ref")
    result = _run(_cfg(tmp, "ref"))
    run = tmp / "ref"
    return run, result


def _count_writes(monkeypatch) -> list[str]:
    """Record the order of the epoch's writes: results rows and checkpoint files."""
    log: list[str] = []
    real_save, real_write = hooks_module.save_checkpoint, ResultsWriter.write

    def save(obj, path):
        log.append(Path(path).name)
        return real_save(obj, path)

    def write(self, row):
        log.append("results.csv")
        return real_write(self, row)

    monkeypatch.setattr(hooks_module, "save_checkpoint", save)
    monkeypatch.setattr(ResultsWriter, "write", write)
    return log


def test_write_order_makes_last_pt_the_commit_point(tmp_path, monkeypatch):
    log = _count_writes(monkeypatch)
    _run(_cfg(tmp_path, "order"))
    assert log == ["last.pt",
                   "results.csv", "best.pt", "last.pt",
                   "results.csv", "best.pt", "last.pt",
                   "results.csv", "last.pt"]


# two kill points run by default (inside an epoch's writes, between best.pt and last.pt); all nine with -m slow
@pytest.mark.parametrize("kill_before", [k if k in (2, 6) else pytest.param(k, marks=pytest.mark.slow) for k in range(1, 10)])
def test_a_kill_at_any_write_loses_at_most_the_epoch_in_progress(reference, tmp_path, monkeypatch, kill_before):
    """Kill before write number ``kill_before`` (1: the first epoch's CSV row ... 9: after the last
    last.pt, i.e. during the final evaluation), resume, and finish: best.pt, last.pt, results.csv
    and the test score equal the uninterrupted run's."""
    ref_run, ref_result = reference
    count = [0]
    real_save, real_write = hooks_module.save_checkpoint, ResultsWriter.write

    def tick():
        count[0] += 1
        if count[0] == kill_before + 1:
            raise Killed

    def save(obj, path):
        tick()
        return real_save(obj, path)

    def write(self, row):
        tick()
        return real_write(self, row)

    monkeypatch.setattr(hooks_module, "save_checkpoint", save)
    monkeypatch.setattr(ResultsWriter, "write", write)
    monkeypatch.setattr(Trainer, "final_evaluation", lambda self: (_ for _ in ()).throw(Killed()))
    with pytest.raises(Killed):
        _run(_cfg(tmp_path, "killed"))
    monkeypatch.undo()
    run = tmp_path / "killed"
    (run / "weights" / ".last.pt.deadbeef.tmp").write_bytes(b"")  # what a SIGKILL mid-write leaves
    cfg = resolve_config(resume=str(run))
    result = Trainer(cfg, task=ScriptedTask(cfg), hooks=[TrackEpoch()]).train()
    assert _same(_state(run / "weights" / "last.pt"), _state(ref_run / "weights" / "last.pt"))
    assert _same(_state(run / "weights" / "best.pt"), _state(ref_run / "weights" / "best.pt"))
    assert _rows(run) == _rows(ref_run)
    assert result["best_epoch"] == ref_result["best_epoch"] == 2
    assert result["test"] == ref_result["test"]
    assert sorted(p.name for p in (run / "weights").iterdir()) == ["best.pt", "last.pt"]


def test_resume_repairs_a_stale_best_pt_record(reference, tmp_path, capsys):
    """A best.pt older than last.pt records (written by versions that saved last.pt first and were
    killed in between): resume reports it and continues from what best.pt really holds."""
    ref_run, _ = reference
    run = tmp_path / "stale"
    (run / "weights").mkdir(parents=True)
    for f in ("args.yaml", "results.csv"):
        (run / f).write_bytes((ref_run / f).read_bytes())
    ck = dict(load_checkpoint(ref_run / "weights" / "last.pt"))
    ck.update(epoch=2, best_epoch=2, best_fitness=0.7)
    save_checkpoint(ck, run / "weights" / "last.pt")
    best = {k: v for k, v in ck.items() if k not in ("optimizer", "scaler")}
    best.update(epoch=1, best_epoch=1, best_fitness=0.5)  # best.pt of epoch 1: epoch 2's write was lost
    save_checkpoint(best, run / "weights" / "best.pt")
    cfg = resolve_config(resume=str(run))
    cfg.quiet = False
    trainer = Trainer(cfg, task=ScriptedTask(cfg), hooks=[TrackEpoch()])
    trainer.setup()
    assert (trainer.best_epoch, trainer.best_fitness) == (1, 0.5)
    assert "best.pt holds epoch 1" in capsys.readouterr().out


def test_ctrl_c_during_a_checkpoint_write(tmp_path, monkeypatch, capsys):
    """SIGINT while last.pt of epoch 2 is being written: the file is completed, and the message
    says what it holds."""
    import nostride.utils.atomic as atomic

    real_open = atomic._open_new
    calls = [0]

    def open_and_interrupt(path):
        f = real_open(path)
        if Path(path).name.startswith(".last.pt"):
            calls[0] += 1
            if calls[0] == 3:  # initial, epoch 1, epoch 2
                os.kill(os.getpid(), signal.SIGINT)
        return f

    monkeypatch.setattr(atomic, "_open_new", open_and_interrupt)
    with pytest.raises(KeyboardInterrupt):
        _run(_cfg(tmp_path, "sigint"))
    out = capsys.readouterr().out
    last = tmp_path / "sigint" / "weights" / "last.pt"
    assert load_checkpoint(last)["epoch"] == 2
    assert f"{last} holds the state after epoch 2" in out
    assert sorted(p.name for p in last.parent.iterdir()) == ["best.pt", "last.pt"]


def test_resume_from_best_pt_says_to_use_last_pt(reference, capsys):
    from nostride.cli import main

    run, _ = reference
    rc = main(["train", "--resume", str(run / "weights" / "best.pt")])
    err = capsys.readouterr().err
    assert rc == 2 and "holds no optimizer state" in err and "last.pt" in err and err.count("\n") == 1


# ----------------------------------------------------------------------------- data paths, NaN
def _image_folder(root: Path) -> None:
    from nostride.data import write_image

    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 6), ("test", 2)):
        for c in ("cat", "dog"):
            for i in range(n):
                img = (torch.rand(3, 16, 16, generator=g) * 255).to(torch.uint8)
                write_image(img, root / split / c / f"{i}.png")


def _train_cli(*args: str) -> int:
    from nostride.cli import main

    return main(["train", "--model", "resnet18_cifar", "--width", "4", "--batch-size", "4", "--workers", "0",
                 "--device", "cpu", "--quiet", *args])


@pytest.mark.slow
def test_relative_data_on_resume_and_val_from_another_folder(tmp_path, monkeypatch, capsys):
    from nostride.cli import main

    (tmp_path / "a").mkdir()
    _image_folder(tmp_path / "a" / "pets")
    monkeypatch.chdir(tmp_path / "a")
    # a step schedule with a fixed milestone: training longer on resume keeps the same plan
    assert _train_cli("--data", "pets", "--epochs", "1", "--project", "runs", "--name", "r",
                      "--schedule", "step", "--milestones", "10") == 0
    last = tmp_path / "a" / "runs" / "r" / "weights" / "last.pt"
    assert load_checkpoint(last)["config"]["data"] == str(tmp_path / "a" / "pets")  # recorded absolute
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path / "b")
    assert main(["train", "--resume", str(last), "--epochs", "2"]) == 0
    assert load_checkpoint(last)["epoch"] == 2
    capsys.readouterr()
    assert main(["val", "--weights", str(last), "--project", "v", "--workers", "0", "--device", "cpu"]) == 0
    # the dataset moved: an explicit --data wins, with a note
    (tmp_path / "a" / "pets").rename(tmp_path / "moved")
    assert main(["train", "--resume", str(last), "--epochs", "3", "--data", str(tmp_path / "moved")]) == 0
    assert "reading the data from" in capsys.readouterr().out
    assert load_checkpoint(last)["config"]["data"] == str(tmp_path / "moved")
    (tmp_path / "moved").rename(tmp_path / "gone")
    rc = main(["train", "--resume", str(last), "--epochs", "4"])
    err = capsys.readouterr().err
    assert rc == 2 and "not found" in err and "--data" in err and err.count("\n") == 1


def test_nan_metrics_are_written_as_null_with_the_reason(tmp_path, monkeypatch, capsys):
    from nostride.checkpoint import make_checkpoint
    from nostride.cli import main
    from nostride.models import create_model

    _image_folder(tmp_path / "pets")
    model = create_model("resnet18_cifar", num_classes=2, width=4)
    with torch.no_grad():
        model.fc.weight.fill_(float("nan"))
    ck = make_checkpoint(model, ["cat", "dog"], config={"data": str(tmp_path / "pets"), "img_size": 16})
    path = save_checkpoint(ck, tmp_path / "nan.pt")
    rc = main(["val", "--weights", str(path), "--project", str(tmp_path / "v"), "--workers", "0", "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 0, err
    text = (tmp_path / "v" / "exp" / "metrics.json").read_text()

    def refuse(c):
        raise ValueError(c)

    record = json.loads(text, parse_constant=refuse)  # strict JSON: no NaN
    assert record["loss"] is None and "loss" in record["undefined"]["metrics"]
    assert "not finite" in record["undefined"]["why"] and "undefined" in err


def test_resume_from_a_checkpoint_whose_weights_do_not_fit_is_one_line(reference, tmp_path):
    from nostride.models import create_model

    ref_run, _ = reference
    run = tmp_path / "swapped"
    (run / "weights").mkdir(parents=True)
    ck = dict(load_checkpoint(ref_run / "weights" / "last.pt"))
    ck["model"] = create_model("resnet18_cifar", num_classes=2, width=8).state_dict()  # another width
    save_checkpoint(ck, run / "weights" / "last.pt")
    cfg = resolve_config(resume=str(run))
    with pytest.raises(ValueError) as e:
        Trainer(cfg, task=ScriptedTask(cfg), hooks=[TrackEpoch()]).train()
    assert "last.pt: its weights do not fit" in str(e.value) and "\n" not in str(e.value)
