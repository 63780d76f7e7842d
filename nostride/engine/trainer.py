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

The set-up and the loop are here; the run folder, checkpoints and resume state are in
:mod:`.resume`, the validation and final evaluation in :mod:`.evaluation`, console lines, epoch
times and results rows in :mod:`.reporting` (parts of :class:`Trainer` as mixins).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from nostride.checkpoint import load_checkpoint

from ..utils.atomic import remove_stale_temp_files
from ..utils.device import amp_policy
from ..utils.numbers import plural
from ..utils.profile import count_parameters
from . import distributed as D
from .checkpointer import absolute_data_path, check_resumable, resolve_resume_path, restore_rng_state
from .compiling import CompileUnavailableError, check_compile_backend, compile_failure, compile_for_training
from .config import TrainConfig
from .ema import ModelEMA
from .evaluation import EvaluationMixin
from .hooks import CheckpointHook, EMAHook, EvalHook, Hook, LRScheduleHook, ResultsHook
from .loaders import close_loader, set_loader_epoch, train_loader
from .optim import build_optimizer
from .reporting import ReportingMixin
from .results import ResultsWriter
from .resume import RunStateMixin
from .rundir import RunFolderLock
from .schedule import LRSchedule, milestones_beyond

__all__ = ["Trainer", "NonFiniteLossError", "CompileUnavailableError", "PeerLostError"]

PeerLostError = D.PeerLostError


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


class Trainer(RunStateMixin, EvaluationMixin, ReportingMixin):
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
        self.amp, self.amp_dtype = amp_policy(self.device, cfg.amp)
        if cfg.amp and not self.amp:
            self.log(f"amp: mixed precision needs CUDA or a CPU; training in float32 on {self.device}", always=True)

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
        # float16 needs loss scaling; bfloat16 (CPU) has float32's exponent range and does not
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp and self.amp_dtype == torch.float16)

        pin = self.device.type == "cuda"
        own = getattr(self.task, "train_loader", None)
        own = own(splits.train, self.batch_per_rank, cfg.workers, self.info, cfg.seed, pin) if own else None
        self.train_loader = own if own is not None else train_loader(
            splits.train, self.batch_per_rank, cfg.workers, self.info, cfg.seed, self.task.collate_fn, pin_memory=pin)
        if len(self.train_loader) == 0:
            raise ValueError(f"{cfg.data}: the training set is empty")
        self.val_loader = self._eval_loader(splits.val, persistent=True)
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
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
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
