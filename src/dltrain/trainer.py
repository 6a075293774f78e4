"""The training loop: fit → (train epoch → validate → callbacks)* → test. Read it top to bottom.

A run's parts come from `build.build_run`, one optimizer step is `step.py`, checkpoints are `checkpoint.py`'s
format, continuing a run is `resume.py`'s decision. Callbacks observe and answer with values (extra metrics, a
reason to stop, result fields): they never change the maths of a step, and their order does not matter."""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from types import MappingProxyType

import torch
from omegaconf import DictConfig

from dltrain import callbacks as cb
from dltrain import checkpoint, distributed, final_test, resume
from dltrain.batch_size import fit_batch_size
from dltrain.build import build_run, pick_device, wrap
from dltrain.checkpoint import RunState
from dltrain.data import cache as data_cache
from dltrain.errors import Diverged, Interrupted, Pruned
from dltrain.runinfo import library_versions, seed_everything, write_result
from dltrain.shape_errors import explain_first_forward
from dltrain.signals import StopSignals
from dltrain.step import OptimizerStep
from dltrain.steplog import StepLog

log = logging.getLogger("dltrain")


class Trainer:
    """`Trainer(cfg).fit()` trains and returns the run's result (metrics.json). Its parts are public too, for
    tools that time the loop itself (scripts/bench.py): begin() → train_epoch(max_batches)… → finish(), with
    `callbacks` a list that may change between epochs."""

    def __init__(self, cfg: DictConfig, overrides: list[str] | None = None, callbacks=None):
        self.cfg = cfg
        self.t = cfg.trainer
        self.out_dir = Path(cfg.paths.output_dir)
        self.overrides = list(overrides or [])
        self.device = pick_device(self.t.accelerator, self.t.devices)
        self.dist = distributed.DistEnv()
        self.state = RunState()
        self.signals = StopSignals()  # installed while fit runs
        self.started = time.perf_counter()
        self.step_lrs: list[float] | None = None  # the rates of the last step, under a per-step schedule
        self.best_copy: dict | None = None        # the best epoch's weights (final_test.py)
        self.tested_with: str | None = None       # "best" or "last": whose weights test/* are
        self.callbacks = callbacks if callbacks is not None else cb.default_callbacks(cfg, distributed.env_rank() == 0)

    # -- set-up ---------------------------------------------------------------------------------------
    def setup(self) -> None:
        cfg, t = self.cfg, self.t
        if t.strategy == "ddp":
            self.dist, self.device = distributed.setup(self.device.type)
        elif self.device.type == "cuda":
            torch.cuda.set_device(self.device)  # code that uses "the current GPU" uses this job's (parallel sweeps)
        seed_everything(cfg.seed, deterministic=t.deterministic)
        # model, data, optimizer, schedule, loss_fn, metric_fns, length, ema, memory_estimate: the run's parts
        vars(self).update(vars(build_run(cfg, self.device, self.dist.rank, self.dist.world_size)))
        self.net = wrap(self.model, t, self.device, log.warning)
        self.step_fn = OptimizerStep(cfg, self.model, self.net, self.optimizer, self.loss_fn, self.device,
                                     self.state)
        self.scaler, self.autocast, self.to_input = self.step_fn.scaler, self.step_fn.autocast, self.step_fn.to_input
        # Plain copies of what the loop and the callbacks read (OmegaConf attribute access costs microseconds).
        self.log_every, self.checkpoint_every = t.log_every_n_steps, t.checkpoint_every_n_steps or 0
        n, self.accumulate = self.length, t.accumulate_grad_batches
        self.train_batches, self.val_batches, self.steps_per_epoch = n.train_batches, n.val_batches, n.steps_per_epoch
        self.max_epochs, self.max_steps = n.epochs, n.max_steps

    # -- the loop -------------------------------------------------------------------------------------
    def fit(self) -> dict:
        """Train, validate after every epoch, test; returns the result that metrics.json holds."""
        self.started = time.perf_counter()
        resume_from = resume.open_run(self)  # before writing: never into another run's dir; resume: last.pt
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.signals.install()  # SIGTERM/SIGINT/SIGUSR1: finish the step, write last.pt, stop (signals.py)
        self.fire("setup")      # train.log opens before set-up, so that set-up failures are recorded in it
        try:
            self.begin(resume_from)
            while self.state.epoch < self.max_epochs and self.state.step < self.max_steps:
                if self.run_epoch():
                    break
            self.conclude()
        except (Diverged, Pruned) as e:  # results: a NaN/inf loss, or the search's pruner (callbacks/pruning.py)
            self.state.status = "diverged" if isinstance(e, Diverged) else "pruned"
            log.warning("run %s: %s", self.state.status, e)
        except Interrupted as e:
            self.record_interruption(e)
            raise
        except KeyboardInterrupt:
            self.state.status = "interrupted"
            raise
        except Exception as e:
            self.state.status = "failed"  # RunLog puts the error and its traceback in train.log, the CLI one line
            explained = explain_first_forward(self, e)  # a data/model shape mismatch, named (shape_errors.py)
            self.fire("on_exception", explained)
            if explained is not e:
                raise explained from e
            raise
        finally:
            self.signals.restore()
            result = self.finish()
        return result

    def record_interruption(self, e: Interrupted) -> None:
        """A stop signal after a finished step: status interrupted and last.pt, or diverged (nothing saved) when
        the weights are not finite. The fused launcher (dltrain/fused/) calls it for each member."""
        self.state.status = "interrupted"
        log.warning("run interrupted: %s", e)
        try:
            self.check_finite()  # the step in flight has finished; a finite model is worth keeping
            self.fire("on_exception", e)  # Checkpoint writes last.pt
        except Diverged as d:
            self.state.status = "diverged"
            log.warning("not saving the interrupted run: %s", d)

    def conclude(self) -> None:
        """The run trained to its end (or stopped early): its status and the test metrics."""
        self.state.status = "stopped_early" if self.state.stop_reason == "early_stopping" else "completed"
        # trainer.test_checkpoint's weights (best.pt's by default) and, with EMA, its EMA weights
        self.state.test, self.tested_with = final_test.run_test(self)
        self.log(self.state.test, self.state.epoch)

    def begin(self, resume_from: dict | None = None) -> None:
        """Build the run, put a resumed one back where it stopped, start the callbacks."""
        fit_batch_size(self)  # trainer.auto_batch_size: the largest batch that fits on the GPU
        self.setup()
        if resume_from is not None:  # model, optimizer, scheduler, scaler, EMA, callbacks, progress
            resume.continue_from(self, resume_from)
        self.fire("on_fit_start")
        checkpoint.restore_rng(resume_from)  # last: the continuation draws the numbers the straight run would
        log.info("data: %s", data_cache.last_load_note())  # after on_fit_start, so train.log has it

    def finish(self) -> dict:
        """The result, to the callbacks and (rank 0) into metrics.json."""
        self.wall_s = time.perf_counter() - self.started
        result = self.result()
        self.fire("on_fit_end", result)
        if self.dist.is_main:
            write_result(self.out_dir, result)  # a failed resume keeps a finished run's result
        distributed.cleanup()
        return result

    def run_epoch(self) -> bool:
        """Train one epoch, validate, let the callbacks see it; True when the run is to stop."""
        epoch_start = time.perf_counter()
        seen = self.train_epoch()
        return self.end_epoch(seen, time.perf_counter() - epoch_start)

    def end_epoch(self, seen: int, elapsed: float) -> bool:
        """After an epoch's training (`seen` samples in `elapsed` s): validate, log, let the callbacks see it;
        True when the run is to stop. The fused launcher (dltrain/fused/) calls it for each member."""
        # trainer.max_steps may end the run inside an epoch: that epoch is not over, and a resume with a raised
        # max_steps continues it where it stopped, as the run never stopped would. Its last.pt is written first,
        # so what is logged below (its validation) is a report of this run, cut back on resume like any row
        # after a checkpoint; best, early stopping and epoch schedules count whole epochs only.
        partial = self.state.batch > 0
        if partial:
            self.check_finite()
            for hook in self.hooks("on_checkpoint_due"):
                hook(self)
        else:
            self.state.epoch += 1
        metrics = {}
        last = self.state.epoch >= self.max_epochs or self.state.step >= self.max_steps
        if last or self.state.epoch % self.t.val_every_n_epochs == 0:  # trainer.val_every_n_epochs, and the last
            metrics = self.evaluate(self.data.val, "val", self.val_batches)
            for hook in self.hooks("on_validate"):  # e.g. the EMA weights' val_ema/*
                metrics.update(hook(self) or {})
        metrics["time/epoch_s"] = elapsed
        metrics["throughput/samples_per_s"] = seen * self.dist.world_size / elapsed
        if self.device.type == "cuda":
            metrics["memory/peak_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        schedule = self.schedule  # per epoch; one that watches a validation metric, when there is one
        if schedule is not None and schedule.interval == "epoch" and schedule.monitor in (None, *metrics) and not partial:
            schedule.step(metrics)
        self.log(metrics, self.state.epoch + partial)
        if partial:
            return True
        self.update_best(metrics)
        final_test.keep_if_best(self)  # the weights test/* will use (trainer.test_checkpoint=best)
        self.check_finite()  # before any checkpoint of this epoch is written
        view = MappingProxyType(metrics)  # callbacks read, never write; they may answer with a reason to stop
        if reasons := [reason for hook in self.hooks("on_epoch_end") if (reason := hook(self, view))]:
            self.state.stop_reason = reasons[0]
            return True
        received = self.signals.received  # a signal during validation: last.pt is current, stop
        received = distributed.agree_on_stop(received) if self.dist.enabled else received
        if received:
            raise Interrupted(received, self.state.step)
        return False

    def train_epoch(self, max_batches: int | None = None) -> int:
        """One pass over the training batches (the rest of one after a mid-epoch resume); returns how many
        samples it saw. `max_batches` shortens it (default: the run's batches per epoch)."""
        state, accumulate, every = self.state, self.accumulate, self.checkpoint_every
        self.net.train()  # the wrappers (DDP, compile) too, not only the module
        start = state.batch  # batches done before a resume: skipped, not even gathered
        self.data.train.set_epoch(state.epoch, start_batch=start)
        pending = StepLog()
        # Per-epoch constants in locals: on a GPU the loop's Python is the step's cost for small models, and
        # attribute chains, property and method look-ups add up over thousands of steps.
        on_step_start, on_step_end = self.hooks("on_train_step_start"), self.hooks("on_train_step_end")
        on_checkpoint = self.hooks("on_checkpoint_due")
        per_step_schedule = self.schedule if self.schedule is not None and self.schedule.interval == "step" else None
        param_groups = self.optimizer.param_groups
        ranks_agree = self.dist.enabled
        optimizer_step, poll, log_every = self.optimizer_step, self.signals.poll, self.log_every
        train_batches, max_steps = max_batches or self.train_batches, self.max_steps
        micro = []
        seen = 0
        for i, batch in enumerate(self.data.train, start=start):
            if i >= train_batches or state.step >= max_steps:
                break
            micro.append(batch)
            if len(micro) < accumulate:
                continue
            for hook in on_step_start:
                hook(self)
            loss, outputs, n = optimizer_step(micro)
            pending.add(loss, outputs, n)
            seen += n
            micro = []
            state.step += 1
            state.batch = i + 1
            if per_step_schedule is not None:  # the rate this step used is what its log line shows
                self.step_lrs = [g["lr"] for g in param_groups]
                per_step_schedule.step()
            stop = poll(state.step)  # a stop signal: this step is the last one
            checkpoint_due = every and state.step % every == 0
            due = checkpoint_due or len(pending) >= log_every
            if ranks_agree:
                # Ranks may see a signal at different steps: they decide together, at the next flush (a
                # collective every rank reaches at the same step), or one would wait for the others forever.
                stop = distributed.agree_on_stop(stop) if due else None
            # Per-step values stay on the device and are read in one go: no host sync per step. They are also
            # read before a checkpoint, so that a NaN loss raises Diverged before a NaN model could be saved.
            if due or stop:
                self.flush_train_log(pending)
            for hook in on_step_end:
                hook(self)
            if checkpoint_due:  # Checkpoint: last.pt every trainer.checkpoint_every_n_steps
                self.check_finite()
                for hook in on_checkpoint:
                    hook(self)
            if stop:
                raise Interrupted(stop, state.step)
            if state.step >= max_steps:  # before fetching a batch that no step would use
                break
        if pending:
            self.flush_train_log(pending)
        if state.batch + accumulate > train_batches:  # the epoch is done (not cut short by max_steps)
            state.batch = 0  # the next one (or its checkpoint) starts at its first batch
        return seen

    def optimizer_step(self, micro: list[tuple[torch.Tensor, torch.Tensor]]):
        """One optimizer step over `micro` (accumulate_grad_batches batches; step.py)."""
        return self.step_fn(micro)

    def flush_train_log(self, pending: StepLog) -> None:
        losses, corrects, sizes = pending.take()
        if self.dist.enabled:  # the global batch's numbers: every rank logs and decides the same
            losses, corrects, sizes = distributed.reduce_steps(losses, corrects, sizes)
        values = losses.tolist()
        accs = [c / n for c, n in zip(corrects.tolist(), sizes)]
        first = self.state.step - len(values) + 1
        on_log = self.hooks("on_log")
        if on_log:  # every step's values, to whoever records them (TensorBoard)
            for k, (loss, acc) in enumerate(zip(values, accs)):
                scalars = {"train/loss": loss, "train/acc": acc}
                for hook in on_log:
                    hook(self, scalars, first + k)
        self.state.final.update({"train/loss": values[-1], "train/acc": accs[-1]})
        if not all(math.isfinite(v) for v in values):
            raise Diverged(f"train/loss = {values[-1]} at step {self.state.step}")
        # The rates the last step used: a per-step schedule has already moved the optimizer's to the next step's.
        used = self.step_lrs if self.step_lrs is not None else [g["lr"] for g in self.optimizer.param_groups]
        lrs = {f"lr/group{i}": lr for i, lr in enumerate(used)}
        lrs["lr"] = used[0]
        self.log(lrs, self.state.step)

    def check_finite(self) -> None:
        """Never keep a NaN model: a non-finite weight means the run diverged, whatever the logged loss says."""
        bad = [name for name, p in self.model.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise Diverged(f"non-finite weights in {', '.join(bad[:3])}{'…' if len(bad) > 3 else ''} at step "
                           f"{self.state.step}; the checkpoints keep the last finite model")

    @torch.no_grad()
    def evaluate(self, loader, prefix: str, max_batches: int | None = None, net: torch.nn.Module | None = None) -> dict:
        """Mean loss and metrics of `net` (default: the trained model) over `loader`, summed on the device."""
        net = net if net is not None else self.net
        net.eval()
        loss_sum = torch.zeros((), device=self.device)
        sums = {name: torch.zeros((), device=self.device) for name in self.metric_fns}
        count = torch.zeros((), device=self.device)
        for i, (x, y) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            with self.autocast():
                logits = net(self.to_input(x))
                loss_sum += self.loss_fn(logits, y).float() * len(y)
            for name, fn in self.metric_fns.items():
                sums[name] += fn(logits.float(), y).float()
            count += len(y)
        distributed.all_reduce_sum(loss_sum, count, *sums.values())
        count = count.clamp_min(1)
        out = {f"{prefix}/loss": (loss_sum / count).item()}
        out.update({f"{prefix}/{name}": (s / count).item() for name, s in sums.items()})
        return out

    # -- bookkeeping ----------------------------------------------------------------------------------
    def update_best(self, metrics: dict) -> None:
        acc, best = metrics.get("val/acc"), self.state.best
        self.improved = acc is not None and (best["val/acc"] is None or acc > best["val/acc"])
        if self.improved:
            best.update({"epoch": self.state.epoch, "val/acc": acc, "val/loss": metrics.get("val/loss")})

    def log(self, scalars: dict, step: int) -> None:
        self.state.final.update(scalars)
        self.fire("on_log", scalars, step)

    def fire(self, hook: str, *args) -> None:
        for method in self.hooks(hook):
            method(self, *args)

    def hooks(self, hook: str) -> list:
        """The callbacks' methods for `hook`, without the no-ops inherited from Callback (taken once per epoch)."""
        return [getattr(c, hook) for c in self.callbacks if getattr(type(c), hook) is not getattr(cb.Callback, hook)]

    def result(self) -> dict:
        s = self.state
        result = {"status": s.status, "epochs": s.epoch, "steps": s.step,
                  "final": {k: v for k, v in s.final.items() if not k.startswith(("test/", "test_ema/"))},
                  "best": s.best, "test": s.test, "test_checkpoint": self.tested_with, "overrides": self.overrides,
                  "seed": int(self.cfg.seed),
                  "wall_s": round(self.wall_s, 3), "versions": library_versions()}
        for hook in self.hooks("on_result"):  # e.g. the diagnostics' health warnings
            result.update(hook(self) or {})
        return result
