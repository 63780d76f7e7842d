"""A fuzz of every command's numeric and path arguments: one-line errors or correct runs, never a traceback.

Each numeric option of each command gets extreme, zero, negative, huge, non-finite, non-numeric
and empty values; each path option gets an empty string, a folder, a FIFO, a link to /dev/zero
(a link, so that no test can ever write over the device node itself) and a missing file. Every
case runs in this process through ``nostride.cli.main`` (the parser is built once), with a time
limit: it must end in

* an argument error (exit status 2, the usage and one ``nostride CMD: error: ...`` line),
* a one-line error (``nostride CMD: error: ...``, non-zero status), or
* a correct run (status 0),

never an exception escaping ``main`` and never a hang. Training and ``compare`` stop where the run
would start (after every option has been checked): a fuzz of ``compare`` and of training's numbers
is a fuzz of their validation; path options of ``train`` build the real run (datasets, model,
run folder) and stop before the first epoch. A few cases run as real subprocesses at the end.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys

import pytest
import torch

import nostride.cli as cli
from nostride.checkpoint import make_checkpoint, save_checkpoint
from nostride.data.io import write_image
from nostride.models import create_model

pytestmark = pytest.mark.usefixtures("one_thread_module")

NUMBERS = ["0", "-1", "1e308", "nan", "-inf", "abc", "99999999999999999999", ""]
CASE_SECONDS = 60  # a case that runs longer is a hang


class _RunStarts(Exception):
    """Raised by the stand-ins of a training run / a study: every option was accepted."""


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    data = root / "cls"
    g = torch.Generator().manual_seed(0)
    for split in ("train", "test"):
        for c in ("a", "b"):
            for i in range(2):
                write_image(torch.randint(0, 255, (3, 16, 16), generator=g, dtype=torch.uint8),
                            data / split / c / f"{i}.png")
    model = create_model("resnet18_cifar", num_classes=2, width=8)
    config = {"data": str(data), "img_size": 16, "val_fraction": 0.25, "seed": 0, "max_per_class": None}
    weights = save_checkpoint(make_checkpoint(model, ["a", "b"], config=config, img_size=16,
                                              data_format="image-folder"), root / "cls.pt")
    (root / "folder").mkdir()
    os.mkfifo(root / "fifo.png")
    os.symlink("/dev/zero", root / "zero.png")
    paths = ["", str(root / "folder"), str(root / "fifo.png"), str(root / "zero.png"), str(root / "missing.pt")]
    return {"root": root, "data": data, "weights": weights, "paths": paths}


@pytest.fixture
def run_main(monkeypatch, env):
    """``run(argv) -> outcome``; fails the test on an escaped exception, a traceback or a hang."""
    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)  # argparse parsers are reusable
    monkeypatch.chdir(env["root"])  # nothing a case writes lands in the checkout

    def on_alarm(*_):
        raise TimeoutError

    old = signal.signal(signal.SIGALRM, on_alarm)

    def run(argv: list[str]) -> str:
        err = io.StringIO()
        outcome = None
        try:
            signal.alarm(CASE_SECONDS)
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
                rc = cli.main(argv)
            outcome = "ran" if rc == 0 else "error"
        except SystemExit as e:
            outcome = "usage" if e.code == 2 else f"exit {e.code}"
        except _RunStarts:
            outcome = "accepted"
        except TimeoutError:
            pytest.fail(f"hang (over {CASE_SECONDS} s): nostride {' '.join(map(repr, argv))}")
        except BaseException as e:  # noqa: BLE001: the point of the test
            pytest.fail(f"{type(e).__name__} escaped: nostride {' '.join(map(repr, argv))}: {e}")
        finally:
            signal.alarm(0)
        lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
        case = f"nostride {' '.join(map(repr, argv))}:\n" + "\n".join(lines[-12:])
        assert not any("Traceback" in ln for ln in lines), case
        errors = [ln for ln in lines if ln.startswith(f"nostride {argv[0]}") and ": error: " in ln]
        if outcome in ("usage", "error"):
            assert len(errors) == 1, case  # one line says what was wrong
        else:
            assert outcome in ("ran", "accepted") and not errors, case
        return outcome

    yield run
    signal.signal(signal.SIGALRM, old)


def _options(command: str, skip: tuple[str, ...] = ()) -> tuple[list[str], list[str]]:
    """The command's (numeric options, path-like options): every option taking a value, no choices."""
    numeric, paths = [], []
    for action in cli.build_parser().subcommands[command]._actions:
        if not action.option_strings or action.nargs == 0 or action.choices or action.option_strings[0] in skip:
            continue
        kind = getattr(action.type, "__name__", "")
        if action.type in (int, float) or kind in ("whole number", "number", "_img_sizes"):
            numeric.append(action.option_strings[0])
        elif kind in ("", "str", "path_arg", "output_file_arg"):
            paths.append(action.option_strings[0])
    return numeric, paths


def _with(base: list[str], option: str, value: str) -> list[str]:
    argv = list(base)
    if option in argv:
        argv[argv.index(option) + 1] = value
    else:
        argv += [option, value]
    return argv


def _fuzz(run, base: list[str], options: list[str], values: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for option in options:
        for value in values:
            outcome = run(_with(base, option, value))
            counts[outcome] = counts.get(outcome, 0) + 1
    return counts


def _stop_before_training(monkeypatch) -> None:
    """Training runs are built (datasets, model, run folder, every option checked) but not trained."""
    from nostride.engine import trainer

    def setup_only(self):
        self.setup()
        return {}

    monkeypatch.setattr(trainer.Trainer, "train", setup_only)


def _stop_at_training(monkeypatch) -> None:
    from nostride.engine import trainer

    def refuse(*args, **kwargs):
        raise _RunStarts

    monkeypatch.setattr(trainer, "Trainer", refuse)


def test_train_numbers(run_main, env, monkeypatch):
    _stop_at_training(monkeypatch)
    numeric, _ = _options("train")
    base = ["train", "--model", "resnet18_cifar", "--data", str(env["data"]), "--device", "cpu"]
    counts = _fuzz(run_main, base, numeric, NUMBERS)
    # most values never reach a run: refused by the parser or the options' bounds
    assert counts.get("accepted", 0) < 0.1 * sum(counts.values()), counts
    detector = ["train", "--model", "yolov5n", "--data", str(env["data"]), "--device", "cpu"]
    from nostride.tasks.detect.hyp import HYP_KEYS

    hyp = [f"--{k.replace('_', '-')}" for k in HYP_KEYS] + ["--close-mosaic", "--freeze"]
    counts = _fuzz(run_main, detector, hyp, ["-1", "1e308", "nan", "abc"])
    assert set(counts) == {"usage", "error"}, counts
    for argv in (detector + ["--anchor-t", "0"], base + ["--ema-tau", "0"], base + ["--device", "cpu:1"],
                 base + ["--epochs", "9223372036854775808"], base + ["--img-size", "1"], base + ["--width", "100000"]):
        assert run_main(argv) in ("usage", "error"), argv


def test_train_paths(run_main, env, monkeypatch):
    _stop_before_training(monkeypatch)
    _, paths = _options("train", skip=("--project", "--name"))
    base = ["train", "--model", "resnet18_cifar", "--width", "8", "--data", str(env["data"]), "--device", "cpu",
            "--workers", "0", "--project", str(env["root"] / "runs"), "--quiet"]
    counts = _fuzz(run_main, base, paths, env["paths"])
    assert counts.get("ran", 0) == 1, counts  # --device '': the default device; every path is refused


def test_val_and_predict(run_main, env):
    base = ["val", "--weights", str(env["weights"]), "--data", str(env["data"]), "--workers", "0", "--device", "cpu",
            "--project", str(env["root"] / "val"), "--exist-ok"]
    numeric, paths = _options("val", skip=("--project", "--name"))  # output folders: any name is fine
    _fuzz(run_main, base, numeric, NUMBERS)
    _fuzz(run_main, base, paths, env["paths"])
    base = ["predict", "--weights", str(env["weights"]), "--source", str(env["data"] / "test" / "a"),
            "--device", "cpu", "--no-save"]
    numeric, paths = _options("predict")
    _fuzz(run_main, base, numeric, NUMBERS)
    _fuzz(run_main, base, paths, env["paths"])
    assert run_main(_with(base, "--source", str(env["root"] / "fifo.png"))) == "error"


def test_export_convert_benchmark_import(run_main, env):
    base = ["export", "--weights", str(env["weights"]), "--format", "torchscript", "--no-check",
            "--output", str(env["root"] / "m.torchscript")]
    numeric, paths = _options("export")
    _fuzz(run_main, base, numeric, NUMBERS)
    _fuzz(run_main, base, paths, env["paths"][:4])
    for opset in ("1", "17", "100"):  # the exporter would write opset 18 instead, without a word
        assert run_main(_with(base, "--opset", opset)) == "usage"
    base = ["convert", "nostride:resnet18_cifar", "--img-size", "16", "--init", "random"]
    numeric, paths = _options("convert", skip=("--exclude",))
    _fuzz(run_main, base, numeric, NUMBERS)
    _fuzz(run_main, base, paths, env["paths"][:4])
    base = ["benchmark", "resnet18_cifar", "--img-size", "16", "--repeats", "1", "--warmup", "0", "--no-memory",
            "--forms", "eager"]
    numeric, paths = _options("benchmark", skip=("--forms",))
    _fuzz(run_main, base, numeric, NUMBERS)
    _fuzz(run_main, base, paths, env["paths"][:4])
    out = str(env["root"] / "imported.pt")
    for value in env["paths"]:
        assert run_main(["import", value, out]) in ("usage", "error")
        assert run_main(["import", str(env["weights"]), value]) in ("usage", "error")


def test_compare_and_data(run_main, env, monkeypatch):
    import nostride.comparison

    def refuse(*args, **kwargs):
        raise _RunStarts

    monkeypatch.setattr(nostride.comparison, "compare", refuse)
    base = ["compare", "--models", "resnet18_cifar", "--data", str(env["data"]), "--project", str(env["root"] / "cmp")]
    launcher = ("--slurm-gpus-per-run", "--slurm-cpus-per-run", "--ray-gpus-per-run", "--ray-cpus-per-run")
    numeric, _ = _options("compare", skip=launcher)
    counts = _fuzz(run_main, base, numeric, NUMBERS)
    assert counts.get("accepted", 0) <= 1 and set(counts) <= {"usage", "accepted"}, counts  # --workers 0
    # a cluster's resources: bounded by the parser; a usable value without its launcher is one line
    counts = _fuzz(run_main, base, list(launcher), NUMBERS)
    assert set(counts) <= {"usage", "error"} and counts.get("error", 0) == 2, counts  # 0 GPUs (slurm, ray)
    for bad in ("epochs=abc", "seeds=0", "img_sizes=[0]"):
        assert run_main(base + ["--set", bad]) == "error"
    target = str(env["root"] / "made")
    for option in ("train=-1", "train=abc", "train=1e308", "img_size=100000", "seed=nan", "difficulty=-1", "size=3"):
        assert run_main(["data", "make", "lowres", target, option]) == "error", option
    for value in ("", str(env["root"]), *env["paths"][2:4]):  # empty, a folder holding files, a FIFO, a device
        assert run_main(["data", "make", "lowres", value, "train=1", "val=0", "test=0"]) in ("usage", "error"), value


@pytest.mark.parametrize("argv, bound", [
    (["train", "--model", "resnet18_cifar", "--data", "x", "--epochs", "9223372036854775808"], "[1, 100000]"),
    (["predict", "--weights", "x.pt", "--source", ""], "empty string"),
])
def test_subprocess_one_line_and_fast(argv, bound, tmp_path):
    r = subprocess.run([sys.executable, "-m", "nostride", *argv], capture_output=True, text=True, timeout=120,
                       cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"})
    errors = [ln for ln in r.stderr.splitlines() if "error:" in ln]
    assert r.returncode == 2 and len(errors) == 1 and bound in errors[0], r.stderr
    assert "Traceback" not in r.stderr

