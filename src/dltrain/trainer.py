"""The training loop: fit → (train epoch → validate → callbacks)* → test.

Read it top to bottom; every option of `cfg.trainer` is one small named step. Callbacks (logging,
checkpoints, early stopping, progress, diagnostics) hook in through `Callback` methods and never change
the maths of a step.
"""
from __future__ import annotations

import inspect
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from hydra.utils import instantiate
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from omegaconf import DictConfig, OmegaConf

from dltrain import callbacks as cb
from dltrain import distributed, memory, precision
from dltrain.data import build_datamodule
from dltrain.data import cache as data_cache
from dltrain.models import build_model
from dltrain.nn.penalties import add_penalty_gradients
from dltrain.optim import build_optimizer, build_scheduler, optimizer_factory, split_parameters
from dltrain import resume
from dltrain.batch_size import fit_batch_size
from dltrain.errors import Diverged, Interrupted, Pruned, one_line  # noqa: F401 - Diverged, Pruned: results
from dltrain.runinfo import library_versions, seed_everything
from dltrain.signals import StopSignals
from dltrain.steplog import StepLog

log = logging.getLogger("dltrain")


@dataclass
class RunState:
    """Everything about progress that a checkpoint must restore."""

    epoch: int = 0                 # epochs completed
    step: int = 0                  # optimizer steps completed
    status: str = "running"
    best: dict = field(default_factory=lambda: {"epoch": None, "val/acc": None, "val/loss": None})
    final: dict = field(default_factory=dict)  # last value of every logged tag
    test: dict = field(default_factory=dict)
    stop_reason: str | None = None
    batch: int = 0                 # batches of the current epoch done (a checkpoint mid-epoch resumes there)


def pick_device(accelerator: str, devices=1) -> torch.device:
    """`trainer.devices` is a count, or a list of GPU indices whose first one this process uses
    (how a parallel sweep pins each job to its own GPU)."""
    if accelerator == "cuda" or (accelerator == "auto" and torch.cuda.is_available()):
        index = 0 if isinstance(devices, int) else devices[0]
        return torch.device("cuda", int(index))
    return torch.device("cpu")


def limit(n_batches: int, limit_to) -> int:
    """limit_*_batches: an int is a count, a float in (0, 1] a fraction."""
    if limit_to is None:
        return n_batches
    if isinstance(limit_to, float) and limit_to <= 1.0:
        return max(1, int(n_batches * limit_to))
    return min(n_batches, int(limit_to))


class Trainer:
    def __init__(self, cfg: DictConfig, overrides: list[str] | None = None, callbacks=None):
        self.cfg = cfg
        self.t = cfg.trainer
        self.out_dir = Path(cfg.paths.output_dir)
        self.overrides = list(overrides or [])
        self.device = pick_device(self.t.accelerator, self.t.devices)
        self.dist = distributed.DistEnv()
        self.state = RunState()
        self.signals = StopSignals()  # installed while fit runs
        main = distributed.env_rank() == 0
        self.callbacks = callbacks if callbacks is not None else cb.default_callbacks(cfg, main=main)

    # -- set-up ---------------------------------------------------------------------------------------
    def setup(self) -> None:
        cfg, t = self.cfg, self.t
        if t.strategy == "ddp":
            self.dist, self.device = distributed.setup(self.device.type)
        elif self.device.type == "cuda":
            torch.cuda.set_device(self.device)  # code that uses "the current GPU" uses this job's (parallel sweeps)
        seed_everything(cfg.seed, deterministic=t.deterministic)
        self.data = build_datamodule(cfg, self.device, self.dist.rank, self.dist.world_size)
        self.model = build_model(cfg).to(self.device)
        if t.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = build_optimizer(cfg, self.model)
        # An optimizer whose step() requires a closure evaluates the loss itself, maybe several times (L-BFGS).
        closure = inspect.signature(type(self.optimizer).step).parameters.get("closure")
        self.reevaluates = closure is not None and closure.default is inspect.Parameter.empty
        self.weights, _ = split_parameters(self.model)
        self.trained_params = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.net = self.wrap(self.model)
        # Plain Python copies of what the hot loop reads: OmegaConf attribute access costs microseconds.
        self.l1, self.l2 = float(cfg.regularizer.l1), float(cfg.regularizer.l2)
        self.grad_clip, self.log_every = t.grad_clip, t.log_every_n_steps
        self.checkpoint_every = t.checkpoint_every_n_steps or 0
        self.accumulate = t.accumulate_grad_batches
        self.channels_last = bool(t.channels_last)
        self.autocast = precision.autocast(self.device, str(t.precision))
        self.scaler = precision.grad_scaler(self.device, str(t.precision))
        # Polyak/EMA weights (callbacks/ema.py updates and validates them): w_ema ← d·w_ema + (1−d)·w
        self.ema = (AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(t.ema_decay), use_buffers=True)
                    if t.ema_decay else None)
        self.memory_estimate = memory.estimate(self.model, optimizer_factory(cfg), cfg.data.batch_size,
                                               self.data.in_shape, self.device)
        self.train_batches = 1 if t.fast_dev_run else limit(len(self.data.train), t.limit_train_batches)
        self.val_batches = 1 if t.fast_dev_run else limit(len(self.data.val), t.limit_val_batches)
        self.steps_per_epoch = max(1, self.train_batches // t.accumulate_grad_batches)
        self.schedule = build_scheduler(cfg, self.optimizer, self.steps_per_epoch)
        self.loss_fn = instantiate(cfg.loss)
        self.metric_fns = {name: instantiate(node) for name, node in cfg.metrics.items()}
        self.max_epochs = 1 if t.fast_dev_run else t.max_epochs
        self.max_steps = t.max_steps if t.max_steps and t.max_steps > 0 else math.inf

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """What the forward passes go through: DataParallel / DDP around the model, then torch.compile.
        `self.model` stays the plain module, for checkpoints and diagnostics."""
        net = model
        if self.t.strategy == "dp":
            count = self.t.devices if isinstance(self.t.devices, int) else len(self.t.devices)
            ids = list(range(count)) if isinstance(self.t.devices, int) else list(self.t.devices)
            if self.device.type != "cuda":
                log.warning("trainer.strategy=dp on the CPU: DataParallel runs the plain module")
            net = torch.nn.DataParallel(model, device_ids=ids if self.device.type == "cuda" else None)
        elif self.t.strategy == "ddp":
            ids = [self.device.index] if self.device.type == "cuda" else None
            net = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        if self.t.compile:
            net = torch.compile(net, mode=self.t.compile_mode)
        return net

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    # -- the loop -------------------------------------------------------------------------------------
    def fit(self) -> dict:
        start = time.perf_counter()
        resume_from = resume.open_run(self)  # before writing: never into another run's dir; resume: last.pt
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.signals.install()  # SIGTERM/SIGINT/SIGUSR1: finish the step, write last.pt, stop (signals.py)
        self.fire("setup")      # train.log opens before set-up, so that set-up failures are recorded in it
        try:
            fit_batch_size(self)  # trainer.auto_batch_size: the largest batch that fits on the GPU
            self.setup()
            resume.restore(self, resume_from)  # model, optimizer, scheduler, scaler, EMA, callbacks, progress
            self.fire("on_fit_start")
            resume.restore_rng(resume_from)  # last: the continuation draws the numbers the straight run would
            log.info("data: %s", data_cache.last_load_note())  # after on_fit_start, so train.log has it
            while self.state.epoch < self.max_epochs and self.state.step < self.max_steps:
                epoch_start = time.perf_counter()
                seen = self.train_epoch()
                self.state.epoch, self.state.batch = self.state.epoch + 1, 0
                elapsed = time.perf_counter() - epoch_start
                metrics = self.evaluate(self.data.val, "val", self.val_batches)
                metrics["time/epoch_s"] = elapsed
                metrics["throughput/samples_per_s"] = seen * self.dist.world_size / elapsed
                if self.device.type == "cuda":
                    metrics["memory/peak_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
                if self.schedule is not None and self.schedule.interval == "epoch":
                    self.schedule.step(metrics)
                self.log(metrics, self.state.epoch)
                self.update_best(metrics)
                self.fire("on_epoch_end", metrics)
                if self.state.stop_reason:
                    break
                received = self.signals.received  # a signal during validation: last.pt is current, stop
                if self.dist.enabled:
                    received = distributed.agree_on_stop(received)
                if received:
                    raise Interrupted(received, self.state.step)
            self.state.status = "stopped_early" if self.state.stop_reason == "early_stopping" else "completed"
            self.state.test = self.evaluate(self.data.test, "test", self.val_batches if self.t.fast_dev_run else None)
            self.log(self.state.test, self.state.epoch)
        except Diverged as e:
            self.state.status = "diverged"
            log.warning("run diverged: %s", e)
        except Pruned as e:  # the search's pruner stopped this trial (callbacks/pruning.py)
            self.state.status = "pruned"
            log.info("run pruned: %s", e)
        except Interrupted as e:
            self.state.status = "interrupted"
            log.warning("run interrupted: %s", e)
            self.fire("on_exception", e)  # Checkpoint writes last.pt: the step in flight has finished
            raise
        except KeyboardInterrupt:
            self.state.status = "interrupted"
            raise
        except Exception as e:
            self.state.status = "failed"
            log.error("run failed: %s", one_line(e))  # RunLog puts the whole message and traceback in train.log
            self.fire("on_exception", e)
            raise
        finally:
            self.signals.restore()
            self.wall_s = time.perf_counter() - start
            result = self.result()
            self.fire("on_fit_end", result)
            if self.dist.is_main:
                self.write_metrics(result)
            distributed.cleanup()
        return result

    def train_epoch(self) -> int:
        """One pass over the training batches (the rest of one after a mid-epoch resume); returns how many
        samples it saw."""
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
        ranks_agree = self.dist.enabled
        optimizer_step, poll, log_every = self.optimizer_step, self.signals.poll, self.log_every
        train_batches, max_steps = self.train_batches, self.max_steps
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
            if per_step_schedule is not None:
                per_step_schedule.step()
            stop = poll(state.step)  # a stop signal: this step is the last one
            checkpoint = every and state.step % every == 0
            due = checkpoint or len(pending) >= log_every
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
            if checkpoint:  # Checkpoint: last.pt every trainer.checkpoint_every_n_steps
                for hook in on_checkpoint:
                    hook(self)
            if stop:
                raise Interrupted(stop, state.step)
        if pending:
            self.flush_train_log(pending)
        return seen

    def optimizer_step(self, micro: list[tuple[torch.Tensor, torch.Tensor]]):
        """One optimizer step over `micro` (accumulate_grad_batches batches); returns the step's loss, the
        detached (logits, labels) of each micro-batch and the sample count."""
        if self.scaler:  # GradScaler.step takes no closure; fp16 runs are single-evaluation optimizers only
            result = self.forward_backward(micro)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        elif self.reevaluates:  # L-BFGS evaluates the loss itself, maybe several times: the last one counts
            results = []

            def closure():
                results.append(self.forward_backward(micro))
                return results[-1][0]

            self.optimizer.step(closure)
            result = results[-1]
        else:
            result = self.forward_backward(micro)
            self.optimizer.step()
        return result

    def forward_backward(self, micro: list[tuple[torch.Tensor, torch.Tensor]]):
        """Fresh gradients of the loss over `micro`, with the penalties and clipping applied; returns what
        optimizer_step returns."""
        # What optimizer.zero_grad(set_to_none=True) does, without its profiler range and dynamo guard: those
        # cost ~20 µs a step on the CPU, 1 % of the default MLP's step (scripts/bench.py's loop_ratio).
        for p in self.trained_params:
            p.grad = None
        single = len(micro) == 1  # no accumulation: the usual case, without the weighting's extra op
        total = micro[0][1].shape[0] if single else sum(y.shape[0] for _, y in micro)
        scaler = self.scaler
        loss_sum = None  # no `0 + tensor`: an extra op per step without accumulation
        outputs = []
        for x, y in micro:
            with self.autocast():
                logits = self.net(self.to_input(x))
                loss = self.loss_fn(logits, y)
            # Weight each micro-batch by its share of the step, so accumulation equals one big batch.
            weighted = loss if single else loss * (y.shape[0] / total)
            (scaler.scale(weighted) if scaler else weighted).backward()
            loss_sum = weighted.detach() if loss_sum is None else loss_sum + weighted.detach()
            outputs.append((logits.detach(), y))
        if scaler:
            scaler.unscale_(self.optimizer)  # penalties and clipping act on the true gradients
        add_penalty_gradients(self.weights, self.l1, self.l2)
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        return loss_sum, outputs, total

    def flush_train_log(self, pending: StepLog) -> None:
        losses, corrects, sizes = pending.take()
        if self.dist.enabled:  # the global batch's numbers: every rank logs and decides the same
            counts = torch.tensor(sizes, dtype=torch.float, device=losses.device)
            losses = losses * counts
            distributed.all_reduce_sum(losses, corrects, counts)
            losses, sizes = losses / counts, counts.tolist()
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
        lrs = {f"lr/group{i}": g["lr"] for i, g in enumerate(self.optimizer.param_groups)}
        lrs["lr"] = self.optimizer.param_groups[0]["lr"]
        self.log(lrs, self.state.step)

    @torch.no_grad()
    def evaluate(self, loader, prefix: str, max_batches: int | None = None, net: torch.nn.Module | None = None) -> dict:
        """Mean loss and every configured metric of `net` (default: the trained model) over `loader`;
        sums stay on the device until the end."""
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
        best = self.state.best
        acc = metrics.get("val/acc")
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
        """The callbacks' methods for `hook`, leaving out those that only inherit Callback's no-op: the hot
        loop takes these lists once per epoch or flush instead of calling every callback on every step."""
        return [getattr(c, hook) for c in self.callbacks if getattr(type(c), hook) is not getattr(cb.Callback, hook)]

    def result(self) -> dict:
        s = self.state
        return {
            "status": s.status,
            "epochs": s.epoch,
            "steps": s.step,
            "final": {k: v for k, v in s.final.items() if not k.startswith("test/")},
            "best": s.best,
            "test": s.test,
            "overrides": self.overrides,
            "seed": int(self.cfg.seed),
            "wall_s": round(self.wall_s, 3),
            "versions": library_versions(),
        }

    def write_metrics(self, result: dict) -> None:
        path = self.out_dir / "metrics.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(result, indent=2, default=float))
        tmp.replace(path)

    def config_dict(self) -> dict:
        return OmegaConf.to_container(self.cfg, resolve=True)
