"""``nostride.train(...)``: the Python entry point of training (the CLI calls it too)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from nostride.checkpoint import load_checkpoint

from .checkpointer import absolute_data_path, check_resumable, resolve_resume_path
from .config import TrainConfig, build_config

__all__ = ["train", "resolve_config", "RESUME_OVERRIDABLE"]

# options that may change when resuming: they do not alter what the finished epochs mean
RESUME_OVERRIDABLE = ("epochs", "device", "workers", "quiet", "tensorboard", "compile", "spd_form", "cache")


def resolve_config(config: str | None = None, **options: Any) -> TrainConfig:
    """Effective options: defaults < ``config`` YAML < ``options``; with ``resume``, the checkpoint's
    own options < the overridable ``options`` (epochs, device, workers, quiet, tensorboard)."""
    resume = options.get("resume")
    if not resume:
        return build_config(config, **options)
    base = build_config(config, **options)  # validates the given options
    path = resolve_resume_path(resume, base.project, options.get("name"))
    if resume is True or resume == "True":
        if int(os.environ.get("RANK", 0)) == 0:
            print(f"resume: the most recent run, {path}")
    ckpt = load_checkpoint(path)
    check_resumable(ckpt, path)  # best.pt or exported weights: say which file resumes
    saved = dict(ckpt.get("config") or {})
    if not saved:
        raise ValueError(f"{path}: not a training checkpoint (no 'config'); cannot resume from it")
    main = int(os.environ.get("RANK", 0)) == 0
    ignored = sorted(k for k in options
                     if k not in RESUME_OVERRIDABLE + ("resume", "data") and options[k] != saved.get(k))
    if ignored and main:
        print(f"resume: keeping the run's own {', '.join(ignored)} (only {', '.join(RESUME_OVERRIDABLE)} "
              "and data can change)")
    if "epochs" in options and options["epochs"] != saved.get("epochs"):
        _check_epoch_change(path, saved, int(options["epochs"]))
    saved.update({k: options[k] for k in RESUME_OVERRIDABLE if k in options})
    if options.get("data") and absolute_data_path(options["data"]) != saved.get("data"):
        if main:  # the dataset moved, or the run recorded a relative path: the explicit one wins
            print(f"resume: reading the data from {options['data']} (the run recorded {saved.get('data')!r})")
        saved["data"] = options["data"]
    elif saved.get("data") and not _data_exists(saved["data"]):
        raise ValueError(f"{path}: the run's dataset {saved['data']!r} is not found (from {os.getcwd()}); "
                         "pass --data PATH to say where it is now")
    saved["resume"] = str(path)
    return build_config(None, **saved)


def _finished_run(last: Path, epochs: int) -> dict[str, Any] | None:
    """The final metrics of a run that has trained all ``epochs`` and been evaluated (its
    ``final_metrics.json``), after saying so; ``None`` when there is training or evaluation left."""
    import json

    done = int(load_checkpoint(last).get("epoch", 0))
    final = last.resolve().parent.parent / "final_metrics.json"
    if done < epochs or not final.is_file():
        return None
    try:
        result = json.loads(final.read_text())
    except ValueError:
        return None  # a damaged file: evaluate again
    if int(os.environ.get("RANK", 0)) == 0:
        print(f"resume: {last} already finished its {done} epoch{'s' if done != 1 else ''} and was evaluated "
              f"({final}); nothing to do. To train longer: nostride train --resume {last} --epochs N")
    return result


def _data_exists(data: str) -> bool:
    # a source with a scheme (builtin:NAME, ...) is the task's to resolve; a path must exist
    if Path(data).expanduser().exists():
        return True
    scheme = data.split(":", 1)[0] if ":" in data else ""
    return len(scheme) > 1 and scheme.isidentifier()


def _check_epoch_change(path: Any, saved: dict[str, Any], epochs: int) -> None:
    """Resuming with another ``--epochs``: refuse when a finished run's schedule would be re-planned
    (its lr had already decayed to the end), warn when an unfinished run's is."""
    from .schedule import schedule_departure

    done = int(load_checkpoint(path).get("epoch", 0))
    old = int(saved.get("epochs") or epochs)
    departure = schedule_departure(saved, old, epochs, done)
    if departure is None:
        return  # the schedule does not depend on the epoch count (e.g. step with explicit milestones)
    lr, kind = float(saved.get("lr", 0.1)), saved.get("schedule", "cosine")
    from .schedule import _planned

    end_lr, next_lr = lr * _planned(saved, old)(min(done, old)), lr * _planned(saved, epochs)(done)
    if done >= old:
        if int(os.environ.get("RANK", 0)) == 0 and epochs > done:
            print(f"resume: extending the finished run from {old} to {epochs} epochs; its {kind} learning-rate "
                  f"schedule ended at lr {end_lr:.3g} and is re-planned for {epochs} epochs (lr {next_lr:.3g} in "
                  f"epoch {done + 1}). For a fresh schedule instead, start a new run from its weights: nostride "
                  f"train --weights {path} --epochs N")
        return
    if int(os.environ.get("RANK", 0)) == 0:
        x, a, b = departure
        print(f"resume: --epochs {epochs} instead of {old} re-plans the {kind} learning-rate schedule: lr in epoch "
              f"{done + 1} becomes {next_lr:.3g} (planned: {lr * _planned(saved, old)(done):.3g}); the finished "
              f"epochs followed the {old}-epoch plan")


def _model_of_weights(path: str) -> tuple[str, dict[str, Any]]:
    """The model (name, keyword arguments) a nostride checkpoint given as ``weights`` describes (so
    ``--model`` may be left out)."""
    from nostride.tasks.detect.weights import yolov5_model_of
    from nostride.weights import model_spec_of_checkpoint, read_weights

    yolo = yolov5_model_of(path)  # a YOLOv5 / YOLOv5-SPD .pt names its architecture
    if yolo is not None:
        return yolo
    file = read_weights(path)
    if file.checkpoint is None:
        raise ValueError(f"{path} is a {file.kind} and does not say which model it is for: pass --model NAME "
                         "(e.g. torchvision:resnet18)")
    from nostride.checkpoint import check_architecture

    check_architecture(file.checkpoint, file.state, path)  # the declared model fits its weights (no memory used)
    return model_spec_of_checkpoint(file.checkpoint), dict(file.checkpoint.get("model_kwargs") or {})


def train(model: str | None = None, data: str | None = None, *, config: str | None = None, task: Any = None,
          hooks: Any = (), **options: Any) -> dict[str, Any]:
    """Train a model; returns the final metrics (``run_dir``, ``best_epoch``, ``best_fitness``,
    ``val`` and, when the dataset has one, ``test`` metrics of ``best.pt``).

    Args:
        model: registry name (e.g. ``"resnet18_spd"``); the task is inferred from it.
        data: dataset path (for classification: an image folder, CIFAR/Tiny-ImageNet folder or archive).
        config: a YAML options file; ``options`` override it.
        task: a custom :class:`nostride.tasks.base.Task` instance (default: built from the options).
        hooks: extra :class:`nostride.engine.hooks.Hook` objects.
        **options: any :class:`TrainConfig` field (``epochs=10, batch_size=128, resume=True, ...``).

    Defaults that depend on the task (detection's are YOLOv5's ``train.py`` and its ``scratch`` hyp file;
    ``nostride train --help`` lists them too):

    ==================  ==============  =========
    option              classification  detection
    ==================  ==============  =========
    epochs              100             300
    batch_size          64              16
    img_size            native          640
    lr                  0.1             0.01
    lrf                 0               0.1
    momentum            0.9             0.937
    nesterov            False           True
    schedule_unit       iter            epoch
    warmup_epochs       0               3
    warmup_momentum     None            0.8
    warmup_bias_lr      None            0.1
    warmup_min_iters    0               1000
    nominal_batch_size  None            64
    ema                 False           True
    patience            None            100
    ==================  ==============  =========

    Example:
        >>> import nostride
        >>> nostride.train("resnet18_cifar", "data/cifar10", epochs=30, batch_size=128)  # doctest: +SKIP
    """
    from .trainer import Trainer

    if model is not None:
        options["model"] = model
    if data is not None:
        options["data"] = data
    cfg = resolve_config(config, **options)
    if cfg.resume:
        finished = _finished_run(Path(cfg.resume), cfg.epochs)
        if finished is not None:
            return finished
    if not cfg.model and cfg.weights and task is None and not cfg.resume:
        name, kwargs = _model_of_weights(cfg.weights)
        # the checkpoint's model as it was built (width, ...); the class count comes from the data
        kwargs = {k: v for k, v in kwargs.items() if k != "num_classes" and not (k == "width" and cfg.width)}
        options = {**options, "model": name, "model_options": {**kwargs, **dict(cfg.model_options or {})}}
        cfg = resolve_config(config, **options)  # now with the model's task defaults (a detector's hyp file)
    if not cfg.model and task is None:
        raise ValueError("no model given (model=... / --model NAME)")
    if not cfg.data and task is None:
        raise ValueError("no dataset given (data=... / --data PATH)")
    return Trainer(cfg, task=task, hooks=hooks).train()
