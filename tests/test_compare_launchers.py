"""nostride compare on a cluster: the Slurm launcher (submitit's local executor standing in for Slurm),
the Ray launcher (a local Ray instance), their options, bad input, and what the report records to make
a study reproducible."""

from __future__ import annotations

import csv
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
import types
from pathlib import Path

import pytest

from nostride.comparison import parse_model_spec

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_DATA = "builtin:lowres@train=4,val=2,test=2"
MODELS = "resnet18@width=4,resnet18_spd@width=4"
STUDY = dict(epochs=3, seeds=1, batch_size=16, latency=False, device="cpu")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NOSTRIDE_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def local_study(tmp_path_factory):
    """The tiny study trained on this machine, in this process (the reference for the launchers)."""
    import torch

    import nostride

    root = tmp_path_factory.mktemp("local")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NOSTRIDE_CACHE", str(root / "cache"))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return nostride.compare(MODELS, TINY_DATA, jobs=1, project=root, name="local", quiet=True, **STUDY)
        finally:
            torch.set_num_threads(threads)


def _per_run(result) -> dict[tuple[str, int], dict]:
    """Each run's final metrics (test and validation split) and its per-epoch validation losses."""
    out = {}
    for r in csv.DictReader(open(result.dir / "runs.csv")):
        folder = Path(r["run_dir"])
        final = json.loads((folder / "final_metrics.json").read_text())
        losses = [row["val/loss"] for row in csv.DictReader(open(folder / "results.csv"))]
        out[(r["model"], int(r["seed"]))] = {"test": final["test"], "val": final["val"], "val_losses": losses}
    return out


# --------------------------------------------------------------------------------- Slurm options
def test_slurm_options_map_to_sbatch_lines(tmp_path, monkeypatch):
    import submitit

    from nostride.comparison.launchers.slurm import SlurmLauncher, parse_slurm_time
    from nostride.comparison.study import plan_runs

    assert [parse_slurm_time(t) for t in ("90", "30:30", "4:00:00", "1-12", "1-12:30", "2-00:00:01")] == \
        [90, 31, 240, 2160, 2190, 2881]
    with pytest.raises(ValueError, match="expected minutes"):
        parse_slurm_time("4h")
    launcher = SlurmLauncher(partition="gpu", gpus_per_run=2, time="1-12:00:00", cpus_per_run=16, mem="64G",
                             account="lab", options={"qos": "high", "constraint": "a100", "exclusive": True})
    launcher.prepare(tmp_path / "exp")
    (run,) = plan_runs(tmp_path / "exp", [parse_model_spec("resnet18_spd@width=4")], [32], [1], {"epochs": 1})
    assert launcher.processes() == 2 and launcher.threads_per_run() == 8  # torchrun: one process per GPU
    # the sbatch script submitit writes for these parameters (no cluster: srun's presence faked)
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", staticmethod(lambda: 1))
    executor = submitit.AutoExecutor(folder=tmp_path / "exp" / "slurm", cluster="slurm")
    executor.update_parameters(**launcher.parameters(run))
    lines = set(executor._executor._make_submission_file_text("true", "uid").splitlines())
    for expected in ("--partition=gpu", "--gpus-per-node=2", "--time=2160", "--cpus-per-task=16", "--mem=64G",
                     "--account=lab", "--qos=high", "--constraint=a100", "--exclusive", "--requeue", "--nodes=1",
                     "--ntasks-per-node=1", "--signal=USR2@120", "--job-name=exp:32px:resnet18_spd-width4:seed1",
                     f"--output={tmp_path}/exp/slurm/%j_0_log.out"):
        assert f"#SBATCH {expected}" in lines, expected
    # CPU-only jobs: no GPU line; one CPU and one process by default
    cpu = SlurmLauncher(gpus_per_run=0)
    cpu.prepare(tmp_path / "exp")
    assert "gpus_per_node" not in cpu.parameters(run) and cpu.processes() == 1 and cpu.threads_per_run() == 1
    assert SlurmLauncher().parameters(run)["cpus_per_task"] == 4 and SlurmLauncher().time_min == 240
    with pytest.raises(ValueError, match="--slurm-mem 'lots'"):
        SlurmLauncher(mem="lots")
    # on the requeue signal submitit asks the job for its checkpoint: the same run again (it resumes
    # from the run folder's last.pt)
    from submitit.helpers import DelayedSubmission

    from nostride.comparison.launchers.job import RunJob
    from nostride.comparison.launchers.slurm import TrainRun

    job = RunJob(run, nproc=2, threads=8)
    again = TrainRun().checkpoint(job)
    assert isinstance(again, DelayedSubmission) and isinstance(again.function, TrainRun) and again.args == (job,)


def test_slurm_waits_for_a_job_still_queued_instead_of_submitting_it_again(tmp_path, monkeypatch):
    """compare started again while Slurm still runs a run's job (recorded in the run folder) waits for
    that job; a job Slurm no longer has is submitted again."""
    import submitit

    from nostride.comparison.launchers.slurm import SlurmLauncher
    from nostride.comparison.study import RunResult, plan_runs

    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", staticmethod(lambda: 1))
    (run,) = plan_runs(tmp_path / "exp", [parse_model_spec("resnet18@width=4")], [32], [0], {"epochs": 1})
    run.folder.mkdir(parents=True)
    (run.folder / "launcher.json").write_text(json.dumps({"cluster": "slurm", "job_id": "77",
                                                          "folder": str(tmp_path / "exp" / "slurm")}))
    states = {"77": "RUNNING"}

    class FakeSlurmJob:  # sacct's view of a job, without a cluster
        def __init__(self, folder, job_id):
            self.job_id = job_id

        state = property(lambda self: states[self.job_id])
        done = lambda self, force_check=False: True  # noqa: E731
        result = lambda self: RunResult(run, final={"test": {"top1": 50.0}})  # noqa: E731

    monkeypatch.setattr(submitit, "SlurmJob", FakeSlurmJob)
    submitted = []
    launcher = SlurmLauncher(poll_s=0)
    monkeypatch.setattr(launcher, "_submit", lambda executor, r: submitted.append(r) or FakeSlurmJob("", "78"))
    launcher.prepare(tmp_path / "exp")
    back = []
    (result,) = launcher.launch([run], back.append)
    assert submitted == [] and result.final == {"test": {"top1": 50.0}} and back == [result]
    for state in ("FAILED", "CANCELLED by 0", "TIMEOUT", "NODE_FAIL"):
        states["77"] = state
        submitted.clear()
        launcher.launch([run], back.append)
        assert submitted == [run], state


@pytest.mark.slow
def test_a_run_failing_in_its_job_comes_back_with_its_log(cache, tmp_path):
    """What a cluster job runs, run here: a run that fails returns its error, its log's path and last
    lines (the report's failure list shows them), and the log itself says what ended the run."""
    from nostride.comparison.launchers.job import RunJob, run_job
    from nostride.comparison.study import plan_runs

    (run,) = plan_runs(tmp_path / "exp", [parse_model_spec("resnet18@width=4")], [32], [0],
                       {"data": str(tmp_path / "gone"), "epochs": 1, "batch_size": 16, "workers": 0,
                        "device": "cpu"})  # its data went away after compare checked it
    result = run_job(RunJob(run, threads=1, env={"NOSTRIDE_CACHE": os.environ["NOSTRIDE_CACHE"]}))
    log = run.folder / "train.log"
    assert str(tmp_path / "gone") in result.error and result.error.endswith(f"(log: {log})")
    assert result.details[-1].startswith("compare: the run failed on ") and result.details == \
        [line for line in log.read_text().splitlines() if line.strip()][-len(result.details):]
    assert not (run.folder / "final_metrics.json").exists()


# ------------------------------------------------------------------------------------- bad input
def test_launchers_bad_input_gets_one_line(cache, capsys, tmp_path, monkeypatch):
    from nostride.cli import main

    base = ["compare", "--data", TINY_DATA, "--project", str(tmp_path)]
    monkeypatch.setattr("shutil.which", lambda name: None)
    assert main(base + ["--launcher", "slurm"]) == 2
    err = capsys.readouterr().err
    assert "sbatch not found" in err and "--launcher local" in err and len(err.strip().splitlines()) == 1
    monkeypatch.setitem(sys.modules, "submitit", None)
    assert main(base + ["--launcher", "slurm"]) == 2
    assert "pip install 'nostride[slurm]'" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)
    assert main(base + ["--launcher", "ray"]) == 2
    assert "needs Ray: pip install 'nostride[ray]'" in capsys.readouterr().err
    # an address nobody listens on: one line naming it (Ray itself would retry it for minutes)
    fake_ray = types.SimpleNamespace(is_initialized=lambda: False, init=lambda **kw: pytest.fail("init called"))
    monkeypatch.setitem(sys.modules, "ray", fake_ray)
    assert main(base + ["--launcher", "ray", "--ray-address", "127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach the Ray cluster at 127.0.0.1:9" in err and len(err.strip().splitlines()) == 1
    assert main(base + ["--slurm-partition", "gpu"]) == 2
    assert "--slurm-* options need --launcher slurm" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing planned, generated or trained


# ---------------------------------------------------------------------------------- Slurm, end to end
def _kill_job_tree(pid: int) -> None:
    import psutil

    root = psutil.Process(pid)
    procs = [root, *root.children(recursive=True)]
    for p in procs:
        with contextlib_suppress():
            p.send_signal(signal.SIGSTOP)  # freeze first: nothing writes after the kill decision
    for p in procs:
        with contextlib_suppress():
            p.kill()


def contextlib_suppress():
    import contextlib

    import psutil

    return contextlib.suppress(psutil.NoSuchProcess)


def _first_epoch_committed(run: Path) -> bool:
    """Epoch 1's row is in results.csv and last.pt was written after it (the trainer's commit point)."""
    try:
        rows = (run / "results.csv").read_text().splitlines()
        return len(rows) >= 2 and (run / "weights" / "last.pt").stat().st_mtime_ns >= \
            (run / "results.csv").stat().st_mtime_ns
    except OSError:
        return False


@pytest.mark.slow
def test_slurm_study_equals_local_and_resumes_a_killed_job(cache, tmp_path, local_study, monkeypatch):
    """submitit's local executor runs the same pickled jobs as Slurm would: one job per run. One job is
    killed mid-run (after its first epoch); the study reports it as failed with its log, the other run
    is unaffected; the same command again collects the finished run, resubmits only the killed one,
    which resumes from its checkpoint; every run's metrics equal the local study's."""
    pytest.importorskip("psutil")
    import nostride
    from nostride.cli import main
    from nostride.comparison.launchers.slurm import SlurmLauncher

    launcher = SlurmLauncher(cluster="local", gpus_per_run=0, cpus_per_run=1, poll_s=0.1)
    victim = tmp_path / "slurm" / "runs" / "32px" / "resnet18_spd-width4" / "seed0"
    out: dict = {}
    study = threading.Thread(target=lambda: out.update(result=nostride.compare(
        MODELS, TINY_DATA, project=tmp_path, name="slurm", quiet=True, launcher=launcher, **STUDY)))
    study.start()
    deadline = time.monotonic() + 300
    while not _first_epoch_committed(victim) and study.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    job_id = int(json.loads((victim / "launcher.json").read_text())["job_id"])  # local executor: its pid
    _kill_job_tree(job_id)
    epochs_before = (victim / "results.csv").read_text().splitlines()
    study.join(300)
    first = out["result"]
    assert not (victim / "final_metrics.json").is_file() and len(epochs_before) == 2  # header + epoch 1
    (failed,) = first.failed
    assert failed.run.title == "32px resnet18_spd@width=4 seed 0"
    assert f"job {job_id} failed" in failed.error and f"{tmp_path}/slurm/slurm/{job_id}_0_log.err" in failed.error
    report = (first.dir / "report.md").read_text()
    assert "### Failed runs (1, left out of the statistics)" in report and failed.error in report
    assert failed.details and all(line in report for line in failed.details)  # the log's last lines
    assert first.row("resnet18@width=4").summary("top1").n == 1  # the other run finished

    # the same study again, as typed: only the killed run is submitted, and it resumes
    monkeypatch.setattr(SlurmLauncher, "default_cluster", "local")
    argv = ["compare", "--models", MODELS, "--data", TINY_DATA, "--epochs", "3", "--seeds", "1", "--batch-size", "16",
            "--device", "cpu", "--no-latency", "--project", str(tmp_path), "--name", "slurm", "--quiet",
            "--launcher", "slurm", "--slurm-gpus-per-run", "0", "--slurm-cpus-per-run", "1"]
    assert main(argv) == 0
    command = json.loads((tmp_path / "slurm" / "provenance.json").read_text())["command"]
    assert command == "nostride " + shlex.join(argv)  # the exact command, as typed
    jobs = sorted(p.name for p in (tmp_path / "slurm" / "slurm").glob("*_submitted.pkl"))
    assert len(jobs) == 3  # two in the first round, the killed run's again
    assert "compare: resuming from" in (victim / "train.log").read_text()
    assert (victim / "results.csv").read_text().splitlines()[:2] == epochs_before  # epoch 1 kept, not retrained
    runs = list(csv.DictReader(open(first.dir / "runs.csv")))
    assert len(runs) == 2 and not any(r["error"] for r in runs)
    assert _per_run(first) == _per_run(local_study)  # same metrics, epoch by epoch, as trained locally

    # collected anywhere: on a machine without Slurm the same command writes the report from the runs
    monkeypatch.setattr(SlurmLauncher, "default_cluster", "slurm")
    monkeypatch.setattr("shutil.which", lambda name: None)
    assert main(argv) == 0 and len(list((tmp_path / "slurm" / "slurm").glob("*_submitted.pkl"))) == 3
    assert main(argv[:-4] + ["--seeds", "2"] + argv[-4:]) == 2  # new runs need the cluster

    # where the runs trained, with how many threads, on the same data as the local study
    record = json.loads((first.dir / "provenance.json").read_text())
    assert record["threads_per_run"] == 1 and "Slurm jobs on the default partition" in record["launcher"]
    assert record["data"] == json.loads((local_study.dir / "provenance.json").read_text())["data"]
    env = json.loads((victim / "environment.json").read_text())
    assert env["versions"] == record["versions"] and env["threads"] == 1


# ---------------------------------------------------------------------------------- provenance
@pytest.mark.slow
def test_report_records_what_makes_the_study_reproducible(cache, tmp_path, local_study, capsys):
    """Versions, device, threads per run, the exact command and the data's digest; the digest follows
    the data's contents, not caches written next to it."""
    import numpy
    import torch
    import torchvision

    import nostride
    from nostride.cli import main
    from nostride.comparison.provenance import data_digest

    record = json.loads((local_study.dir / "provenance.json").read_text())
    assert record["versions"] == {"nostride": nostride.__version__, "torch": torch.__version__,
                                  "torchvision": torchvision.__version__, "numpy": numpy.__version__,
                                  "python": ".".join(map(str, sys.version_info[:3]))}
    assert record["device"].startswith("cpu") and record["threads_per_run"] == 1
    assert record["command"].startswith("nostride.compare(models='resnet18@width=4,resnet18_spd@width=4', "
                                        "data='builtin:lowres@train=4,val=2,test=2', epochs=3, seeds=1")
    assert record["data"]["files"] == 80 and record["data"]["covers"] == "contents"
    report = (local_study.dir / "report.md").read_text()
    for text in (f"torch {torch.__version__}", f"sha256 `{record['data']['sha256']}` over 80 files",
                 "threads per run: 1", record["command"]):
        assert text in report

    # the CLI records the command as typed (a copy of the finished study: nothing trains)
    shutil.copytree(local_study.dir, tmp_path / "copy" / "local")
    argv = ["compare", "--models", MODELS, "--data", TINY_DATA, "--epochs", "3", "--seeds", "1", "--batch-size",
            "16", "--device", "cpu", "--no-latency", "--project", str(tmp_path / "copy"), "--name", "local",
            "--quiet", "--jobs", "1"]
    assert main(argv) == 0
    copy = json.loads((tmp_path / "copy" / "local" / "provenance.json").read_text())
    assert copy["command"] == "nostride " + shlex.join(argv) and copy["data"] == record["data"]

    # digests: the same files give the same digest; a changed pixel changes it; a label cache does not
    folder = tmp_path / "images"
    (folder / "a").mkdir(parents=True)
    (folder / "a" / "1.png").write_bytes(b"\x89PNG one")
    first = data_digest(str(folder))
    (folder / "a" / "labels.cache").write_bytes(b"cache")
    assert data_digest(str(folder)) == first
    (folder / "a" / "1.png").write_bytes(b"\x89PNG two")
    assert data_digest(str(folder))["sha256"] != first["sha256"]
    assert data_digest("/no/such/data")["sha256"] is None


# ------------------------------------------------------------------------------------------ Ray
def _ray_worker_of(run: Path) -> int:
    """The pid of the Ray worker process that has the run's train.log open."""
    import psutil

    log = str(run / "train.log")
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if any("ray" in part for part in p.info["cmdline"] or []) and \
                    any(f.path == log for f in p.open_files()):
                return p.info["pid"]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    raise AssertionError(f"no Ray worker has {log} open")


@pytest.mark.slow
def test_ray_study_equals_local(cache, tmp_path, local_study, monkeypatch):
    """One Ray task per run on a local Ray instance (2 CPUs); a worker killed mid-run: Ray runs its task
    again, which resumes the run; every run has the same metrics as in the local study."""
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'nostride[ray]')")
    import nostride
    from nostride.comparison.launchers.ray_cluster import RayLauncher

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # no token written into the home folder
    ray_tmp = tempfile.mkdtemp(prefix="ray")  # short: Ray's socket paths must stay under 107 bytes
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=ray_tmp)
    victim = tmp_path / "ray" / "runs" / "32px" / "resnet18_spd-width4" / "seed0"
    out: dict = {}
    try:
        study = threading.Thread(target=lambda: out.update(result=nostride.compare(
            MODELS, TINY_DATA, project=tmp_path, name="ray", quiet=True,
            launcher=RayLauncher(cpus_per_run=1, gpus_per_run=0), **STUDY)))
        study.start()
        # kill the worker process training one run after its first epoch: Ray runs the task again
        deadline = time.monotonic() + 300
        while not _first_epoch_committed(victim) and study.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        _kill_job_tree(_ray_worker_of(victim))
        study.join(300)
    finally:
        ray.shutdown()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    result = out["result"]
    assert not result.failed
    assert "compare: resuming from" in (victim / "train.log").read_text()
    assert _per_run(result) == _per_run(local_study)
    record = json.loads((result.dir / "provenance.json").read_text())
    assert record["launcher"].startswith("Ray tasks on a local Ray instance") and record["threads_per_run"] == 1
