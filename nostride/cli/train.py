"""``nostride train``: train a registered model (the task is inferred from the model name).

Every option defaults to "not given" (``argparse.SUPPRESS``) so that only flags really typed on the
command line override a ``--config`` YAML file, whose values override the built-in defaults.
"""

from __future__ import annotations

import argparse

from nostride.utils import bounds

from . import float_arg, int_arg, name_arg, path_arg

S = argparse.SUPPRESS


def _flag(g: argparse._ArgumentGroup, name: str, help: str) -> None:
    g.add_argument(name, action=argparse.BooleanOptionalAction, default=S, help=help)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a model (a new run, from scratch or from --weights, or --resume one)",
        description="Train a registered model. Options come from the defaults, then --config FILE.yaml, then "
        "the command line. The run folder PROJECT/NAME gets weights/last.pt, weights/best.pt, results.csv, "
        "results.png, args.yaml and final_metrics.json. Multi-GPU: torchrun --nproc_per_node N -m nostride train "
        "... (see docs/training.md).",
        argument_default=S,
    )
    g = p.add_argument_group("what")
    g.add_argument("--model", help="registry name, e.g. resnet18_spd (see `nostride models`), torchvision:NAME or "
                   "timm:NAME (default: the model --weights records, else none)")
    g.add_argument("--weights", metavar="PATH", type=path_arg,
                   help="start a NEW run from these weights (unlike --resume): a nostride checkpoint (best.pt, "
                   "nostride convert --output, nostride import), a torchvision/timm state dict or a training "
                   "checkpoint holding one; a classifier head with another class count is re-initialised "
                   "(default: random initialisation)")
    _flag(g, "--spdify", "convert the model to SPD-Conv before training (with --weights: after loading them, "
          "keeping their function; default off)")
    g.add_argument("--down", metavar="OP", type=name_arg, help="downsampling operator for every strided conv / pool of the model "
                   "(hwd, blurpool, conv-equal, ...: docs/downsampling.md; default: the model's own)")
    g.add_argument("--data", type=path_arg, help="classification: a dataset folder or archive (image folder, CIFAR-10, Tiny "
                   "ImageNet); detection: a dataset YAML (YOLO or COCO labels); or builtin:lowres / "
                   "builtin:small-objects (generated; no default)")
    from nostride.configs import packaged_configs

    g.add_argument("--config", type=path_arg, help="YAML file of options, or the name of a shipped recipe: "
                   f"{', '.join(packaged_configs())} (docs/training.md; default: none)")
    g.add_argument("--width", type=int, help="model width (ResNet stem channels; small = quick runs; default: the model's own)")
    g.add_argument("--img-size", type=int, help="image size (default: classification the dataset's native size; "
                   "detection 640, or a built-in set's own size)")
    g = p.add_argument_group("length and batch")
    g.add_argument("--epochs", type=int, help=f"number of epochs ({_per_task('epochs', 100)})")
    g.add_argument("--batch-size", type=int, help=f"TOTAL batch size over all DDP processes ({_per_task('batch_size', 64)})")
    g.add_argument("--accumulate", type=int, help="batches accumulated per optimizer step (default 1)")
    g.add_argument("--nominal-batch-size", type=int, help="YOLOv5 nbs: accumulate=round(nbs/batch), wd scaled "
                   f"({_per_task('nominal_batch_size', 'off')})")
    g = p.add_argument_group("optimizer")
    g.add_argument("--optimizer", choices=["sgd", "adamw"], help="default sgd")
    g.add_argument("--lr", type=float, help=f"initial learning rate ({_per_task('lr', 0.1)})")
    g.add_argument("--momentum", type=float, help=f"SGD momentum / AdamW beta1 ({_per_task('momentum', 0.9)})")
    _flag(g, "--nesterov", f"Nesterov momentum ({_per_task('nesterov', 'off')})")
    g.add_argument("--weight-decay", type=float, help="default 5e-4")
    _flag(g, "--decay-norm-bias", "also decay norm weights and biases (default: they get no decay)")
    g.add_argument("--clip-grad", type=float, help="clip the gradient norm to this value (default: no clipping)")
    g = p.add_argument_group("schedule")
    g.add_argument("--schedule", choices=["step", "cosine", "linear"], help="lr decay (default cosine)")
    g.add_argument("--schedule-unit", choices=["iter", "epoch"],
                   help=f"update lr every batch or every epoch ({_per_task('schedule_unit', 'iter')})")
    g.add_argument("--lrf", type=float, help=f"final lr factor for cosine/linear ({_per_task('lrf', 0)})")
    g.add_argument("--milestones", type=float, nargs="+", help="step: epochs where lr *= gamma (default 50%%, 75%%)")
    g.add_argument("--gamma", type=float, help="step: decay factor (default 0.1)")
    g.add_argument("--warmup-epochs", type=float, help=f"linear warm-up length in epochs ({_per_task('warmup_epochs', 0)})")
    g.add_argument("--warmup-iters", type=int, help="warm-up length in batches (overrides --warmup-epochs; default: from --warmup-epochs)")
    g.add_argument("--warmup-momentum", type=float,
                   help=f"momentum at the start of warm-up ({_per_task('warmup_momentum', 'none')})")
    g.add_argument("--warmup-bias-lr", type=float, help=f"bias lr at the start of warm-up ({_per_task('warmup_bias_lr', 'none')})")
    g = p.add_argument_group("regularisation")
    g.add_argument("--label-smoothing", type=float, help="cross-entropy label smoothing (default 0)")
    _flag(g, "--ema", f"validate/select on an exponential moving average of the weights ({_per_task('ema', 'off')})")
    g.add_argument("--ema-decay", type=float, help="default 0.9999")
    g.add_argument("--ema-tau", type=float, help="EMA ramp length in updates (default 2000)")
    g = p.add_argument_group("data")
    g.add_argument("--workers", type=int, help="DataLoader worker processes per rank (default: the available CPUs / processes, at most 8)")
    g.add_argument("--val-fraction", type=float, help="part of train held out for validation (default 0.1)")
    g.add_argument("--max-per-class", type=int, help="use at most N images per class (quick runs; default: all)")
    _flag(g, "--augment", "training augmentation (default on)")
    g.add_argument("--cache", choices=["ram", "disk"], help="decode and resize every image once and keep it in "
                   "memory (ram), or as .npy files (disk, detection only) (default: decode every time)")
    _flag(g, "--strict", "refuse data problems that are otherwise warnings, e.g. a class folder without images "
          "(default off)")
    g = p.add_argument_group("hardware")
    g.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: cuda if available)")
    _flag(g, "--amp", "mixed precision: float16 on CUDA (default on), bfloat16 on CPU (default off; about 2x faster "
                       "on CPUs with bfloat16 instructions)")
    _flag(g, "--channels-last", "channels-last memory format (default off)")
    _flag(g, "--sync-bn", "SyncBatchNorm across DDP processes (default off)")
    _flag(g, "--compile", "torch.compile the training forward (slow first steps, then faster; needs a C++ "
          "compiler on CPU, Triton on CUDA; default off)")
    g.add_argument("--spd-form", choices=["spd", "strided"], help="how SPD-Conv layers compute while training: "
                   "space-to-depth then the conv (spd), or the equal single strided conv with the weights "
                   "rearranged every step (strided; same weights and checkpoints; default spd)")
    g = p.add_argument_group("detection (YOLOv5 models; defaults from the --hyp file and YOLOv5's train.py)")
    g.add_argument("--hyp", metavar="NAME|FILE", type=path_arg, help="hyperparameters: scratch, scratch-low, scratch-med, scratch-high "
                   "or a YAML file (default scratch; detection runs only)")
    _flag(g, "--rect", "rectangular training batches, no mosaic (default off)")
    _flag(g, "--multi-scale", "vary the image size per batch in [0.5, 1.5] x img-size (default off)")
    g.add_argument("--close-mosaic", type=int, metavar="N", help="no mosaic in the last N epochs (default 0: never)")
    g.add_argument("--freeze", type=int, metavar="N", help="freeze layers 0..N-1, e.g. 10 = the backbone (default 0)")
    _flag(g, "--autoanchor", "check the anchors against the labels before training, evolve them if needed (default on)")
    _flag(g, "--plots", "write labels.jpg and train_batch*.jpg to the run folder (default on)")
    g.add_argument("--warmup-min-iters", type=int, help="warm-up lasts at least this many batches "
                   f"({_per_task('warmup_min_iters', 0)})")
    g.add_argument("--patience", type=int, help="stop after N epochs without a better fitness "
                   f"({_per_task('patience', 'none')})")
    for key, value in _scratch_hyp().items():
        g.add_argument(f"--{key.replace('_', '-')}", type=float, dest=key, metavar="X",
                       help=f"hyp {key} (default: the --hyp file's; scratch: {value:g})")
    g = p.add_argument_group("run")
    g.add_argument("--project", type=path_arg, help="runs root (default runs/train)")
    g.add_argument("--name", type=path_arg, help="run name (default exp; NAME2, NAME3 ... if it exists)")
    g.add_argument("--exist-ok", action="store_true", help="reuse PROJECT/NAME if it exists")
    g.add_argument("--resume", nargs="?", const=True, metavar="PATH", type=path_arg,
                   help="continue a run: its last.pt, its folder, or nothing for the most recent run under "
                   "--project (with --name, that run); a finished run with a larger --epochs trains on "
                   "(default: a new run)")
    g.add_argument("--seed", type=int, help="random seed (default 0)")
    _flag(g, "--deterministic", "deterministic algorithms (slower; exact repeats on the same machine; default off)")
    _flag(g, "--tensorboard", "also log to TensorBoard (needs the tensorboard package; default off)")
    g.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    _bound_types(p)
    p.set_defaults(func=run)


def _per_task(key: str, classification: object) -> str:
    """``default: classification X; detection Y`` for an option whose default depends on the task
    (detection's come from YOLOv5's train.py and the scratch hyp file, read without importing torch)."""
    def say(v: object) -> str:
        return "on" if v is True else "off" if v is False else f"{v:g}" if isinstance(v, float) else str(v)

    detection = _detection_defaults().get(key)
    return f"default: classification {say(classification)}; detection {say(detection)}"


def _detection_defaults() -> dict[str, object]:
    """Detection's engine defaults: the task's defaults file, then the scratch hyp file's optimizer
    values under their option names (as nostride.tasks.detect.hyp.default_options, without torch)."""
    from pathlib import Path

    import yaml

    folder = Path(__file__).resolve().parents[1] / "tasks" / "detect"
    out = yaml.safe_load((folder / "train_defaults.yaml").read_text())
    hyp = yaml.safe_load((folder / "hyps" / "scratch.yaml").read_text())
    out.update({"lr": hyp["lr0"], **{k: hyp[k] for k in ("lrf", "momentum", "weight_decay", "warmup_epochs",
                                                         "warmup_momentum", "warmup_bias_lr")}})
    return out


def _bound_types(p: argparse.ArgumentParser) -> None:
    """Give every numeric training option the parser type of its bounds (the same table
    ``TrainConfig.validate`` checks config files and Python calls against), so that a value no
    run can use is refused with the bound before anything is imported or built."""
    for action in p._actions:
        if action.dest in bounds.TRAIN_INT_BOUNDS:
            action.type = int_arg(*bounds.TRAIN_INT_BOUNDS[action.dest])
        elif action.dest in bounds.TRAIN_FLOAT_BOUNDS:
            low, high, low_open, high_open = bounds.TRAIN_FLOAT_BOUNDS[action.dest]
            action.type = float_arg(low, high, low_open=low_open, high_open=high_open)
        elif action.dest == "milestones":
            action.type = float_arg(0, bounds.MAX_EPOCHS, low_open=True)
        elif action.type is float:  # the detection hyperparameters: finite here, ranges checked with the hyp file
            action.type = float_arg()


def _scratch_hyp() -> dict[str, float]:
    """The detection hyperparameters a flag can set, with their ``scratch`` values (read from the
    shipped YAML without importing the detection package, so --help stays fast); the optimizer ones
    have their own flags (--lr, --lrf, --momentum, ...)."""
    from pathlib import Path

    import yaml

    path = Path(__file__).resolve().parents[1] / "tasks" / "detect" / "hyps" / "scratch.yaml"
    engine = {"lr0", "lrf", "momentum", "weight_decay", "warmup_epochs", "warmup_momentum", "warmup_bias_lr"}
    return {k: float(v) for k, v in yaml.safe_load(path.read_text()).items() if k not in engine}


def run(args: argparse.Namespace) -> int:
    import sys

    import time

    from nostride.engine import CompileUnavailableError, NonFiniteLossError, PeerLostError, train

    options = {k: v for k, v in vars(args).items() if k not in ("func", "command", "config")}
    if "down" in options:  # a builder option of every model (nostride.create_model(..., down=OP))
        options["model_options"] = {**dict(options.get("model_options") or {}), "down": options.pop("down")}
    try:
        train(config=getattr(args, "config", None), **options)
    except (NonFiniteLossError, CompileUnavailableError) as e:
        print(f"nostride train: error: {e}", file=sys.stderr)
        return 1
    except PeerLostError as e:
        print(f"nostride train: error: {e}", file=sys.stderr, flush=True)
        time.sleep(e.grace)  # torchrun stops this process sooner, having seen the failed one first
        return 1
    return 0
