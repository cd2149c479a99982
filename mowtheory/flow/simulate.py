"""The MoW replica simulator: R independent MoW_k(n) runs advanced together.

One step of every replica (float64, plain gradient descent, docs/theory.md (1)):

    fresh  = E_theta(x)                       x: (R, k, d) new examples, fresh: (R, k, D)
    cost   = F(cat[window, fresh]; V) + red_j G_theta(x_j)      (mow_loss of the core)
    theta <- theta - eta * grad cost           (one autograd pass over sum_r cost_r: the
                                                replicas are independent, so this is every
                                                replica's own gradient)
    window.push(E_theta_new(x))   refresh "post" (the paper)  |  window.push(fresh)  "pre"

Time is ``t = step * eta``; ``horizon / eta`` steps are run. The window is a
:class:`~mowtheory.window.LatentWindow` with ``batch_shape=(R,)``.

Options: init ``"encode"`` (the window starts as the encodings of n-k examples at theta_0)
or ``"prior"`` (N(0, I) draws); refresh ``"post"``/``"pre"``; ``reduction``/``balanced`` of
:func:`~mowtheory.mow.mow_loss`; ``window="steps"`` (the theorem's window, latents at most
(n-k)/k steps old) or ``window="time"``, the falsifier of docs/theory.md: n and k are kept (so C
and the reference ODE are unchanged) but the frozen latents are the encodings, at a snapshot
``theta_snap`` of the parameters refreshed every ``L = ceil(tau / eta)`` steps, of the n-k most
recent examples. Their staleness in *time* sweeps ``[0, tau)`` whatever eta is, so the bias does
not vanish as eta -> 0. (``refresh`` is moot there: the window is always re-encoded at
theta_snap; ``init`` must be ``"encode"``.)

``window="leak"`` is the planted fault "gradient leaks into the window": the window keeps the
n-k most recent *examples* (as ``"time"``) and re-encodes them at the current theta **with
gradient** at every step, so F sees n encodings that all depend on theta (``refresh`` is moot;
``init`` must be ``"encode"``). Why the instrument must reject it (computed, and tested by
Monte Carlo in tests/test_flow.py): at a fixed theta the window rows are i.i.d. examples, so the
expected step is ``grad E[F_n] + grad E[red_k G]`` (with ``"sum"``: ``grad E[F_n] + k grad E[G]``)
against MoW's ``(k/n) grad E[F_n] + grad E[red_k G]``: the F part is n/k times MoW's (balanced:
``(n/k) grad E[F_n]`` instead of ``grad E[F_n]``). The window's examples were fresh in earlier
steps, so theta correlates with them, but only by O(eta). The (unbalanced) leak's limit is the
flow of ``E[F_n] + E[red_k G]``, which is the ODE of *balanced* MoW (``solve_reference(...,
balanced=True)``), not (2): its error against (2) stays O(1) as eta -> 0 (the default
``mowtheory flow`` run prints it as the ``leak-window`` control; the README quotes that run).

Randomness comes only from a :class:`Draws` stream (one explicit ``torch.Generator``, a fixed
order of draws), shared by :func:`simulate` (vectorised) and :func:`simulate_loop` (the same
algorithm with a Python loop over replicas, each with its own window and autograd pass: the
reference for tests and for ``mowtheory bench flow``). On the same stream they agree to
rounding.

A replica whose parameters become non-finite or exceed ``blowup`` in magnitude marks the run
unstable (``SimulationResult.stable = False``); the run stops there and no error is computed
from it.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from .._validate import check_choice, check_int, check_positive
from ..mow import REDUCTIONS, REFRESH_POLICIES, mow_loss, refreshed_latents
from ..window import INIT_POLICIES, LatentWindow
from .problem import DTYPE, Problem
from .problems import get_problem

WINDOW_MODES = ("steps", "time", "leak")


class Draws:
    """The random inputs of one run, from ``generator`` in a fixed order.

    ``initial(init)``: ``(R, n-k, d)`` examples to encode (init ``"encode"``) or ``(R, n-k, D)``
    prior latents (init ``"prior"``); then ``step()`` once per step: ``x`` ``(R, k, d)`` and,
    for problems whose F takes a prior, ``prior`` ``(R, n, D)`` (else None).
    Subclass (or pass any object with these two methods) to replay pre-drawn numbers.
    """

    def __init__(self, problem: Problem, *, n: int, k: int, replicas: int,
                 generator: torch.Generator):
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator; got generator={generator!r}")
        self.problem, self.n, self.k, self.R, self.generator = problem, n, k, replicas, generator

    def initial(self, init: str) -> torch.Tensor:
        m = self.n - self.k
        if init == "encode":
            return self.problem.sample_data((self.R, m), self.generator)
        return self.problem.sample_prior((self.R, m), self.generator)

    def step(self):
        x = self.problem.sample_data((self.R, self.k), self.generator)
        prior = (self.problem.sample_prior((self.R, self.n), self.generator)
                 if self.problem.needs_prior else None)
        return x, prior


@dataclass
class SimulationResult:
    """Output of :func:`simulate`.

    ``thetas`` ``(R, J, P)`` float64: every replica at the recorded times ``times`` ``(J,)``
    (``t_j = l_j * eta``, including 0; NaN after an instability); ``paths``
    ``(n_paths, S', P)`` at ``path_times`` ``(S',)``: the first replicas at (nearly) every
    step, for plots.
    """
    eta: float
    steps: int
    times: np.ndarray
    thetas: torch.Tensor
    stable: bool
    diverged: int
    diverged_at: Optional[float]
    paths: torch.Tensor
    path_times: np.ndarray
    wall: float
    config: dict = field(default_factory=dict)

    @property
    def replicas(self) -> int:
        return self.thetas.shape[0]


def _check_common(problem, theta0, n, k, eta, horizon, replicas, init, refresh, reduction,
                  window, tau, record):
    problem = get_problem(problem) if isinstance(problem, str) else problem
    n = check_int("n", n, low=2)
    k = check_int("k", k, low=1, high=n, high_name="n")
    eta = check_positive("eta", eta)
    horizon = check_positive("horizon", horizon)
    replicas = check_int("replicas", replicas, low=1)
    check_choice("init", init, INIT_POLICIES)
    check_choice("refresh", refresh, REFRESH_POLICIES)
    check_choice("reduction", reduction, REDUCTIONS)
    check_choice("window", window, WINDOW_MODES)
    record = check_int("record", record, low=1)
    steps = int(round(horizon / eta))
    if steps < 1 or abs(steps * eta - horizon) > 1e-9 * max(horizon, 1.0):
        raise ValueError(f"horizon / eta must be a positive integer number of steps; got "
                         f"horizon={horizon}, eta={eta} (ratio {horizon / eta:.6g})")
    theta0 = torch.as_tensor(theta0, dtype=DTYPE)
    if theta0.shape != (problem.n_params,):
        raise ValueError(f"theta0 must have shape ({problem.n_params},) for problem "
                         f"{problem.name!r}; got shape {tuple(theta0.shape)}")
    lag = None
    if window != "steps":
        if init != "encode":
            raise ValueError(f"init must be 'encode' with window={window!r} (the window holds "
                             f"examples, re-encoded at every step); got init={init!r}")
        if n == k:
            raise ValueError(f"window={window!r} needs a window: k < n; got k = n = {n}")
    if window != "time" and tau is not None:
        raise ValueError(f"tau is the staleness of window='time' and means nothing with "
                         f"window={window!r}; got tau={tau!r} (pass tau=None, or window='time')")
    if window == "time":
        tau = horizon / 4 if tau is None else check_positive("tau", tau)
        lag = max(1, math.ceil(tau / eta - 1e-9))
    rec = sorted({int(round(j * steps / record)) for j in range(record + 1)})
    return problem, theta0, n, k, eta, horizon, replicas, steps, tau, lag, rec


def mow_gradient(problem, theta, window_z, x, prior, reduction="sum", balanced=False, *,
                 window_x=None):
    """The MoW gradient of every replica (any leading shape, incl. none): theta ``(..., P)``,
    window latents ``(..., n-k, D)`` (frozen), fresh examples ``(..., k, d)``, prior
    ``(..., n, D)`` or None. One autograd pass over the sum of the replicas' costs.
    Returns ``(grad (..., P), fresh latents (..., k, D) detached)``.

    ``window_x`` ``(..., n-k, d)`` (the planted leak, ``window="leak"``): the window latents are
    ``E_theta(window_x)`` encoded here, at theta and **with gradient** (``window_z`` is ignored);
    F then differentiates through all n rows."""
    th = theta.detach().requires_grad_(True)
    fresh = problem.encode(th, x)
    G = problem.per_example(th, x)
    F = problem.batch_cost
    if window_x is not None:
        window_z = problem.encode(th, window_x)
        F = _leaky(problem.batch_cost, window_z)
    parts = mow_loss(F, fresh, window_z, G, prior=prior, reduction=reduction,
                     balanced=balanced)
    (grad,) = torch.autograd.grad(parts.total.sum(), th)
    return grad, fresh.detach()


def _leaky(F, window_z):
    """F with its first ``m`` rows (the window, which :func:`~mowtheory.mow.mow_loss` detaches)
    replaced by ``window_z`` ``(..., m, D)`` as given, with its autograd graph: the leak."""
    m = window_z.shape[-2]

    def leaky_F(z, prior=None):
        return F(torch.cat([window_z, z[..., m:, :]], dim=-2), prior)
    return leaky_F


def _mow_step(problem, theta, window_z, x, prior, eta, reduction, balanced, window_x=None):
    grad, fresh = mow_gradient(problem, theta, window_z, x, prior, reduction, balanced,
                               window_x=window_x)
    return (theta.detach() - eta * grad), fresh


class _Window:
    """The window of one simulator run (all replicas with ``batch_shape=(R,)``, or one replica
    with ``()``), for every ``window`` mode: latents (``"steps"``) or examples (``"time"``,
    ``"leak"``) in a :class:`LatentWindow`, and the snapshot theta_snap of ``"time"``."""

    def __init__(self, problem, mode, n, k, theta0, init_rows, init, refresh, lag,
                 batch_shape=()):
        self.problem, self.mode, self.refresh, self.lag = problem, mode, refresh, lag
        self.ordered = not problem.permutation_invariant
        dim = problem.latent_dim if mode == "steps" else problem.data_dim
        self.win = LatentWindow(n, k, dim, batch_shape=batch_shape, dtype=DTYPE)
        encode = mode == "steps" and init == "encode"
        self.win.fill(problem.encode(theta0, init_rows) if encode else init_rows)
        self.snap = theta0.clone() if mode == "time" else None

    def inputs(self) -> tuple:
        """``(window_z, window_x)`` of :func:`_mow_step` for the current window."""
        rows = self.win.ordered() if self.ordered else self.win.buffer
        if self.mode == "time":
            return self.problem.encode(self.snap, rows), None
        if self.mode == "leak":
            return None, rows
        return rows, None

    def advance(self, step, theta, x, fresh) -> None:
        """Slide after step ``step`` (0-based) that gave ``theta`` from examples ``x``."""
        if self.mode != "steps":
            self.win.push(x)
            if self.mode == "time" and (step + 1) % self.lag == 0:
                self.snap = theta.clone()
        else:
            self.win.push(refreshed_latents(self.refresh, fresh,
                                            lambda: self.problem.encode(theta, x)))


def _finite_ok(theta, blowup):
    return torch.isfinite(theta).all(-1) & (theta.abs().amax(-1) < blowup)


def simulate(problem, theta0, *, n: int, k: int, eta: float, horizon: float, replicas: int,
             generator: torch.Generator, init: str = "encode", refresh: str = "post",
             reduction: str = "sum", balanced: bool = False, window: str = "steps",
             tau: Optional[float] = None, record: int = 32, n_paths: int = 3,
             path_points: int = 400, blowup: float = 1e6, draws=None,
             progress=None) -> SimulationResult:
    """Run ``replicas`` independent MoW_k(n) runs from ``theta0`` ((P,)) up to time ``horizon``.

    All replicas are one batched tensor computation (no Python loop over replicas).
    ``record + 1`` evenly spaced times (steps ``round(j * steps / record)``) are stored;
    ``progress`` is an optional object with ``update(steps)`` (e.g. tqdm). ``draws`` replaces
    the default :class:`Draws` stream of ``generator``. Returns :class:`SimulationResult`.
    """
    (problem, theta0, n, k, eta, horizon, R, steps, tau, lag,
     rec) = _check_common(problem, theta0, n, k, eta, horizon, replicas, init, refresh,
                          reduction, window, tau, record)
    draws = draws if draws is not None else Draws(problem, n=n, k=k, replicas=R,
                                                  generator=generator)
    t_start = time.perf_counter()
    P = problem.n_params
    theta = theta0.expand(R, P).clone()
    win = _Window(problem, window, n, k, theta, draws.initial(init), init, refresh, lag,
                  batch_shape=(R,))

    n_paths = min(n_paths, R)
    path_every = max(1, steps // path_points)
    path_steps = list(range(0, steps + 1, path_every))
    paths = torch.full((n_paths, len(path_steps), P), float("nan"), dtype=DTYPE)
    thetas = torch.full((R, len(rec), P), float("nan"), dtype=DTYPE)
    thetas[:, 0] = theta
    paths[:, 0] = theta[:n_paths]
    rec_index = {s: j for j, s in enumerate(rec)}
    stable, diverged, diverged_at, done = True, 0, None, 0
    for step in range(steps):
        x, prior = draws.step()
        wz, wx = win.inputs()
        try:
            theta, fresh = _mow_step(problem, theta, wz, x, prior, eta, reduction, balanced,
                                     window_x=wx)
        except (ValueError, RuntimeError):
            if bool(_finite_ok(theta, blowup).all()):
                raise
            stable, diverged_at = False, step * eta
            diverged = int((~_finite_ok(theta, blowup)).sum())
            break
        win.advance(step, theta, x, fresh)
        s = step + 1
        if s % path_every == 0:
            paths[:, s // path_every] = theta[:n_paths]
        if s in rec_index:
            ok = _finite_ok(theta, blowup)
            if not bool(ok.all()):
                stable, diverged, diverged_at = False, int((~ok).sum()), s * eta
                break
            thetas[:, rec_index[s]] = theta
        if progress is not None and (s % 50 == 0 or s == steps):
            progress.update(s - done)
            done = s
    if progress is not None and done < steps:
        progress.update(steps - done)
    config = dict(problem=problem.name, n=n, k=k, eta=eta, horizon=horizon, replicas=R,
                  init=init, refresh=refresh, reduction=reduction, balanced=bool(balanced),
                  window=window, tau=tau, lag_steps=lag)
    return SimulationResult(eta=eta, steps=steps, times=np.array(rec, dtype=float) * eta,
                            thetas=thetas, stable=stable, diverged=diverged,
                            diverged_at=diverged_at, paths=paths,
                            path_times=np.array(path_steps, dtype=float) * eta,
                            wall=time.perf_counter() - t_start, config=config)


def simulate_loop(problem, theta0, *, n: int, k: int, eta: float, horizon: float,
                  replicas: int, generator: torch.Generator, init: str = "encode",
                  refresh: str = "post", reduction: str = "sum", balanced: bool = False,
                  window: str = "steps", tau: Optional[float] = None, record: int = 32,
                  draws=None) -> torch.Tensor:
    """The per-replica reference: the algorithm of :func:`simulate` with a Python loop over
    replicas, each with its own unbatched :class:`LatentWindow` and its own autograd pass,
    consuming the same :class:`Draws` stream. Returns the recorded parameters ``(R, J, P)``
    at the times of :func:`simulate` (no divergence handling: for tests and benchmarks)."""
    (problem, theta0, n, k, eta, horizon, R, steps, tau, lag,
     rec) = _check_common(problem, theta0, n, k, eta, horizon, replicas, init, refresh,
                          reduction, window, tau, record)
    draws = draws if draws is not None else Draws(problem, n=n, k=k, replicas=R,
                                                  generator=generator)
    P = problem.n_params
    init_rows = draws.initial(init)
    thetas = [theta0.clone() for _ in range(R)]
    wins = [_Window(problem, window, n, k, theta0, init_rows[r], init, refresh, lag)
            for r in range(R)]
    out = torch.full((R, len(rec), P), float("nan"), dtype=DTYPE)
    out[:, 0] = theta0
    rec_index = {s: j for j, s in enumerate(rec)}
    for step in range(steps):
        x, prior = draws.step()
        for r in range(R):
            wz, wx = wins[r].inputs()
            pr = None if prior is None else prior[r]
            thetas[r], fresh = _mow_step(problem, thetas[r], wz, x[r], pr, eta, reduction,
                                         balanced, window_x=wx)
            wins[r].advance(step, thetas[r], x[r], fresh)
        if step + 1 in rec_index:
            out[:, rec_index[step + 1]] = torch.stack(thetas)
    return out
