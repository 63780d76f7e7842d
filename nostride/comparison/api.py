"""``nostride.compare(...)``: SPD models against strided baselines, trained alike, over several seeds."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..utils.atomic import atomic_write_text
from ..utils.paths import increment_path
from .folder import STUDY_VERSION, find_study, open_study, study_identity
from .launchers import LauncherUnavailable
from .matching import build_spec_model, match_baseline, model_cost
from .placement import default_jobs, device_text, on_cpu, threads_per_run
from .plan import StudyPlan, plan_markdown
from .provenance import provenance_markdown, run_environments, study_provenance
from .report import (DifferenceRow, ModelRow, build_differences, build_rows, failures_markdown, markdown_report,
                     write_csvs)
from .specs import ModelSpec, parse_model_list, parse_model_spec
from .study import Run, RunResult, all_finished, execute_runs, is_finished, plan_runs
from .tasks import study_task

__all__ = ["compare", "StudyResult", "DEFAULT_MODELS", "DEFAULT_DATA", "STUDY_VERSION"]

from .defaults import DEFAULT_DATA, DEFAULT_MODELS, DEFAULT_RECIPE, DEFAULT_SEEDS, default_models, resolve_recipe

_NOT_COMMON = ("model", "width", "model_options", "spdify", "img_size", "seed", "project", "name", "exist_ok",
               "resume", "quiet")


@dataclass
class StudyResult:
    """What :func:`compare` found.

    Attributes:
        dir: the study folder (``report.md``, CSVs, charts, ``runs/``).
        rows: per image size and model: metric over seeds, parameters, FLOPs, latency, training time.
        differences: every SPD model against every strided model per image size (paired over seeds).
        markdown: the report's tables.
        files: every file written.
        failed: runs that failed (their seeds are left out of the statistics).
    """

    dir: Path
    task: str
    metric: str
    rows: list[ModelRow]
    differences: list[DifferenceRow]
    markdown: str
    files: list[Path] = field(default_factory=list)
    failed: list[RunResult] = field(default_factory=list)

    def row(self, model: str, img_size: int | None = None) -> ModelRow:
        """The row of ``model`` (spec text) at ``img_size`` (default: the only / largest size)."""
        rows = [r for r in self.rows if r.spec.text == model and (img_size is None or r.img_size == img_size)]
        if not rows:
            raise KeyError(f"no row for {model!r}{f' at {img_size} px' if img_size else ''}")
        return max(rows, key=lambda r: r.img_size)


def _own_baseline(spec: ModelSpec) -> ModelSpec | None:
    """The strided model an SPD model replaces: ``X`` for ``X_spd`` and for ``spdify:X`` (same options)."""
    if spec.spdify:
        return ModelSpec(spec.name, dict(spec.options))
    for suffix, plain in (("_spd", ""), ("_spd_p2", "_p2")):  # X_spd -> X, X_spd_p2 -> X_p2
        if spec.name.endswith(suffix):
            try:
                return parse_model_spec(spec.name[: -len(suffix)] + plain).with_options(**spec.options)
            except KeyError:
                return None
    return None


def _task_of(specs: list[ModelSpec]) -> str:
    from nostride.models import model_info

    tasks = {model_info(s.name).task for s in specs}
    if len(tasks) > 1:
        raise ValueError(f"the models mix tasks ({', '.join(sorted(tasks))}); compare models of one task")
    return tasks.pop()


def compare(
    models: str | Sequence[str] | None = None,
    data: str | None = None,
    *,
    epochs: int | None = None,
    seeds: int | Sequence[int] = DEFAULT_SEEDS,
    img_sizes: int | Sequence[int] | None = None,
    match: str | None = None,
    recipe: str | None = None,
    device: str = "",
    project: str | Path = "runs/compare",
    name: str = "exp",
    jobs: int | None = None,
    nproc_per_run: int = 1,
    latency: bool = True,
    quiet: bool = False,
    down: str | Sequence[str] | None = None,
    launcher: Any = None,
    command: str | None = None,
    dry_run: bool = False,
    train: bool = True,
    **options: Any,
) -> StudyResult | StudyPlan:
    """Train SPD models and strided baselines alike and compare them, fairly, over several seeds.

    Every run gets the same data, splits (the validation split is drawn with seed 0 for all runs),
    schedule, augmentation and budget; the seed changes the model's initialisation and the data
    order and pairs the runs of different models. Each run's test split (or validation split when
    the dataset has none) is scored once, with the run's best checkpoint.

    Args:
        models: model specs, comma-separated or a list: registry names (``resnet18_spd``), with
            builder options (``resnet18@width=32``), or converted (``spdify:resnet18@width=32``).
            Default: ``yolov5n,yolov5n_spd`` for detection data (and the default data),
            ``resnet18@width=8,resnet18_spd@width=8`` for classification data.
        data: any dataset the training command reads, or a built-in set: ``builtin:lowres`` /
            ``builtin:small-objects`` (default: the small objects at 128 px,
            ``builtin:small-objects@img_size=128,min_size=8,max_size=24``).
        epochs: epochs per run (default: the recipe's, else 10 for classification and 30 for
            detection).
        seeds: number of seeds (0, 1, ...) or the seeds themselves (default 3).
        img_sizes: image sizes to repeat the study at (images resized to S x S, e.g. ``[32, 16]``);
            default the dataset's own size.
        match: ``"flops"`` or ``"params"``: add, for each SPD model, its strided baseline widened until
            its FLOPs (parameters) at each image size are within 5 % of the SPD model's. With ``down``:
            widen every operator's arm to the most expensive arm's FLOPs (parameters) instead.
        down: downsampling operators (``"strided,spd,conv-equal,hwd"``, a list, or ``"all"``: strided,
            spd, conv-equal, blurpool, hwd, adown, scdown): one arm per operator built from each model of
            ``models`` (default ``resnet18@width=8`` for classification data, ``yolov5n`` for
            detection) with ``down=OP``; the report ranks the arms by metric and by cost and states the
            null check (SPD against conv-equal). docs/downsampling.md.
        recipe: a YAML file of training options applied to every run (``options`` override it), or
            the name of a packaged recipe (``small-objects-cpu``: what the default data is trained
            with when neither data nor recipe is given).
        device: ``cpu``, ``cuda``, ``cuda:N``, or several comma-separated for parallel jobs.
        project, name: the study folder PROJECT/NAME; the same study started again continues there
            (finished runs are never trained again, interrupted ones resume); a different one goes to
            NAME2, NAME3, ...
        jobs: runs trained at the same time (worker processes); 1 trains in this process. Default:
            on a CPU with 2 or more cores, 2 (each with half the cores' threads: two one-thread
            runs side by side use a 2-core CPU better than one two-thread run, and far better when
            other work shares the CPU); with several devices, one per device; else 1.
        nproc_per_run: processes per run (a torchrun group, e.g. one per GPU).
        latency: measure batch-1 latency on the study's device.
        quiet: no progress output.
        launcher: where the runs train: ``None`` / ``"local"`` (this machine: ``jobs``, ``devices``),
            ``"slurm"`` / ``"ray"`` with default options, or a launcher object
            (:class:`~nostride.comparison.launchers.slurm.SlurmLauncher`,
            :class:`~nostride.comparison.launchers.ray_cluster.RayLauncher`) with its options.
        command: the command that started the study, recorded in the report (default: this call).
        dry_run: train nothing, create nothing: return (and print) the plan, a
            :class:`~nostride.comparison.plan.StudyPlan` (arms, their parameters and FLOPs, runs
            already finished in the study folder, the share of the training left per arm).
        train: ``False``: train nothing, report the runs the study folder already holds (a look at a
            study still training elsewhere, or an interim report); the others are named as not
            trained yet, and differences pair the seeds both arms have.
        **options: any training option (``batch_size=128``, ``lr=0.05``, ``max_per_class=500``...).

    Returns:
        A :class:`StudyResult` (with ``dry_run``: a :class:`~nostride.comparison.plan.StudyPlan`); the study folder holds ``report.md``, ``summary.csv``,
        ``differences.csv``, ``runs.csv``, ``metric_vs_gflops.png`` and, with several image sizes,
        ``metric_vs_img_size.png``.
    """
    from nostride.engine.config import build_config, load_config_file, merge_options

    from .launchers import build_launcher
    from .provenance import python_call

    if command is None:
        command = python_call("nostride.compare", models=models, data=data, epochs=epochs, seeds=seeds,
                              img_sizes=img_sizes, match=match, recipe=recipe, device=device or None,
                              project=str(project), name=name, jobs=jobs,
                              nproc_per_run=nproc_per_run if nproc_per_run != 1 else None,
                              latency=None if latency else False,
                              down=down, launcher=launcher if isinstance(launcher, str) else None, **options)
    if isinstance(launcher, str):
        launcher = build_launcher(launcher)
    unavailable, trained_by = None, launcher
    if launcher is not None:
        try:
            launcher.check()  # before any work: a missing library or cluster is one line, now
        except LauncherUnavailable as e:
            if not (Path(project) / name / "study.json").is_file():
                raise  # a new study: nothing to collect
            unavailable = e  # fatal unless the study exists and every run finished (then: collect)
    specs = parse_model_list(models if models is not None else default_models(data))
    down_ops: list[str] = []
    if down is not None:
        from .down_arms import down_arms, parse_down

        down_ops = parse_down(down)
        # the arms come from the strided model(s): by default the first of the default pair
        specs = down_arms(specs if models is not None else specs[:1], down_ops)
    if not data and recipe is None:
        recipe = DEFAULT_RECIPE  # the default data's own recipe
    data = data or DEFAULT_DATA
    task = study_task(_task_of(specs))
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seed_list:
        raise ValueError("seeds must be at least 1")
    devices = [d.strip() for d in str(device).split(",") if d.strip()]
    if jobs is None:
        jobs = default_jobs(devices, nproc_per_run)
    if jobs < 1 or nproc_per_run < 1:
        raise ValueError("jobs and nproc_per_run must be >= 1")
    if len(devices) > 1 and nproc_per_run > 1:
        raise ValueError("give either several devices (one run per device) or nproc_per_run > 1, not both")
    if launcher is not None and len(devices) > 1:
        raise ValueError(f"--launcher {launcher.name} gives each run its own GPUs: give one --device (or none), "
                         "not several")

    # common training options: task defaults < recipe < options; checked as the engine checks them
    common: dict[str, Any] = dict(task.defaults)
    if recipe:
        merge_options(common, load_config_file(resolve_recipe(recipe)), str(recipe))
    for key in options:
        if key in _NOT_COMMON:
            raise ValueError(f"option {key!r} is set per run by compare (use models, seeds, img_sizes, name)")
    merge_options(common, {k: v for k, v in options.items() if v is not None})
    if epochs is not None:
        common["epochs"] = epochs
    common.update({"data": data, "device": devices[0] if len(devices) == 1 else ""})
    common.setdefault("split_seed", 0)
    if "workers" not in common:
        cpu_only = on_cpu(devices) if launcher is None else (on_cpu(devices) if devices else not launcher.uses_gpus())
        common["workers"] = 0 if cpu_only else 4
    for k in _NOT_COMMON:
        common.pop(k, None)
    build_config(**{**common, "model": specs[0].name})  # unknown / bad options fail before any training

    # the data (a builtin: source is generated here, once), its class count and native size
    sizes = [img_sizes] if isinstance(img_sizes, int) else list(img_sizes or [])
    num_classes, native = task.describe(data, None)
    sizes = sizes or [native]
    per_size: dict[int, list[ModelSpec]] = {}
    for size in sizes:
        size_specs = list(specs)
        if down_ops:
            if match:
                from .down_arms import match_down_arms

                note = (lambda m: warnings.warn(m, RuntimeWarning, stacklevel=2)) if quiet else \
                    (lambda m: print(f"compare: note: {m}", flush=True))
                size_specs = match_down_arms(size_specs, match, num_classes, size, note)
            per_size[size] = size_specs
            continue
        if match:
            for spd in [s for s in specs if s.is_spd]:
                base = _own_baseline(spd)
                if base is None:
                    raise ValueError(f"{spd.text}: no strided baseline to widen (expected X for X_spd or spdify:X)")
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    matched, _ = match_baseline(base, spd, match, num_classes, size)
                for w in caught:
                    if quiet:
                        warnings.warn(w.message, w.category, stacklevel=2)
                    else:
                        print(f"compare: note: {w.message}", flush=True)
                if matched not in size_specs:
                    size_specs.append(matched)
        per_size[size] = size_specs

    identity = study_identity(task.name, common)
    if dry_run:
        return _dry_run(project, name, identity, per_size, sizes, seed_list, common, num_classes, quiet)
    if not train:
        found = find_study(project, name, identity)
        if found is None:
            raise ValueError(f"{Path(project) / name}: no study with these options to report (--no-train reports "
                             "a study's finished runs; the options must be the study's own)")
        unavailable, launcher = None, None  # nothing to train: no cluster needed
    if unavailable is not None and find_study(project, name, identity) is None:
        raise unavailable
    study_dir, continued = open_study(project, name, identity)
    runs = plan_runs(study_dir, per_size, sizes, seed_list, common)
    if unavailable is not None:
        if not all_finished(runs):
            raise unavailable
        launcher = None  # every run finished: collecting the results needs no cluster
    if launcher is not None:
        launcher.prepare(study_dir, nproc_per_run)
    if not quiet:
        n_models = len({r.model.text for r in runs})
        print(f"compare: {_n(n_models, 'model')} x {_n(len(sizes), 'image size')} x {_n(len(seed_list), 'seed')} = "
              f"{_n(len(runs), 'run')} of {_n(common['epochs'], 'epoch')} on {data}; study folder {study_dir}"
              f"{' (continuing)' if continued else ''}", flush=True)
    pending: list[Run] = []
    if not train:
        pending = [r for r in runs if not is_finished(r)]
        runs = [r for r in runs if is_finished(r)]
        if not runs:
            raise ValueError(f"{study_dir}: no run of this study has finished yet; nothing to report (--no-train)")
    results = execute_runs(runs, task.metrics[0], jobs=jobs, nproc_per_run=nproc_per_run, devices=devices,
                           quiet=quiet, scale=task.scale, digits=task.digits, launcher=launcher)
    for r in results:
        if not r.error:
            r.scores = task.scores(r.final)

    # cost, latency, tables, charts
    costs = {(r.model.text, r.img_size): model_cost(r.model, num_classes, r.img_size) for r in runs}
    dev_name, latencies = _latencies(runs, num_classes, devices, latency)
    metrics = [k for k, _ in task.metrics]
    labels = dict(task.metrics)
    rows = build_rows(results, costs, latencies, metrics)
    diffs = build_differences(rows, metrics)
    split = _scored_split(results)
    header = (f"{task.name} on `{data}`, {_n(common['epochs'], 'epoch')}, seeds {', '.join(map(str, seed_list))}: "
              f"{labels[metrics[0]]} of the {split} (best checkpoint), mean ± std over seeds; scores in "
              f"{task.unit}, as `nostride val` prints them.\n")
    if pending:
        shown = ", ".join(r.title for r in pending[:6]) + (", ..." if len(pending) > 6 else "")
        header += (f"\nPartial report (--no-train): {_n(len(runs), 'run')} of {len(runs) + len(pending)} finished; "
                   f"not trained yet, so not in these tables: {shown}.\n")
    md = markdown_report(rows, diffs, labels, dev_name, header, task.digits) + failures_markdown(results)
    if down_ops:
        from .down_arms import down_section

        md += "\n" + down_section(rows, metrics[0], labels[metrics[0]], getattr(task, "higher_is_better", True))
    files = write_csvs(study_dir, results, rows, diffs, metrics)
    record = study_provenance(command, data, device_text(devices, trained_by),
                              threads_per_run(jobs, nproc_per_run, devices, trained_by),
                              trained_by.describe() if trained_by is not None else "this machine")
    report = study_dir / "report.md"
    atomic_write_text(study_dir / "provenance.json", json.dumps(record, indent=2))
    atomic_write_text(report, md + "\n" + provenance_markdown(record, run_environments(results)))
    files += [report, study_dir / "provenance.json"]
    files += _charts(study_dir, rows, metrics[0], labels[metrics[0]], len(sizes) > 1)
    failed = [r for r in results if r.error]
    if not quiet:
        print("\n" + md, flush=True)
        if failed:
            print(f"{len(failed)} runs failed (left out of the statistics); first: {failed[0].run.title}: "
                  f"{failed[0].error}")
        print(f"results: {report}, {', '.join(p.name for p in files if p != report)}", flush=True)
    return StudyResult(study_dir, task.name, metrics[0], rows, diffs, md, files, failed)


def _dry_run(project: str | Path, name: str, identity: dict[str, Any], per_size: dict[int, list[ModelSpec]],
             sizes: list[int], seed_list: list[int], common: dict[str, Any], num_classes: int,
             quiet: bool) -> StudyPlan:
    """The study's plan, from the folder it would continue (or the name it would take), nothing written."""
    found = find_study(project, name, identity)
    folder = found or increment_path(Path(project) / name, exist_ok=False, mkdir=False)
    runs = plan_runs(folder, per_size, sizes, seed_list, common)
    finished = [is_finished(run) for run in runs]
    costs = {(r.model.text, r.img_size): model_cost(r.model, num_classes, r.img_size) for r in runs}
    md = plan_markdown(runs, finished, costs, common["epochs"], folder, found is not None)
    if not quiet:
        print(md, flush=True)
    return StudyPlan(folder, found is not None, runs, finished, costs, md)


def _n(k: int, noun: str) -> str:
    return f"{k} {noun}{'' if k == 1 else 's'}"


def _scored_split(results: list[RunResult]) -> str:
    """Which split the scores come from: the test split, or the validation split of data without one."""
    has_test = [bool(r.final.get("test")) for r in results if not r.error]
    if all(has_test):
        return "test split"
    if not any(has_test):
        return "validation split (the data has no test split)"
    return "test split (validation split where a run had none)"


def _latencies(runs, num_classes: int, devices: list[str], enabled: bool) -> tuple[str, dict[tuple[str, int], float]]:
    from nostride.utils.device import select_device

    from .measure import measure_latency

    device = select_device(devices[0] if devices else "")
    if not enabled:
        return str(device), {}
    name = "cpu, 1 thread" if device.type == "cpu" else str(device)
    out = {}
    for key in dict.fromkeys((r.model.text, r.img_size) for r in runs):
        spec = next(r.model for r in runs if (r.model.text, r.img_size) == key)
        out[key] = measure_latency(build_spec_model(spec, num_classes, key[1]), key[1], device)
    return name, out


def _charts(folder: Path, rows: list[ModelRow], metric: str, label: str, by_size: bool) -> list[Path]:
    from .charts import plot_metric_vs_flops, plot_metric_vs_img_size

    if not any(r.summary(metric).n for r in rows):
        return []
    files = [plot_metric_vs_flops(rows, metric, label, folder / "metric_vs_gflops.png")]
    if by_size:
        files.append(plot_metric_vs_img_size(rows, metric, label, folder / "metric_vs_img_size.png"))
    return files


