"""Train a group of same-structure runs as one stacked model, each member a real run.

Every member is an ordinary `Trainer`, set up exactly as its own run would be (`Trainer.begin`: seeded,
model, data, optimizer, schedule, loss, callbacks), so it starts from the same weights and writes the same
run directory (train.log, TensorBoard events, metrics.csv, checkpoints, metrics.json) through the same
callbacks. What the group replaces is the inner loop: the members' weights are stacked (stack.py), each
member draws its own batch from its own seeded permutation of the shared resident data, one vmapped forward
and backward gives every member its own gradient (the loss is the sum of the members' mean losses), and one
stacked update applies each member's own hyper-parameters (optim.py), which each member's own schedule keeps
setting in its own optimizer. At each epoch's end the members' slices are written back into their own
modules and optimizers, and each member validates, logs, checkpoints and decides to stop through
`Trainer.end_epoch`, as in its own run.

A member that diverges (a non-finite loss at a log flush, or a non-finite weight at the epoch's end) or is
pruned ends there as in its own run; its slice is no longer read, and it cannot disturb the others: the
members share no parameter, no statistic and no term of each other's gradients. Diagnostics, the progress
bar and step hooks are off in fused mode (each member's train.log says so).

A stop signal (signals.py, installed for the group) is polled after every step, as in `Trainer.train_epoch`:
every active member's slice is written back and its run ends as `Trainer.fit` ends an interrupted one (a
mid-epoch last.pt, status interrupted); the group then raises Interrupted. With trainer.compile=true the step
is fused/compiled.py's.
"""
from __future__ import annotations

import contextlib
import logging
import time

import torch

from dltrain import final_test
from dltrain.callbacks import Diagnostics, ProgressBar
from dltrain.callbacks.runlog import RunLog
from dltrain.errors import Diverged, Interrupted, Pruned, one_line
from dltrain.fused.compiled import CompiledStep
from dltrain.fused.optim import StackedOptimizer
from dltrain.fused.stack import StackedModel
from dltrain.nn.noise import fold
from dltrain.nn.weight_noise import noisy_weights, weight_keys
from dltrain.optim import split_parameters
from dltrain.signals import StopSignals

log = logging.getLogger("dltrain")

OFF_IN_FUSED = (Diagnostics, ProgressBar)  # per-step observers of one module: off while the group trains


class FusedGroup:
    """`FusedGroup(trainers).fit()` → each member's result (metrics.json), in order.

    `trainers` are constructed but not started (Trainer(cfg, overrides)); their configs share one structure
    and each can be fused (grouping.py says which cannot, and why, before anything is written)."""

    def __init__(self, trainers):
        self.members = trainers
        self.results: list[dict | None] = [None] * len(trainers)
        self.signals = StopSignals()  # the group's, shared by its members: one signal stops them all (fit)

    # -- set-up -------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Each member as its own run starts: directory, train.log, its parts, init.pt, TensorBoard."""
        for t in self.members:
            t.started = time.perf_counter()
            t.signals = self.signals  # end_epoch's check after validation sees the group's signal
            t.callbacks = [c for c in t.callbacks if not isinstance(c, OFF_IN_FUSED)]
            t.out_dir.mkdir(parents=True, exist_ok=True)
            t.fire("setup")
            with self.logging_of(t):
                t.begin()
                log.info("fused: training as member %d of %d of one stacked model (dltrain/fused/); "
                         "diagnostics and the progress bar are off in fused mode", self.members.index(t) + 1,
                         len(self.members))
            self.detach_log(t)
        lead = self.members[0]
        for t in self.members[1:]:  # one copy of the resident data set: the members' are equal
            for split in ("train", "val", "test"):
                mine, shared = getattr(t.data, split), getattr(lead.data, split)
                mine.x, mine.y = shared.x, shared.y
        self.device = lead.device
        self.dtype = next(lead.model.parameters()).dtype
        self.model = StackedModel([t.model for t in self.members])
        names = {id(p): n for n, p in lead.model.named_parameters()}
        groups = {names[id(p)]: g for g, grp in enumerate(lead.optimizer.param_groups) for p in grp["params"]}
        trained = {n: p for n, p in self.model.params.items() if n in groups}  # frozen ones are not stepped
        self.optimizer = StackedOptimizer([t.optimizer for t in self.members], trained, groups,
                                          self.model.member_params)
        weights, _ = split_parameters(lead.model)
        self.weight_names = [names[id(p)] for p in weights]
        self.l1 = self.per_member(lambda t: float(t.cfg.regularizer.l1))
        self.l2 = self.per_member(lambda t: float(t.cfg.regularizer.l2))
        self.weight_noise = self.per_member(lambda t: float(t.cfg.regularizer.get("weight_noise") or 0.0))
        self.noise_keys = torch.stack([weight_keys(self.weight_names, int(t.cfg.seed)) for t in self.members],
                                      dim=1).to(self.device) if bool(self.weight_noise.any()) else None
        self.grad_clip = lead.t.grad_clip
        same_loss = len({str(t.cfg.loss) for t in self.members}) == 1
        self.loss_fns = None if same_loss else [t.loss_fn for t in self.members]
        self.batched_loss = torch.func.vmap(lead.loss_fn) if same_loss else None
        self.batched_metrics = {name: torch.func.vmap(fn) for name, fn in lead.metric_fns.items()}
        torch.manual_seed(int(lead.cfg.seed))  # the group's augmentation (dropout and noise: each member's own keys)
        self._mask_of = None
        self.compiled = CompiledStep(self) if lead.t.compile else None  # trainer.compile: fused/compiled.py
        for t in self.members if self.compiled is not None else ():
            with self.logging_of(t):
                log.info("fused: %s", self.compiled.describe())

    def per_member(self, value) -> torch.Tensor:
        p = next(iter(self.model.params.values()))
        return torch.tensor([value(t) for t in self.members], device=p.device, dtype=p.dtype)

    # train.log: each member's RunLog handler is attached only while that member's work runs, so no member's
    # log gets another's lines.
    @staticmethod
    def _handlers(t):
        return [c.handler for c in t.callbacks if isinstance(c, RunLog) and hasattr(c, "handler")]

    def detach_log(self, t) -> None:
        for h in self._handlers(t):
            log.removeHandler(h)

    @contextlib.contextmanager
    def logging_of(self, t):
        handlers = self._handlers(t)
        for h in handlers:
            log.addHandler(h)
        try:
            yield
        finally:
            for h in handlers:
                log.removeHandler(h)

    # -- the loop ---------------------------------------------------------------------------------------
    def fit(self) -> list[dict]:
        """Train the members; a stop signal (signals.py) ends every unfinished member as its own run would
        (last.pt after the step in flight, status interrupted) and raises Interrupted."""
        self.signals.install()
        try:
            self.start()
            self.active = [m for m, t in enumerate(self.members) if t.max_epochs > 0]
            while self.active:
                self.run_epoch()
        except BaseException as e:  # every member not yet ended ends with the group: failed (or interrupted)
            for m, t in enumerate(self.members):
                if self.results[m] is None:
                    t.state.status = "interrupted" if isinstance(e, (KeyboardInterrupt, Interrupted)) else "failed"
                    with self.logging_of(t), contextlib.suppress(Exception):
                        if t.state.status == "failed":
                            log.error("fused group failed: %s", one_line(e))
                            t.fire("on_exception", e)
                        self.results[m] = t.finish()
            raise
        finally:
            self.signals.restore()
        return self.results

    def run_epoch(self) -> None:
        lead = self.members[0]
        start = time.perf_counter()
        self.model.train(True)
        for t in self.members:
            t.net.train()
            t.data.train.set_epoch(t.state.epoch)
        loader = lead.data.train
        orders = torch.stack([t.data.train._order() for t in self.members])  # each member's own permutation
        size, n = loader.batch_size, orders.shape[1]
        pending = GroupSteps()
        seen = 0
        per_step = [m for m in self.active if self.members[m].schedule is not None
                    and self.members[m].schedule.interval == "step"]
        first = self.members[self.active[0]]  # the members step together: any active one counts for all
        for i in range(lead.train_batches):
            if first.state.step >= first.max_steps or i * size >= n:
                break
            idx = orders[:, i * size:(i + 1) * size]
            x, y = self.batch(loader, idx)
            losses, logits = self.step(x, y)
            seen += y.shape[1]
            pending.add(losses, logits, y)
            for m in self.active:
                t = self.members[m]
                t.state.step += 1
                t.state.batch = i + 1
            if per_step:
                for m in per_step:
                    if m in self.active:
                        self.members[m].schedule.step()
                self.optimizer.refresh()
            stop = self.signals.poll(first.state.step)  # a stop signal: this step is every member's last
            if stop:
                self.flush(pending)  # the steps' values logged (and checked) before last.pt, as in a run
                self.interrupt(Interrupted(stop, first.state.step))
            if len(pending) >= lead.log_every:
                self.flush(pending)
                if not self.active:
                    return
                first = self.members[self.active[0]]
        self.flush(pending)
        if not self.active:
            return
        elapsed = time.perf_counter() - start
        finite = self.model.finite().tolist()
        first = self.members[self.active[0]]
        epoch = first.state.epoch + 1  # the epoch end_epoch is about to count, the same for every active member
        due = (epoch % lead.t.val_every_n_epochs == 0 or first.state.step >= first.max_steps
               or any(epoch >= self.members[m].max_epochs for m in self.active))  # Trainer.end_epoch's rule
        val = self.evaluate(lead.data.val, "val", lead.val_batches) if due else None
        finishing, interrupted = [], None
        for m in list(self.active):
            t = self.members[m]
            t.state.batch = 0
            self.model.write_back(m)
            self.optimizer.member_state(m)
            with self.logging_of(t), self.evaluated(t, val and {"val": val[m]}):
                try:
                    if not finite[m]:
                        t.check_finite()  # raises Diverged naming the member's non-finite weights
                    stop = t.end_epoch(seen, elapsed)
                except (Diverged, Pruned) as e:
                    self.end(m, "diverged" if isinstance(e, Diverged) else "pruned", e)
                    continue
                except Interrupted as e:  # a signal during validation: this epoch's last.pt is written
                    interrupted = e
                    self.interrupted(m, e)
                    continue
            if stop or t.state.epoch >= t.max_epochs or t.state.step >= t.max_steps:
                finishing.append(m)
        if finishing:
            # The group's one pass tests the weights the members end with: right for a member whose test weights
            # are those (final_test.tests_current_weights); any other tests its best epoch's weights on its own.
            current = [m for m in finishing if final_test.tests_current_weights(self.members[m])]
            test = self.evaluate(lead.data.test, "test", lead.length.test_batches) if current else None
            for m in finishing:
                t = self.members[m]
                with self.logging_of(t), self.evaluated(t, {"test": test[m]} if m in current else None):
                    t.conclude()
                self.end(m)
        if interrupted is not None:
            raise interrupted
        self.optimizer.refresh()  # per-epoch schedules have stepped

    @torch.no_grad()
    def evaluate(self, loader, prefix: str, max_batches: int | None) -> list[dict]:
        """Trainer.evaluate for every member at once: one vmapped forward of each batch through all members;
        each member's mean loss and metrics as its own run computes them."""
        lead, m = self.members[0], len(self.members)
        self.model.train(False)
        loss_sum = torch.zeros(m, device=self.device)
        sums = {name: torch.zeros(m, device=self.device) for name in lead.metric_fns}
        count = 0
        for i, (x, y) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            logits = self.model(x.to(self.dtype), shared_input=True)
            ys = y.expand(m, -1)
            loss_sum += self.losses(logits, ys).float() * len(y)
            for name, fn in self.batched_metrics.items():
                sums[name] += fn(logits.float(), ys).float()
            count += len(y)
        count = max(count, 1)
        losses = (loss_sum / count).tolist()
        metrics = {name: (s / count).tolist() for name, s in sums.items()}
        return [{f"{prefix}/loss": losses[k], **{f"{prefix}/{name}": v[k] for name, v in metrics.items()}}
                for k in range(m)]

    @contextlib.contextmanager
    def evaluated(self, t, results: dict | None):
        """While `t` validates or tests, its evaluation of the trained model is the group's (above); any other
        evaluation (another network, another loader) is its own."""
        if not results:
            yield
            return
        results = dict(results)

        def evaluate(loader, prefix, max_batches=None, net=None):
            if net is None and prefix in results:
                return results.pop(prefix)
            return type(t).evaluate(t, loader, prefix, max_batches, net)

        t.evaluate = evaluate
        try:
            yield
        finally:
            del t.evaluate

    def batch(self, loader, idx: torch.Tensor):
        """Member m's batch is rows idx[m] of the shared data set, converted as the loader converts them."""
        m, b = idx.shape
        flat = idx.reshape(-1)
        x = loader.x.index_select(0, flat).float().div_(255)
        if loader.augment is not None:
            x = loader.augment(x)
        x = loader.normalize(x).to(self.dtype)  # the model's dtype (float32 unless a test runs in float64)
        return x.view(m, b, *x.shape[1:]), loader.y.index_select(0, flat).view(m, b)

    def step(self, x: torch.Tensor, y: torch.Tensor):
        """One optimizer step of every member; (each member's loss [M], logits [M, B, C])."""
        if self.compiled is not None:
            return self.compiled(x, y)
        model = self.model
        model.zero_grad()
        with self.noisy_weights():  # the gradient at the noisy weights, the update to the clean ones
            logits = model(x)
            losses = self.losses(logits, y)
            if self._mask_of != self.active:  # rebuilt when a member ends, not every step (a host→device copy)
                self._mask = torch.zeros(len(self.members), dtype=torch.bool)
                self._mask[self.active] = True
                self._mask, self._mask_of = self._mask.to(losses.device), list(self.active)
            # Each member's gradient is the gradient of its own mean loss; ended members contribute nothing.
            torch.where(self._mask, losses, torch.zeros_like(losses)).sum().backward()
        self.penalties_and_clipping()
        self.optimizer.step()
        return losses.detach(), logits.detach()

    def losses(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """[M] each member's mean loss by its own loss function (one vmapped call when they are all equal)."""
        if self.batched_loss is not None:
            return self.batched_loss(logits, y)
        return torch.stack([fn(logits[m], y[m]) for m, fn in enumerate(self.loss_fns)])

    def noisy_weights(self):
        """step.py's weight noise, per member (nn/weight_noise.noisy_weights on the stacked weights): its own std
        and keys, the step count as the counter (the active members step together), so each member's ε is its
        own run's; on leaving, the clean weights."""
        if self.noise_keys is None:
            return contextlib.nullcontext()
        weights = [self.model.params[name] for name in self.weight_names]
        step = self.members[self.active[0]].state.step
        return noisy_weights(weights, self.weight_noise, self.noise_keys, fold(step, 0, 0))

    @torch.no_grad()
    def penalties_and_clipping(self) -> None:
        """step.py's L1/L2 gradient terms and gradient-norm clipping, per member."""
        params = self.model.params
        if bool(self.l1.any()) or bool(self.l2.any()):
            for name in self.weight_names:
                w = params[name]
                shape = (-1,) + (1,) * (w.dim() - 1)
                if w.grad is None:
                    w.grad = torch.zeros_like(w)
                w.grad.add_(self.l1.view(shape) * w.sign()).add_(self.l2.view(shape) * w)
        if self.grad_clip:
            grads = [p.grad for p in params.values() if p.grad is not None]
            norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads]).norm(dim=0)  # [M]
            coef = (self.grad_clip / (norms + 1e-6)).clamp(max=1.0)
            for g in grads:
                g.mul_(coef.view((-1,) + (1,) * (g.dim() - 1)))

    def flush(self, pending: "GroupSteps") -> None:
        """Each member's per-step values to its own log (trainer.flush_train_log: TensorBoard, metrics.csv,
        the divergence check), as its own run flushes them."""
        if not len(pending):
            return
        losses, corrects, sizes = pending.take()
        for m in list(self.active):
            t = self.members[m]
            with self.logging_of(t):
                try:
                    t.flush_train_log(MemberSteps(losses[:, m], corrects[:, m], sizes))
                except Diverged as e:
                    self.end(m, "diverged", e)

    def interrupt(self, e: Interrupted) -> None:
        """A stop signal after a step: every active member's slice into its own module and optimizer, and its
        run ended as Trainer.fit ends an interrupted one (a mid-epoch last.pt); then the group stops."""
        for m in list(self.active):
            self.model.write_back(m)
            self.optimizer.member_state(m)
            self.interrupted(m, e)
        raise e

    def interrupted(self, m: int, e: Interrupted) -> None:
        """Member m's run ends interrupted, as Trainer.fit ends one (last.pt), then its result."""
        with self.logging_of(self.members[m]):
            self.members[m].record_interruption(e)
        self.end(m)

    def end(self, m: int, status: str | None = None, reason: Exception | None = None) -> None:
        """Member m's run ends: its result into metrics.json, out of the group."""
        t = self.members[m]
        with self.logging_of(t):
            if status is not None:
                t.state.status = status
                log.warning("run %s: %s", status, reason)
            self.results[m] = t.finish()
        self.active.remove(m)
        self.optimizer.freeze(m)  # its slice stays as its run ended: no update changes it any more



class GroupSteps:
    """steplog.StepLog for the whole group: per step the members' losses [M], logits [M, B, C] and labels
    [M, B], kept on the device; at a flush the correct counts of every member and step in one go, and the
    numbers copied to the host once (not once per member)."""

    def __init__(self):
        self.losses, self.logits, self.labels = [], [], []

    def __len__(self) -> int:
        return len(self.losses)

    def add(self, losses: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.losses.append(losses)
        self.logits.append(logits)
        self.labels.append(labels)

    def take(self) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """(losses [S, M], correct counts [S, M]) on the host, and the steps' sizes; empties the log."""
        sizes = [y.shape[1] for y in self.labels]
        if sizes.count(sizes[0]) == len(sizes):
            corrects = (torch.stack(self.logits).argmax(-1) == torch.stack(self.labels)).sum(-1)
        else:  # an epoch's last, shorter batch
            corrects = torch.stack([(lg.argmax(-1) == y).sum(-1) for lg, y in zip(self.logits, self.labels)])
        losses = torch.stack(self.losses)
        self.__init__()
        return losses.cpu(), corrects.cpu(), sizes


class MemberSteps:
    """One member's share of a flush, in the shape Trainer.flush_train_log takes from a StepLog."""

    def __init__(self, losses: torch.Tensor, corrects: torch.Tensor, sizes: list[int]):
        self.values = (losses, corrects, sizes)

    def take(self):
        return self.values
