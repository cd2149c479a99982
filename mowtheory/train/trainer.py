"""Autoencoder training with MoW_k(n): configuration, loop, evaluation, checkpoints.

The objective of one step (docs/theory.md, "The mathematics")::

    total = (n/k if balanced else 1) * lam * F(window, E(x_1..x_k); V) + red_j G(x_j)
    G(x)  = sum_{c,h,w} (decode(encode(x)) - x)^2         (summed squared error of one example)

with F the batch cost of the model: ``cwae`` log Cramér–Wold distance to N(0, I), ``wae``
MMD with IMQ kernels against a fresh prior sample, ``swae`` sliced Wasserstein distance with
fresh random directions each step, ``gmmn`` Gaussian-kernel MMD², ``energy`` energy distance.
``red`` is the reduction over the k fresh examples: ``"sum"`` (the theorem), ``"mean"``, or
``"sqrt_mean"`` (square root of the batch mean, as in the authors' code; the default here,
since it is what the paper's experiments trained with).

Methods (``method``, :mod:`mowtheory.train.methods`): ``"mow"`` (above; the default),
``"minibatch"`` (standard training: ``lam * F(E(x_1..x_n); V) + red_i G(x_i)`` over n examples
a step) and ``"gradcache"`` (that step with the same gradient, encoding ``chunk`` examples at a
time); everything else (data order, metrics, figures, checkpoints, resume) is shared, with n
in place of k examples a step for the n-batch methods.

:class:`Trainer` owns one run (:mod:`~mowtheory.train.setup`, :meth:`~Trainer.restore` or a
fresh window, :meth:`~Trainer.step`, :meth:`~Trainer.evaluate`, :meth:`~Trainer.checkpoint`,
:meth:`~Trainer.report`); what the loop changes lives in one :class:`RunState`. Data order,
host synchronisation, several processes: docs/guides/training.md ("How the trainer works").

Files in ``out``: ``metrics.jsonl`` (one line per evaluation), ``report.json`` (final metrics
and the full configuration), ``checkpoint.pt`` (atomic; each epoch and every
``checkpoint_every`` steps), ``samples.png``, ``reconstructions.png``,
``interpolations.png``, ``cache/`` (the FD feature network).
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Optional

import torch

from .. import _io
from .._validate import NonFiniteInputError
from ..mow import NonFiniteError
from . import checkpoint as ckpt
from . import setup
from ._lock import OutputLock
from ._signals import Interrupted, StopSignals
from .config import TrainConfig
from .evaluate import Evaluator, write_images
from .objective import build_cost
from .state import (PARTS, NonFiniteLoss, RunState, first_line, format_parts,
                    params_finite, truncate_metrics, write_json, write_or_explain)
from .state import Logger as _Logger, report as _report

#: what a failing step raises when its loss or its latents are not finite
NON_FINITE_ERRORS = (NonFiniteError, NonFiniteInputError)


# ----------------------------------------------------------------------------- train
def train(config) -> dict:
    """Train an autoencoder with MoW_k(n); returns the report (also written to
    ``out/report.json`` by rank 0).

    Args:
        config: a :class:`TrainConfig` (or a dict of its fields).

    Returns:
        ``{"status": "completed" | "stopped", "config": {...}, "resolved": {...},
        "final_metrics": {...}, "step", "epochs_completed", "examples_seen",
        "resumed_from_step", "steps_this_run", "rank", "world_size", "files", ...}``.

    Raises:
        ValueError: bad configuration, resume with another configuration or number of
            processes, an ``out`` that already holds a checkpoint (without
            ``resume``/``overwrite``), a truncated checkpoint, ``distributed`` outside torchrun.
        FileNotFoundError: ``resume`` without a checkpoint, missing data files.
        NonFiniteLoss: the loss (or the latents after an update) became NaN/inf; the last good
            checkpoint is kept.
    """
    cfg = config if isinstance(config, TrainConfig) else TrainConfig(**dict(config))
    cfg.validate()
    t_start = time.perf_counter()
    ctx = setup.join_process_group(cfg) if cfg.distributed else None
    lock = OutputLock(cfg.out)       # taken by rank 0 just before its first write
    finished = False
    try:
        # SIGTERM/SIGINT: finish the step, checkpoint, raise Interrupted (one process only:
        # under torchrun the ranks would stop at different steps)
        with StopSignals(enabled=not cfg.distributed) as stop:
            report = Trainer(cfg, ctx, t_start, lock, stop).run()
        finished = True
        return report
    finally:
        lock.release()
        if ctx is not None:
            ctx.close(wait=finished)      # every rank at the end before the group goes


class Trainer:
    """One training run of a validated :class:`TrainConfig` (use :func:`train`).

    Construction does the set-up in a fixed order (the order is part of what makes a resumed
    run identical to an uninterrupted one): the resume rules, data, model, generators, the
    step of ``cfg.method``, the optimizer, then :meth:`restore` from the checkpoint or a fresh
    window, then the evaluator. :meth:`run` is the loop."""

    def __init__(self, cfg: TrainConfig, ctx=None, t_start: Optional[float] = None,
                 lock=None, stop=None):
        self.cfg, self.ctx, self.lock, self.stop = cfg, ctx, lock, stop
        self.t_start = time.perf_counter() if t_start is None else t_start
        self.world = ctx.world_size if ctx is not None else 1
        self.rank = ctx.rank if ctx is not None else 0
        self.main = self.rank == 0
        # examples read per step, all processes (MoW: k fresh ones each; n-batch methods: n)
        self.kP = cfg.k * self.world if cfg.method == "mow" else cfg.n
        if self.kP > cfg.n:
            raise ValueError(f"k * world_size must be <= n: each of the {self.world} processes "
                             f"reads k={cfg.k} examples a step; got k * world_size={self.kP} > "
                             f"n={cfg.n}")
        self.out = Path(cfg.out)
        self.ckpt_path = self.out / ckpt.CHECKPOINT_NAME
        self.metrics_path = self.out / "metrics.jsonl"
        self.cfg_dict = cfg.to_dict()
        saved = setup.saved_checkpoint(cfg, self.ckpt_path, world=self.world, main=self.main)
        self.log = _Logger(cfg.progress and self.main)
        m = setup.load_model(cfg, ctx, world=self.world, kP=self.kP)
        self.res, self.device, self.x_train, self.x_test = m.res, m.device, m.x_train, m.x_test
        self.x_data, self.N, self.model = m.x_data, m.N, m.model
        if self.main:
            setup.claim_output(self.out, self.lock)
        # generators, identical on every process: data order; prior samples, swae directions
        # and prior init of the window
        self.data_gen = torch.Generator().manual_seed(cfg.seed)
        mow_gen = torch.Generator(device=self.device).manual_seed(cfg.seed + 1)
        cost = build_cost(cfg.model, swae_directions=cfg.swae_directions, generator=mow_gen)
        self.method, self.opt = setup.build_step(cfg, self.model, cost, mow_gen,
                                                 device=self.device, local=ctx is None)
        self.steps_per_epoch = self.N // self.kP
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=cfg.bf16)
        self.state = RunState.fresh(self.device)
        if saved is not None:
            self.restore(saved)
        else:
            self._fresh_start()
        with torch.random.fork_rng(devices=self._cuda_devices()):
            # set-up (the FD feature network, built or loaded) stays off the global RNG stream
            self.evaluator = (Evaluator(cfg, self.model, self.x_test, self.x_train, self.device,
                                        self.out, self.log) if self.main else None)
        self.global_rng = saved["rng"] if saved is not None else None
        self.t_loop = time.perf_counter()
        self.bar = None

    # ------------------------------------------------------------------ set-up
    def _cuda_devices(self) -> list:
        return [self.device] if self.device.type == "cuda" else []

    def restore(self, saved: dict) -> None:
        """Continue from a checkpoint (validated field by field first): model, optimizer,
        window, data order, counters, accumulated loss parts; ``metrics.jsonl`` is cut back
        to the checkpoint's step."""
        ckpt.check_training_state(saved, self.ckpt_path, model_state=self.model.state_dict(),
                                  steps_per_epoch=self.steps_per_epoch)
        self.model.load_state_dict(saved["model"])
        self.opt.load_state_dict(saved["optimizer"])
        self.method.load_state_dict(saved["mow"])
        self.data_gen.set_state(saved["data_generator"])
        st = self.state
        st.restore(saved, self.device)
        if self.main:
            st.metric_lines = write_or_explain(
                lambda: truncate_metrics(self.metrics_path, st.step),
                lambda: f"the checkpoint {self.ckpt_path} (step {st.step}) and metrics.jsonl "
                        f"are kept")
        self.log(f"resumed from {self.ckpt_path} at step {st.step} (epoch {st.epoch}, "
                 f"position {st.pos})")

    def _fresh_start(self) -> None:
        """The window of step 0 (``init``) and an empty ``metrics.jsonl``."""
        setup.init_window(self.cfg, self.method, self.x_data, n_fresh=self.kP,
                          device=self.device)
        if self.main:
            write_or_explain(lambda: _io.atomic_write_text(self.metrics_path, ""),
                             lambda: "nothing was written")

    # ------------------------------------------------------------------ one step
    def step(self, x: torch.Tensor) -> None:
        """One step of the method on this process's examples ``x``; its loss parts are
        accumulated on the device (no host sync). A step that raises because its loss or
        latents are not finite raises :class:`NonFiniteLoss` naming the first bad step."""
        st = self.state
        try:
            with self.autocast:
                parts = self.method.step(x, self.opt)
        except (ValueError, RuntimeError) as exc:
            self.read_parts(reset=False)       # an earlier non-finite loss: raised here
            if not isinstance(exc, NON_FINITE_ERRORS):   # e.g. a collective timeout
                raise
            raise self._failed_step(exc) from exc
        st.record(parts)

    def _failed_step(self, exc: Exception) -> NonFiniteLoss:
        """The error for a step that raised on non-finite values: its loss parts when it
        had them, or what its update produced when its loss was finite."""
        s = self.state.step + 1
        lp = self.method.last_parts
        if lp is None:
            # the fresh latents were already non-finite (an earlier update overflowed while
            # its loss was finite): the loss of this step cannot be evaluated
            return self._non_finite(f"non-finite loss at step {s} (total=nan, batch_cost=nan, "
                                    f"per_example=nan): {first_line(exc)}", s,
                                    [float("nan")] * 3)
        vals = [float(t) for t in lp]
        if not all(math.isfinite(v) for v in vals):
            return self._non_finite(f"non-finite loss at step {s} ({format_parts(vals)})", s,
                                    vals)
        return self._non_finite(f"non-finite values after the update of step {s} "
                                f"({format_parts(vals)}): {first_line(exc)}", s, vals)

    def _non_finite(self, message: str, step: int, vals) -> NonFiniteLoss:
        return NonFiniteLoss(f"{message}; training stopped, {self.kept()}", step=step,
                             parts=dict(zip(PARTS, vals)))

    def read_parts(self, reset: bool = True) -> dict:
        """Mean loss parts since the last evaluation (one host sync); raises
        :class:`NonFiniteLoss` when a step since then was not finite."""
        st = self.state
        vals = st.acc.tolist()
        bad = int(st.first_bad)
        if bad >= 0 or not all(math.isfinite(v) for v in vals):
            where = bad if bad >= 0 else st.step
            bp = st.bad_parts.tolist() if bad >= 0 else vals
            raise self._non_finite(f"non-finite loss at step {where} ({format_parts(bp)})",
                                   where, bp)
        mean = {name: v / max(st.acc_steps, 1) for name, v in zip(PARTS, vals)}
        if reset:
            st.acc = torch.zeros_like(st.acc)
            st.acc_steps = 0
        return mean

    # ------------------------------------------------------------------ evaluation, files
    def evaluate(self, epoch_float: float) -> None:
        """Read the loss parts (every rank: a non-finite one stops the run) and, on rank 0,
        append one line of test metrics to ``metrics.jsonl`` (the whole file, atomically)."""
        st = self.state
        train_parts = self.read_parts()
        if not self.main:
            return
        row = {"step": st.step, "epoch": round(epoch_float, 4),
               "examples_seen": st.step * self.kP,
               **{f"train_{k}": v for k, v in train_parts.items()},
               **self.evaluator(), "time_s": round(time.perf_counter() - self.t_start, 2)}
        st.metric_lines.append(_io.json_dumps(row))
        _io.atomic_write_text(self.metrics_path,
                              "".join(line + "\n" for line in st.metric_lines))
        st.last_metrics = row
        if self.bar is not None:
            self.bar.set_postfix({"rec": f"{row['recon_error']:.3g}",
                                  "cw": f"{row['cw_distance']:.3g}"})

    def checkpoint(self) -> None:
        """Write the checkpoint of the current state (rank 0; atomic). Only finite weights
        are ever written: a non-finite loss or parameter raises :class:`NonFiniteLoss`."""
        st = self.state
        self.read_parts(reset=False)
        if not params_finite(self.model):
            # the loss of every step was finite, but an update overflowed (e.g. refresh="pre",
            # whose window push does not re-encode and so cannot notice it)
            lp = self.method.last_parts
            vals = [float(v) for v in lp] if lp is not None else [float("nan")] * 3
            raise self._non_finite(f"non-finite parameters after the update of step {st.step} "
                                   f"although its loss was finite ({format_parts(vals)})",
                                   st.step, vals)
        if self.main:
            ckpt.save_checkpoint(self.ckpt_path, ckpt.training_state(
                config=self.cfg_dict, resolved=self.res, step=st.step, epoch=st.epoch,
                pos=st.pos, perm=st.perm, model=self.model.state_dict(),
                optimizer=self.opt.state_dict(), mow=self.method.state_dict(),
                world_size=self.world, k_per_process=self.cfg.k,
                data_generator=self.data_gen.get_state(), rng=ckpt.rng_state(),
                acc=st.acc.cpu(), acc_steps=st.acc_steps, last_metrics=st.last_metrics,
                torch=torch.__version__))
        st.last_ckpt_step = st.step

    def kept(self) -> str:
        """What a failure leaves: the last good checkpoint, or nothing."""
        if self.state.last_ckpt_step is None:
            return "no checkpoint had been written yet"
        return (f"the last good checkpoint {self.ckpt_path} (step {self.state.last_ckpt_step}) "
                f"is kept")

    def report(self, status: str, *, files=None, message=None) -> dict:
        """The report of the run as it stands (see :func:`train`)."""
        st = self.state
        return _report(self.cfg, self.res, status, st.step, self.steps_per_epoch, self.N,
                       self.kP, st.last_metrics, self.evaluator, st.resumed_from, self.t_start,
                       self.t_loop, self.device, self.rank, self.world, files=files,
                       message=message)

    # ------------------------------------------------------------------ the loop
    def run(self) -> dict:
        """Train to ``cfg.epochs`` (or ``stop_after_steps``); returns the report, also
        written to ``out/report.json`` by rank 0."""
        from tqdm.auto import tqdm
        cfg, st = self.cfg, self.state
        self.bar = tqdm(total=cfg.epochs * self.steps_per_epoch, initial=st.step,
                        disable=not (cfg.progress and self.main), unit="step",
                        desc=f"{cfg.model} n={cfg.n} k={self.kP}", dynamic_ncols=True,
                        leave=False)
        # the global RNG (dropout, user code): seeded, or restored last, after every set-up
        if self.global_rng is not None:
            ckpt.set_rng_state(self.global_rng)
        else:
            ckpt.seed_rng(cfg.seed + 3)
        try:
            while st.epoch < cfg.epochs and not self._run_epoch():
                st.epoch += 1
                st.pos, st.perm = 0, None
                self.evaluate(float(st.epoch))
                self.checkpoint()
                if cfg.stop_after_steps is not None and st.step >= cfg.stop_after_steps \
                        and st.epoch < cfg.epochs:
                    st.status = "stopped"
                    break
        except (NonFiniteLoss, Interrupted) as exc:
            self.bar.close()
            if self.main:
                self._write_failure_report(exc)
            raise
        except OSError as exc:
            self.bar.close()
            raise _io.WriteError(_io.describe_os_error(exc, kept=self.kept()),
                                 exc.errno) from exc
        self.bar.close()
        return write_or_explain(self._finish, self.kept)

    def _run_epoch(self) -> bool:
        """The steps of the current epoch from ``pos``; True when the run stops inside it."""
        cfg, st = self.cfg, self.state
        if st.perm is None:
            st.perm = torch.randperm(self.N, generator=self.data_gen)
        if cfg.init == "prior" and st.pos == 0:
            # the authors' loop: a fresh N(0, I) window (write position reset) each epoch
            self.method.init_window("prior")
        perm_dev = st.perm.to(self.x_data.device)
        per = self.kP // self.world
        lo, hi = self.rank * per, (self.rank + 1) * per     # this process's rows of a step
        for s in range(st.pos, self.steps_per_epoch):
            x = self.x_data[perm_dev[s * self.kP + lo:s * self.kP + hi]]
            if x.device != self.device:
                x = x.to(self.device, non_blocking=True)
            self.step(x)
            st.pos = s + 1
            self.bar.update(1)
            if self._after_step():
                return True
        return False

    def _after_step(self) -> bool:
        """The evaluation due after this step (inside an epoch: the one at its end is the
        loop's), then signals, ``stop_after_steps`` and the checkpoint due; True when the run
        stops here. The evaluation comes first so that a run stopped or interrupted at a step
        that is due one has its metrics line, as an uninterrupted run has."""
        cfg, st = self.cfg, self.state
        last_in_epoch = st.pos == self.steps_per_epoch
        if not last_in_epoch and cfg.eval_every and st.step % cfg.eval_every == 0:
            self.evaluate(st.step / self.steps_per_epoch)
        if self.stop is not None and self.stop.signum is not None:
            self.checkpoint()
            raise Interrupted(
                f"received {self.stop.name}: finished step {st.step} and wrote its checkpoint "
                f"{self.ckpt_path if self.main else '(rank 0)'}; continue with --resume",
                signum=self.stop.signum, step=st.step, path=self.ckpt_path)
        if last_in_epoch:
            return False
        if cfg.stop_after_steps is not None and st.step >= cfg.stop_after_steps:
            self.checkpoint()
            st.status = "stopped"
            return True
        if cfg.checkpoint_every and st.step % cfg.checkpoint_every == 0:
            self.checkpoint()
        return False

    def _write_failure_report(self, exc: Exception) -> None:
        non_finite = isinstance(exc, NonFiniteLoss)
        rep = self.report("non-finite" if non_finite else "interrupted", message=str(exc))
        rep["failed_step" if non_finite else "signal"] = (exc.step if non_finite
                                                          else self.stop.name)
        write_or_explain(lambda: write_json(self.out / "report.json", rep), self.kept)

    def _finish(self) -> dict:
        files = {}
        if self.main and self.state.status == "completed" and self.cfg.images:
            files = write_images(self.cfg, self.model, self.x_test, self.out, self.device)
        rep = self.report(self.state.status, files=files)
        if self.main:
            write_json(self.out / "report.json", rep)
        return rep


