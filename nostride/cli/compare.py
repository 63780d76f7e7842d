"""``nostride compare``: SPD models against strided baselines on the same data, schedule and seeds."""

from __future__ import annotations

import argparse

from nostride.utils import bounds

from . import batch_size_arg, float_arg, int_arg, key_value, name_arg, path_arg, workers_arg


def _img_sizes(text: str) -> list[int]:
    """Comma-separated image sizes, each within the image-size bounds."""
    values = [v for v in text.split(",") if v.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated image sizes, got {text!r}")
    try:
        return [bounds.check_img_size(v, "each size") for v in values]
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


_OWN_OPTIONS: list[argparse.Action] = []  # this command's own options: --set may not give them again
_TRAINING_OPTIONS = ("batch_size", "lr", "max_per_class", "workers")  # flags that are training options


def add_parser(sub: argparse._SubParsersAction) -> None:
    from nostride.comparison.defaults import (DEFAULT_CLASSIFY_MODELS, DEFAULT_DATA, DEFAULT_MODELS, DEFAULT_RECIPE,
                                              DEFAULT_SEEDS, packaged_recipes)

    p = sub.add_parser(
        "compare", help="does SPD help on this data? SPD vs strided, same data and seeds, mean ± std, cost",
        description="Train SPD models and strided baselines alike (same data, splits, schedule, augmentation, "
        "budget and seeds) and report, per image size, mean ± std over seeds of the task metric, parameters, "
        "GFLOPs, batch-1 latency and training time, plus the paired difference of every SPD model against every "
        "strided one with a 95% interval. Writes report.md, summary.csv, differences.csv, runs.csv and charts "
        "into runs/compare/NAME; running the same study again continues it (finished runs are not trained again).",
    )
    p.add_argument("--models", help=f"comma-separated model specs: NAME, NAME@width=32 (builder options), "
                   f"spdify:NAME (converted) (default: {DEFAULT_MODELS} for detection data, "
                   f"{DEFAULT_CLASSIFY_MODELS} for classification data)")
    p.add_argument("--data", type=path_arg,
                   help=f"dataset (any the train command reads) or builtin:lowres / builtin:small-objects "
                   f"(default: {DEFAULT_DATA})")
    p.add_argument("--epochs", type=int_arg(1, bounds.MAX_EPOCHS), help="epochs per run (default: the recipe's, else 10 for classification, "
                   "30 for detection)")
    p.add_argument("--seeds", type=int_arg(1, 1000), default=DEFAULT_SEEDS,
                   help=f"seeds per model (0, 1, ...; default {DEFAULT_SEEDS})")
    p.add_argument("--img-sizes", type=_img_sizes, help="repeat the study at these image sizes, e.g. 32,16 "
                   "(default: the dataset's own size)")
    p.add_argument("--match", choices=["flops", "params"],
                   help="add each SPD model's strided baseline widened to the SPD model's FLOPs or parameters "
                   "(default: none)")
    p.add_argument("--down", nargs="?", const="all", type=name_arg, metavar="OP,OP,...",
                   help="one arm per downsampling operator from the base model (--models, default resnet18@width=8 "
                   "for classification data, yolov5n for detection): e.g. strided,spd,conv-equal,blurpool,hwd,adown,"
                   "scdown (those with no list); --match flops widens every arm to the most expensive one; the "
                   "report ranks the arms and states the null check, SPD against conv-equal (default: off)")
    p.add_argument("--recipe", type=path_arg, help="YAML file of training options for every run (see nostride train --help), or a "
                   f"packaged recipe: {', '.join(packaged_recipes())} (default: {DEFAULT_RECIPE} with the default "
                   "data, else none)")
    p.add_argument("--batch-size", type=batch_size_arg, help="batch size (default: the recipe's, else 64 for classification, "
                   "16 for detection)")
    p.add_argument("--lr", type=float_arg(0, 100, low_open=True), help="learning rate (default: the recipe's, else 0.05 for classification, "
                   "the hyp file's for detection)")
    p.add_argument("--max-per-class", type=int_arg(1, bounds.MAX_COUNT), help="use at most N images per class (quick studies; default: all)")
    p.add_argument("--workers", type=workers_arg, help="DataLoader workers per run (default 0 on CPU, 4 on GPU)")
    p.add_argument("--set", dest="overrides", type=key_value, action="append", default=[], metavar="KEY=VALUE",
                   help="any other training option for every run, e.g. --set label_smoothing=0.1 (repeatable; "
                   "default: none)")
    p.add_argument("--device", default="", help="cpu, cuda, cuda:N, or several (cuda:0,cuda:1) for parallel jobs "
                   "(default: cuda if available, else cpu)")
    p.add_argument("--jobs", type=int_arg(1, 256), help="runs trained at the same time, each in its own process (default: 2 on "
                   "a CPU with 2 or more cores, each on half the cores; one per device with several devices; else 1)")
    p.add_argument("--nproc-per-run", type=int_arg(1, 1024), default=1, help="processes per run (torchrun, e.g. GPUs per run)")
    p.add_argument("--project", default="runs/compare", type=path_arg, help="studies root (default runs/compare)")
    p.add_argument("--name", default="exp", type=path_arg, help="study name; the same study again continues in its folder")
    p.add_argument("--no-latency", action="store_true", help="skip the batch-1 latency measurement")
    p.add_argument("--no-train", action="store_true", help="train nothing: report the runs the study folder already "
                   "holds (an interim report of a study still training)")
    p.add_argument("--dry-run", action="store_true", help="train nothing: print the plan (each arm's parameters and "
                   "FLOPs, runs already finished in the study folder, each arm's share of the training left)")
    p.add_argument("--quiet", action="store_true", help="only the final table")
    _add_launcher_options(p)
    p.set_defaults(func=run, interrupted="finished runs are kept and the same command continues the study "
                   "(interrupted runs resume from their last epoch)")
    _OWN_OPTIONS[:] = p._actions


def _add_launcher_options(p: argparse.ArgumentParser) -> None:
    from nostride.comparison.launchers import launcher_names

    p.add_argument("--launcher", choices=launcher_names(), default="local",
                   help="where the runs train: local (this machine, --jobs / --device), slurm (one Slurm job per "
                   "run, through submitit: pip install 'nostride[slurm]'), ray (one Ray task per run: pip install "
                   "'nostride[ray]') (default: local)")
    g = p.add_argument_group("on a Slurm cluster (--launcher slurm)")
    g.add_argument("--slurm-partition", help="partition (default: the cluster's default)")
    g.add_argument("--slurm-gpus-per-run", type=int_arg(0, 64), help="GPUs per run's job; above 1 the run trains under torchrun "
                   "with one process per GPU (default 1)")
    g.add_argument("--slurm-time", help="time limit per job: minutes, HH:MM:SS or D-HH:MM:SS; a run that needs "
                   "longer is requeued and resumes from its last checkpoint (default 4:00:00)")
    g.add_argument("--slurm-cpus-per-run", type=int_arg(1, 1024), help="CPUs per job, also the run's threads (default 4 per GPU)")
    g.add_argument("--slurm-mem", help="memory per job, e.g. 32G (default: the partition's)")
    g.add_argument("--slurm-account", help="account to charge (default: yours)")
    g.add_argument("--slurm-option", dest="slurm_options", type=key_value, action="append", default=[],
                   metavar="KEY=VALUE", help="any other sbatch option, e.g. --slurm-option qos=high, "
                   "--slurm-option constraint=a100 (repeatable; default: none)")
    g = p.add_argument_group("on a Ray cluster (--launcher ray)")
    g.add_argument("--ray-address", help="the cluster's address, e.g. ray://head:10001 or head:6379 (default: "
                   "RAY_ADDRESS, else a Ray instance on this machine)")
    g.add_argument("--ray-gpus-per-run", type=float_arg(0, 64), help="GPUs per run's task (default 1 when the cluster has "
                   "GPUs, else 0)")
    g.add_argument("--ray-cpus-per-run", type=int_arg(1, 1024), help="CPUs per run's task, also its threads (default 1)")


_SLURM = {"slurm_partition": "partition", "slurm_gpus_per_run": "gpus_per_run", "slurm_time": "time",
          "slurm_cpus_per_run": "cpus_per_run", "slurm_mem": "mem", "slurm_account": "account"}
_RAY = {"ray_address": "address", "ray_gpus_per_run": "gpus_per_run", "ray_cpus_per_run": "cpus_per_run"}


def _launcher(args: argparse.Namespace):
    """The launcher the flags ask for (``None``: local); options of another launcher are refused."""
    from nostride.comparison.launchers import build_launcher

    slurm = {v: getattr(args, k) for k, v in _SLURM.items() if getattr(args, k) is not None}
    if args.slurm_options:
        slurm["options"] = dict(args.slurm_options)
    ray = {v: getattr(args, k) for k, v in _RAY.items() if getattr(args, k) is not None}
    for name, given in (("slurm", slurm), ("ray", ray)):
        if given and args.launcher != name:
            raise ValueError(f"--{name}-* options need --launcher {name}")
    return build_launcher(args.launcher, **(slurm if args.launcher == "slurm" else ray if args.launcher == "ray"
                                             else {}))


def run(args: argparse.Namespace) -> int:
    from nostride.comparison import compare
    from nostride.cli import invoked_argv
    from nostride.comparison.provenance import command_line

    launcher = _launcher(args)
    options = dict(args.overrides)
    own = {a.dest: a.option_strings[0] for a in _OWN_OPTIONS if a.option_strings}
    for key in options:  # options compare takes itself (not training options) cannot come twice
        if key in own and key not in _TRAINING_OPTIONS:
            raise ValueError(f"--set {key}=...: {key} has its own option, {own[key]}; use that instead")
    for key in _TRAINING_OPTIONS:
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    result = compare(args.models, args.data, epochs=args.epochs, seeds=args.seeds, img_sizes=args.img_sizes,
                     match=args.match, recipe=args.recipe, device=args.device, project=args.project,
                     name=args.name, jobs=args.jobs, nproc_per_run=args.nproc_per_run,
                     latency=not args.no_latency, quiet=args.quiet, down=args.down, launcher=launcher,
                     command=command_line(invoked_argv()), dry_run=args.dry_run, train=not args.no_train, **options)
    if args.dry_run:
        if args.quiet:
            print(result.markdown)
        return 0
    if args.quiet:
        print(result.markdown)
    return 1 if result.failed and len(result.failed) == sum(r.summary(result.metric).n + len(r.failed)
                                                             for r in result.rows) else 0
