"""The task-agnostic training loop as template steps plus hooks.

``Trainer(cfg, task).train()`` runs::

    setup()                      # devices, DDP, data, model, optimizer, EMA, resume state
    before_train (hooks)
    for epoch in range(start_epoch, epochs):
        before_epoch (hooks)
        for batch in train loader:
            before_step (hooks)  # LR schedule
            run_step(batch)      # forward, loss, backward, (accumulated) optimizer step
            after_step (hooks)   # EMA update
        after_epoch (hooks)      # validation, checkpoints, results.csv
    after_train (hooks)
    final test evaluation with best.pt

Failure behaviour: a NaN/inf loss raises :class:`NonFiniteLossError` before anything of that epoch is
saved, so ``weights/last.pt`` keeps the last good state. Ctrl-C (``KeyboardInterrupt``) also leaves
``weights/last.pt`` at the end of the last completed epoch (or the initial state, epoch -1, when none
completed, epoch 0); the partial epoch is discarded and resuming repeats it exactly.

Epochs are numbered from 1 in everything a user sees (console, checkpoints, results.csv, metrics
JSON, plots); ``self.epoch`` is the 0-based loop index.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from nostride.checkpoint import load_checkpoint, make_checkpoint, model_from_checkpoint, state_dict_mismatch

from ..safe_load import conform_state_dict
from ..utils.numbers import plural
from ..utils.paths import increment_path
from ..utils.profile import count_parameters
from . import distributed as D
from .checkpointer import (
    absolute_data_path,
    capture_rng_state,
    check_resumable,
    resolve_resume_path,
    restore_rng_state,
    to_plain,
)
from .compiling import CompileUnavailableError, check_compile_backend, compile_failure, compile_for_training
from .config import TrainConfig
from .ema import ModelEMA
from .hooks import CheckpointHook, EMAHook, EvalHook, Hook, LRScheduleHook, ResultsHook
from .loaders import close_loader, eval_loader, set_loader_epoch, train_loader
from .optim import build_optimizer
from .results import ResultsWriter
from .rundir import RunFolderLock
from ..utils.atomic import remove_stale_temp_files
from ..utils.jsonio import write_json
from .schedule import LRSchedule, milestones_beyond

__all__ = ["Trainer", "NonFiniteLossError", "CompileUnavailableError", "PeerLostError"]

PeerLostError = D.PeerLostError


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


class Trainer:
    """Trains ``task`` with the options ``cfg``.

    Args:
        cfg: the run's options; ``cfg.resume`` (a checkpoint path) continues that run.
        task: a :class:`nostride.tasks.base.Task`; default: built from ``cfg`` (task inferred from the model).
        hooks: extra hooks, run after the default ones and the task's.
    """

    def __init__(self, cfg: TrainConfig, task: Any | None = None, hooks: Iterable[Hook] = ()) -> None:
        self.cfg = cfg
        if task is None:
            from nostride.tasks import build_task

            task = build_task(cfg)
        self.task = task
        # results before checkpoints: CheckpointHook writes last.pt last, as the commit point of the epoch
        self.hooks: list[Hook] = [LRScheduleHook(), EMAHook(), EvalHook(), ResultsHook(), CheckpointHook()]
        self.hooks += list(task.hooks()) + list(hooks)
        self.epoch = self.iter = self.batch_index = 0
        self.start_epoch = 0
        self.stepped = False
        self.metrics: dict[str, Any] = {}
        self.fitness: float | None = None
        self.best_fitness: float | None = None
        self.best_epoch = 0  # 1-based; 0 = none yet
        self.last_saved_epoch = 0  # epochs finished in the state weights/last.pt holds
        self.train_items: dict[str, float] = {}
        self.results: ResultsWriter | None = None
        self._run_lock: RunFolderLock | None = None
        self.final_metrics: dict[str, Any] = {}

    # ------------------------------------------------------------------ set-up
    def log(self, msg: str, always: bool = False) -> None:
        """Print on rank 0 (``--quiet`` keeps only the ``always`` messages)."""
        if self.info.is_main and (always or not self.cfg.quiet):
            print(msg, flush=True)

    def setup(self) -> None:
        cfg = self.cfg
        self.info = D.dist_info()
        self.device = D.select_device(cfg.device, self.info.local_rank)
        self._owns_process_group = self.info.distributed and not D.is_dist()
        if cfg.compile:
            check_compile_backend(self.device)  # before any folder or data work: one clear line
        D.setup_distributed(self.info, self.device)
        if cfg.batch_size % self.info.world_size:
            raise ValueError(f"batch_size {cfg.batch_size} must be a multiple of the {self.info.world_size} processes "
                             "(--batch-size is the total over all processes)")
        self.batch_per_rank = cfg.batch_size // self.info.world_size
        D.configure_determinism(cfg.deterministic)
        D.seed_everything(cfg.seed + self.info.rank)  # per-rank seeds: different augmentations per rank
        self.amp = self.device.type == "cuda" and cfg.amp is not False
        if cfg.amp and self.device.type != "cuda":
            self.log(f"amp: mixed precision needs CUDA; training in float32 on {self.device}", always=True)

        resume_ckpt = None
        if cfg.resume:
            cfg.resume = str(resolve_resume_path(cfg.resume, cfg.project, cfg.name))
            self._lock_run_dir(Path(cfg.resume).resolve().parent.parent)  # before reading: one process per run
            resume_ckpt = load_checkpoint(cfg.resume)
            check_resumable(resume_ckpt, cfg.resume)
        cfg.data = absolute_data_path(cfg.data)  # recorded absolute: resume / val from any folder

        splits = self.task.build_datasets()
        self.splits = splits
        model = self.task.build_model().to(self.device)
        # the run folder only now, so bad data or model options leave no empty folder behind
        self.run_dir = Path(cfg.resume).resolve().parent.parent if cfg.resume else self._make_run_dir()
        self._lock_run_dir(self.run_dir)
        self.weights_dir = self.run_dir / "weights"
        self.last_path, self.best_path = self.weights_dir / "last.pt", self.weights_dir / "best.pt"
        if self.info.is_main:
            stale = remove_stale_temp_files(self.weights_dir)  # left by a writer that was killed
            if stale:
                self.log(f"removed {plural(len(stale), 'incomplete checkpoint file')} of an interrupted write "
                         f"({stale[0].name}{', ...' if len(stale) > 1 else ''})")
        if cfg.spd_form != "spd":
            from nostride.models import set_spd_form

            sites = set_spd_form(model, cfg.spd_form)  # same parameters and state dict, other computation
            self.log(f"spd_form {cfg.spd_form}: {plural(sites, 'space-to-depth layer')} computed as strided convolutions"
                     if sites else f"spd_form {cfg.spd_form}: {cfg.model} has no SPD-Conv layer to compute that way")
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model  # the unwrapped model (checkpoints, EMA); self.train_model may be DDP

        # optimizer hyper-parameters, with YOLOv5's nominal batch size rule when asked for
        wd = cfg.weight_decay
        self.accumulate = cfg.accumulate
        if cfg.nominal_batch_size:
            self.accumulate = max(round(cfg.nominal_batch_size / cfg.batch_size), 1)
            wd *= cfg.batch_size * self.accumulate / cfg.nominal_batch_size
        self.optimizer = build_optimizer(model, cfg.optimizer, cfg.lr, cfg.momentum, wd, cfg.nesterov,
                                         cfg.decay_norm_bias)
        if cfg.sync_bn and self.info.distributed:
            if self.device.type == "cuda":
                model = self.model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # parameters are shared
            else:
                self.log(f"sync_bn: SyncBatchNorm needs CUDA; keeping per-process BatchNorm on {self.device}",
                         always=True)
        self.ema = ModelEMA(model, cfg.ema_decay, cfg.ema_tau) if cfg.ema else None
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp)

        pin = self.device.type == "cuda"
        own = getattr(self.task, "train_loader", None)
        own = own(splits.train, self.batch_per_rank, cfg.workers, self.info, cfg.seed, pin) if own else None
        self.train_loader = own if own is not None else train_loader(
            splits.train, self.batch_per_rank, cfg.workers, self.info, cfg.seed, self.task.collate_fn, pin_memory=pin)
        if len(self.train_loader) == 0:
            raise ValueError(f"{cfg.data}: the training set is empty")
        self.val_loader = self._eval_loader(splits.val)
        self.test_loader = self._eval_loader(splits.test)
        nb = len(self.train_loader)
        warmup = cfg.warmup_iters if cfg.warmup_iters is not None else \
            max(round(cfg.warmup_epochs * nb), cfg.warmup_min_iters if cfg.warmup_epochs > 0 else 0)
        self.scheduler = LRSchedule(
            self.optimizer, lr=cfg.lr, momentum=cfg.momentum, iters_per_epoch=nb, epochs=cfg.epochs,
            kind=cfg.schedule, unit=cfg.schedule_unit, lrf=cfg.lrf, milestones=cfg.milestones, gamma=cfg.gamma,
            warmup_iters=warmup, warmup_momentum=cfg.warmup_momentum, warmup_bias_lr=cfg.warmup_bias_lr)

        beyond = milestones_beyond(self.scheduler.milestones, cfg.epochs) if cfg.schedule == "step" else []
        if beyond:
            self.log(f"schedule: step {'milestone' if len(beyond) == 1 else 'milestones'} "
                     f"{', '.join(f'{m:g}' for m in beyond)} at or after the last "
                     f"epoch ({cfg.epochs}), so the lr never decays there; give --milestones below {cfg.epochs} "
                     "(or none: 50% and 75% of the epochs)", always=True)
        if resume_ckpt is not None:
            self._load_resume_state(resume_ckpt)
            self._reconcile_best()
        self.train_model: nn.Module = model
        if self.info.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        if cfg.compile:
            # compile the DDP wrapper, not the inner module: PyTorch's DDP + torch.compile guidance
            # (torch.compile(DDP(model))) lets dynamo's DDPOptimizer split the graph at DDP's gradient
            # buckets, so all-reduce still overlaps the backward pass. self.model stays the plain
            # module: EMA, checkpoints (no "_orig_mod." keys) and validation never see the compiled one.
            self.train_model = compile_for_training(self.train_model, self.device)
        if self.info.is_main:
            from .config import save_config

            save_config(cfg, self.run_dir / "args.yaml")
            layout = dict(getattr(self.task, "results_layout", lambda: {})())  # e.g. detection: YOLOv5's
            self.results = ResultsWriter(self.run_dir, cfg.tensorboard,
                                         resume_epoch=self.start_epoch if resume_ckpt is not None else None,
                                         history=(resume_ckpt or {}).get("results"), **layout)
            if self.results.note:
                self.log(f"resume: {self.results.note}", always=True)
        n_val = len(splits.val) if splits.val is not None else 0
        so_far = " so far" if splits.count_skipped is not None else ""  # lazily decoded data: found while reading
        skipped = f" ({plural(splits.skipped, 'unreadable file')} skipped{so_far})" if splits.skipped else ""
        self.log(f"{cfg.model}: {count_parameters(model):,} parameters on {self.device}"
                 f"{f' x {self.info.world_size} processes' if self.info.distributed else ''}; "
                 f"{len(splits.train)} train / {n_val} val images{skipped}; run dir {self.run_dir}")

    def _lock_run_dir(self, folder: Path) -> None:
        """Rank 0 takes the run folder's lock (:class:`RunFolderLock`) for the rest of the run."""
        if not self.info.is_main or (self._run_lock is not None and self._run_lock.folder == folder):
            return
        self._run_lock = RunFolderLock(folder).acquire()
        if self._run_lock.stale:
            self.log(f"{folder}: took over the lock of {self._run_lock.stale}, which no longer runs")

    def release(self) -> None:
        """Give back what the run holds (the training loader's worker processes, the run folder's
        lock); :meth:`train` does it at its end."""
        close_loader(getattr(self, "train_loader", None))
        if self._run_lock is not None:
            self._run_lock.release()
            self._run_lock = None

    def _eval_loader(self, dataset: Any):
        if dataset is None or len(dataset) == 0:
            return None
        pin = self.device.type == "cuda"
        own = getattr(self.task, "eval_loader", None)
        own = own(dataset, self.batch_per_rank, self.cfg.workers, self.info, pin) if own else None
        return own if own is not None else eval_loader(dataset, self.batch_per_rank, self.cfg.workers, self.info,
                                                       self.task.collate_fn, pin_memory=pin)

    def _make_run_dir(self) -> Path:
        # rank 0 picks the folder (RUN, RUN2, ...) and tells the others
        path = [None]
        if self.info.is_main:
            path[0] = str(increment_path(Path(self.cfg.project) / self.cfg.name, self.cfg.exist_ok))
        if D.is_dist():
            torch.distributed.broadcast_object_list(path, src=0)
        return Path(path[0])

    def _load_resume_state(self, ckpt: dict[str, Any]) -> None:
        differ = state_dict_mismatch(self.model.state_dict(), ckpt["model"])
        if differ:  # a hand-edited or mixed-up file: one line, not load_state_dict's traceback
            raise ValueError(f"{self.cfg.resume}: its weights do not fit the model its options build "
                             f"({self.cfg.model}): {differ}")
        state, notes = conform_state_dict(self.model.state_dict(), ckpt["model"], self.cfg.resume)
        if notes:
            self.log(f"resume: {'; '.join(notes)}", always=True)
        self.model.load_state_dict(state)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.ema is not None:
            if ckpt.get("ema") is None:
                raise ValueError(f"{self.cfg.resume}: checkpoint has no EMA weights but the run uses --ema")
            self.ema.load_state_dict(ckpt["ema"], ckpt.get("ema_updates", 0))
        self.start_epoch = int(ckpt["epoch"])  # epochs finished = 0-based index of the next one
        self.last_saved_epoch = self.start_epoch
        self.best_fitness = ckpt.get("best_fitness")
        self.best_epoch = int(ckpt.get("best_epoch", 0))
        self.metrics = dict(ckpt.get("metrics") or {})
        ranks = ckpt.get("rng_ranks") or []
        if len(ranks) == self.info.world_size:
            self._resume_rng = ranks[self.info.rank]
        else:  # another world size: rank 0 continues the saved stream, the others keep seed + rank
            self._resume_rng = ckpt.get("rng") if self.info.is_main else None
        if self.start_epoch >= self.cfg.epochs:
            self.log(f"resume: {self.cfg.resume} already finished {self.start_epoch} of {self.cfg.epochs} epochs "
                     "but not its final evaluation: evaluating best.pt", always=True)
        else:
            self.log(f"resuming {self.cfg.resume} from epoch {self.start_epoch + 1}/{self.cfg.epochs}")

    def _reconcile_best(self) -> None:
        """Take best epoch and fitness from ``best.pt`` itself when ``last.pt`` says otherwise.

        ``best.pt`` is written just before ``last.pt``; a kill between the two leaves a ``best.pt``
        of the epoch being repeated now (kept: it is a real, evaluated model; that epoch replaces
        it again if it is at least as good). A ``best.pt`` older than ``last.pt`` records (files of
        older versions wrote ``last.pt`` first) is described as what it is.
        """
        record = None
        if self.info.is_main and self.best_path.is_file():
            try:
                best = load_checkpoint(self.best_path)
                record = (int(best.get("epoch", 0)), best.get("best_fitness"))
            except (ValueError, OSError) as e:
                self.log(f"warning: {e}; it is rewritten at the next best epoch", always=True)
        record = D.all_gather_object(record)[0]  # rank 0's view, on every rank
        if record is None or record == (self.best_epoch, self.best_fitness):
            return
        epoch, fitness = record
        self.log(f"resume: best.pt holds epoch {epoch} (fitness {fitness}), last.pt recorded epoch "
                 f"{self.best_epoch} (an interrupted write); continuing from what best.pt holds", always=True)
        self.best_epoch, self.best_fitness = epoch, fitness

    # --------------------------------------------------------------- checkpoints
    def checkpoint(self, epoch: int, rng_ranks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The full training state after ``epoch`` finished epochs (1-based; 0 = before training) as a plain dict.

        ``rng_ranks``: every DDP rank's RNG state (rank order), so each rank resumes its own stream.
        """
        return make_checkpoint(
            self.model, self.task.names, epoch=epoch,
            ema=self.ema.state_dict() if self.ema is not None else None,
            ema_updates=self.ema.updates if self.ema is not None else 0,
            optimizer=self.optimizer.state_dict(), scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict(), best_fitness=self.best_fitness, best_epoch=self.best_epoch,
            metrics=to_plain({k: v for k, v in self.metrics.items() if _is_scalar(v)}),
            config=self.cfg.to_dict(), rng=capture_rng_state(), rng_ranks=rng_ranks or [],
            results=[dict(r) for r in self.results.rows] if self.results is not None else [],  # rebuilds results.csv
            **dict(getattr(self.task, "checkpoint_extra", lambda: {})()),
        )

    # -------------------------------------------------------------------- loop
    def _call(self, stage: str) -> None:
        for h in self.hooks:
            getattr(h, stage)(self)

    def train(self) -> dict[str, Any]:
        """Run the whole training; returns the final metrics (see :attr:`final_metrics`)."""
        try:
            self.setup()
        except BaseException:
            self.release()
            raise
        try:
            self._call("before_train")
            if getattr(self, "_resume_rng", None) is not None:
                restore_rng_state(self._resume_rng)  # after every RNG use of set-up: exact continuation
            for self.epoch in range(self.start_epoch, self.cfg.epochs):
                self._epoch_start = time.time()
                self._call("before_epoch")
                self.train_one_epoch()
                self._call("after_epoch")
                self.log(self._epoch_line())
                if self._patience_exceeded():
                    break
            close_loader(self.train_loader)  # its workers are not needed for the final evaluation
            self._call("after_train")
            self.final_metrics = self.final_evaluation()
            D.barrier()  # no rank leaves (and tears the group down) while another still works
            return self.final_metrics
        except KeyboardInterrupt:
            self.log(f"\ninterrupted during epoch {self.epoch + 1}: {self.last_path} holds {self._saved_state()}; "
                     f"continue with:\n  {self._resume_command()}", always=True)
            raise
        except RuntimeError as e:
            if not (self.info.distributed and D.lost_peer(e)):
                raise
            raise D.PeerLostError(
                f"rank {self.info.rank}: another process of this run stopped during epoch {self.epoch + 1} (the "
                f"launcher's report names it and why); {self.last_path} holds {self._saved_state()}; continue "
                f"with: {self._resume_command()}") from e
        finally:
            if self.results is not None:
                self.results.close()
            self.release()
            if getattr(self, "_owns_process_group", False):
                D.cleanup_distributed()

    def _patience_exceeded(self) -> bool:
        """Early stop: ``patience`` epochs passed since the best fitness (same answer on every rank)."""
        p = self.cfg.patience
        if p is None or self.best_fitness is None or self.epoch + 1 - self.best_epoch < p:
            return False
        self.log(f"early stop: no better fitness for {p} epochs (best {self.best_fitness:.4g} at epoch "
                 f"{self.best_epoch}); best.pt holds it", always=True)
        return True

    def _resume_command(self) -> str:
        if not self.info.distributed:
            return f"nostride train --resume {self.last_path}"
        return f"torchrun --nproc_per_node {self.info.world_size} -m nostride train --resume {self.last_path}"

    def _saved_state(self) -> str:
        e = self.last_saved_epoch
        return f"the state after epoch {e}" if e >= 1 else "the initial state (no epoch completed)"

    def train_one_epoch(self) -> None:
        self.train_model.train()
        set_loader_epoch(self.train_loader, self.epoch, self.cfg.seed, self.info.rank)
        nb = len(self.train_loader)
        sums: dict[str, float] = {}
        self._since_step = 0
        self._t0 = time.time()
        bar = self._progress(self.train_loader, nb)
        for self.batch_index, batch in enumerate(bar):
            self.iter = self.epoch * nb + self.batch_index
            self.batch = batch  # as the loader gave it (hooks may inspect it)
            self._call("before_step")
            items = self.run_step(batch, last=self.batch_index == nb - 1)
            for k, v in items.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            self._call("after_step")
            if hasattr(bar, "set_postfix_str"):
                extra = getattr(self.task, "progress", lambda b: "")(batch)
                bar.set_postfix_str("  ".join(f"{k} {v / (self.batch_index + 1):.4g}" for k, v in sums.items())
                                    + (f"  {extra}" if extra else ""))
        # epoch means, averaged over ranks
        keys = sorted(sums)
        t = D.all_reduce_sum(torch.tensor([sums[k] / nb for k in keys], dtype=torch.float64, device=self.device))
        self.train_items = {k: float(v) / self.info.world_size for k, v in zip(keys, t.tolist())}
        self.train_time = time.time() - self._t0

    def accumulate_at(self, iteration: int) -> int:
        """Batches per optimizer step; with ``nominal_batch_size`` it ramps from 1 during warm-up (YOLOv5)."""
        nw = self.scheduler.warmup_iters
        if self.cfg.nominal_batch_size and iteration < nw:
            target = self.cfg.nominal_batch_size / self.cfg.batch_size
            return max(1, round(1 + (target - 1) * iteration / nw))
        return self.accumulate

    def run_step(self, batch: Any, last: bool = False) -> dict[str, float]:
        """Forward + backward of one batch; an optimizer step every ``accumulate`` batches (and at the
        epoch's end, so no gradient crosses a checkpoint). Returns the task's loss items."""
        batch = self.task.preprocess(batch, self.device, self.cfg.channels_last)
        acc = self.accumulate_at(self.iter)
        self._since_step += 1
        will_step = self._since_step >= acc or last
        sync = will_step or not self.info.distributed
        ctx = self.train_model.no_sync() if not sync else contextlib.nullcontext()
        with ctx:
            with torch.autocast(self.device.type, enabled=self.amp):
                try:
                    loss, items = self.task.loss(self.train_model, batch)
                except Exception as e:
                    failure = compile_failure(e) if self.cfg.compile else None
                    if failure is not None:
                        raise failure from e
                    raise
            self._check_finite(loss)
            if self.task.loss_reduction == "sum":
                loss = loss * self.info.world_size  # DDP averages gradients; YOLOv5 wants the sum
            else:
                loss = loss / acc
            self.scaler.scale(loss).backward()
        self.stepped = will_step
        if will_step:
            if self.cfg.clip_grad:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_grad)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self._since_step = 0
        return items

    def _check_finite(self, loss: torch.Tensor) -> None:
        bad = (~torch.isfinite(loss.detach())).any().to(torch.float32).reshape(1)
        if self.info.distributed:  # every rank stops together, so none hangs in an all-reduce
            bad = D.all_reduce_sum(bad)
        if bad.item() > 0:
            nb = len(self.train_loader)
            value = loss.detach().float().sum().item()
            raise NonFiniteLossError(
                f"training loss is {value if not self.info.distributed else 'NaN/inf on some rank'} "
                f"at epoch {self.epoch + 1}/{self.cfg.epochs}, iteration {self.batch_index + 1}/{nb}; stopped. "
                f"{self.last_path} ({self._saved_state()}) is the last good checkpoint; nothing of this epoch "
                "was saved. Try a lower --lr, --clip-grad, or --no-amp.")

    # -------------------------------------------------------------- evaluation
    def eval_model(self) -> nn.Module:
        """The model validation and best-selection use: the EMA when enabled."""
        return self.ema.module if self.ema is not None else self.model

    @torch.no_grad()
    def evaluate(self, loader, model: nn.Module | None = None) -> dict[str, Any]:
        """Run the task's evaluator over ``loader`` (this rank's shard; the evaluator reduces over ranks)."""
        model = model if model is not None else self.eval_model()
        was_training = model.training
        model.eval()
        evaluator = self.task.build_evaluator()
        evaluator.reset()
        for batch in loader:
            batch = self.task.preprocess(batch, self.device, self.cfg.channels_last)
            with torch.autocast(self.device.type, enabled=self.amp):
                self.task.eval_step(model, batch, evaluator)
        model.train(was_training)
        return evaluator.evaluate()

    @property
    def epoch_time(self) -> float:
        """Seconds of the epoch so far: training, validation and what came between (plots, EMA sync)."""
        return time.time() - getattr(self, "_epoch_start", getattr(self, "_t0", time.time()))

    @property
    def val_time(self) -> float:
        """Seconds the last validation took (0 without a validation split)."""
        return float(getattr(self, "_val_time", 0.0))

    def results_row(self) -> dict[str, Any]:
        """The epoch's results.csv row: the task's own layout (``task.results_row(trainer)``) when it
        has one, else ``epoch``, ``lr``, ``train/<item>``, ``val/<metric>``, ``fitness``; then the
        epoch's ``time`` (all of it, validation included) and its ``time/train`` and ``time/val`` parts."""
        own = getattr(self.task, "results_row", None)
        row = own(self) if own is not None else None
        if row is None:
            lrs = {g.get("group", str(i)): g["lr"] for i, g in enumerate(self.optimizer.param_groups)}
            row = {"epoch": self.epoch + 1, "lr": lrs.get("decay", next(iter(lrs.values())))}
            row.update({f"train/{k}": v for k, v in self.train_items.items()})
            row.update({f"val/{k}": float(v) for k, v in self.metrics.items() if _is_scalar(v)})
            if self.fitness is not None:
                row["fitness"] = self.fitness
        row["time"] = round(self.epoch_time, 2)
        row["time/train"] = round(self.train_time, 2)
        row["time/val"] = round(self.val_time, 2)
        return row

    def _epoch_line(self) -> str:
        train = "  ".join(f"{k} {v:.4g}" for k, v in self.train_items.items())
        val = self.task.summary(self.metrics) if self.metrics else "no validation split"
        parts = f"train {self.train_time:.1f} s + val {self.val_time:.1f} s" if self.metrics else \
            f"train {self.train_time:.1f} s"
        return (f"epoch {self.epoch + 1}/{self.cfg.epochs}  train {train}  |  val {val}  "
                f"({self.epoch_time:.1f} s: {parts})")

    def final_evaluation(self) -> dict[str, Any]:
        """Best-epoch validation metrics, plus the test split (evaluated only now, with best.pt)."""
        result: dict[str, Any] = {"run_dir": str(self.run_dir), "best_epoch": self.best_epoch,
                                  "best_fitness": self.best_fitness, "val": to_plain(self.metrics)}
        best = self.best_model() if self.val_loader is not None or self.test_loader is not None else None
        if best is not None:
            if self.val_loader is not None:
                result["val"] = to_plain(self.evaluate(self.val_loader, best))
            if self.test_loader is not None:
                result["test"] = to_plain(self.evaluate(self.test_loader, best))
                self.log(f"test (best.pt, epoch {self.best_epoch}): {self.task.summary(result['test'])}",
                         always=True)
        # every split has now been read in full: the count of unreadable input files is exact
        result["skipped"] = self.splits.skipped_over_ranks(D.all_gather_object if self.info.distributed else None)
        if result["skipped"]:
            self.log(f"warning: {plural(result['skipped'], 'unreadable input file')} skipped in all (named in "
                     "the warnings above)", always=True)
        report = getattr(self.task, "final_report", None)  # e.g. detection's pycocotools summary
        if report is not None:
            report(self, result)
        if self.info.is_main:
            from ..utils.numbers import round_floats

            write_json(self.run_dir / "final_metrics.json", round_floats(result), indent=2)  # NaN as null, listed
            self.log(f"done: {self.run_dir} (best.pt from epoch {self.best_epoch}"
                     f"{f', fitness {self.best_fitness:.4g}' if self.best_fitness is not None else ''})", always=True)
        return result

    def best_model(self) -> nn.Module | None:
        """``best.pt``'s model on this rank's device, the same on every rank; ``None`` when the run has none.

        Rank 0 reads the file and sends it to the other ranks, so every rank takes the same branch
        (a rank that looked for the file itself could miss it while rank 0 still writes it, skip an
        evaluation, and leave the others waiting in its collectives), also without a shared file
        system. Kept for the next call of the same best epoch (the final validation, test and COCO
        evaluations all use it).
        """
        cached = getattr(self, "_best_model", None)
        if cached is not None and cached[0] == self.best_epoch:
            return cached[1]
        payload: tuple[str, Any] | None = None
        if self.info.is_main and self.best_path.is_file():
            try:
                payload = ("checkpoint", load_checkpoint(self.best_path))  # on the CPU: any rank can take it
            except (ValueError, OSError) as e:
                payload = ("error", str(e))
        payload = D.broadcast_object(payload)
        if payload is None:
            return None
        if payload[0] == "error":
            raise ValueError(payload[1])
        model = model_from_checkpoint(payload[1]).to(self.device)
        self._best_model = (self.best_epoch, model)
        return model

    def _progress(self, loader, total: int):
        from ..utils.progress import progress

        # a bar on a terminal, a line every NOSTRIDE_LOG_INTERVAL seconds when redirected
        return progress(loader, total=total, desc=f"epoch {self.epoch + 1}/{self.cfg.epochs}", unit="batch",
                        disable=self.cfg.quiet or not self.info.is_main)


def _is_scalar(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)
