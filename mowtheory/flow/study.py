"""A convergence-rate study: replicas at several step sizes against the reference ODEs.

:func:`run_study` runs :func:`~.simulate.simulate` at every eta (same theta_0, independent
seeded streams), solves the theorem's ODE and the wrong one (:mod:`.reference`), computes
errors, fitted orders and verdicts (:mod:`.rates`) and returns a :class:`Study` whose
``to_json()`` is the CLI's JSON and ``table()`` its printed table.

Seeds: theta_0 from ``torch.Generator().manual_seed(seed)``; the run at the i-th eta from
``seed * 1000 + 1 + i``; the bootstrap from ``seed * 1000 + 999``.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

from .._validate import check_int, check_positive
from .problems import get_problem
from .rates import (MIN_BOOTSTRAP, bias_verdict, errors, extrapolated_bias, fitted_order,
                    order_verdict, wrong_ode_verdict)
from .reference import ReferenceSolution, solve_reference
from .simulate import _check_common, simulate


@dataclass
class Study:
    """Result of :func:`run_study` (``sims`` hold the raw replicas; not serialised)."""
    config: dict
    etas: list
    rows: list
    orders: dict
    verdicts: list
    ref: ReferenceSolution
    wrong: ReferenceSolution
    sims: list = field(repr=False, default_factory=list)
    wall: float = 0.0
    problem: object = None
    extra: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ output
    def to_json(self) -> dict:
        def col(name):
            return [None if getattr(r, name) is None else float(getattr(r, name)) for r in self.rows]
        out = {k: self.config[k] for k in ("problem", "n", "k", "horizon", "replicas")}
        out.update({k: v for k, v in self.config.items() if k not in out})
        out.update({
            "etas": list(self.etas),
            "stable": [r.stable for r in self.rows],
            "strong_error": col("strong"), "strong_error_se": col("strong_se"),
            "weak_error": col("weak"), "weak_error_se": col("weak_se"),
            "weak_noise_floor": col("noise_floor"),
            "weak_resolved": [bool(r.resolved) for r in self.rows],
            "wrong_ode_weak_error": col("wrong"),
            "diverged_replicas": [s.diverged for s in self.sims] if self.sims else None,
            "orders": {k: o.to_json() for k, o in self.orders.items()},
            "verdicts": self.verdicts,
            "wall_seconds": round(self.wall, 2),
        })
        out.update(self.extra)
        return out

    def table(self) -> str:
        c = self.config
        head = (f"{c['problem']}: n={c['n']} k={c['k']} horizon={c['horizon']:g} "
                f"replicas={c['replicas']} init={c['init']} refresh={c['refresh']} "
                f"reduction={c['reduction']} balanced={c['balanced']} window={c['window']}"
                + (f" tau={c['tau']:g}" if c.get("tau") is not None else ""))
        lines = [head, f"{'eta':>10}  {'strong':>9}  {'weak +/- se':>22}  {'wrong-ODE':>9}"]
        for r, s in zip(self.rows, self.sims or [None] * len(self.rows)):
            if not r.stable:
                why = (f" ({s.diverged}/{s.replicas} replicas diverged by t={s.diverged_at:g})"
                       if s is not None and s.diverged_at is not None else "")
                lines.append(f"{r.eta:>10g}  unstable{why}")
                continue
            weak = f"{r.weak:.3e} +/- {r.weak_se:.1e}" if r.weak_se is not None else f"{r.weak:.3e}"
            flag = "" if r.resolved else "  (at noise floor)"
            lines.append(f"{r.eta:>10g}  {r.strong:9.4f}  {weak:>22}  {r.wrong:9.4f}{flag}")
        for kind in ("strong", "weak"):
            o = self.orders[kind]
            if math.isfinite(o.estimate):
                lines.append(f"{kind} order: {o.estimate:.3f}  95% CI [{o.ci[0]:.3f}, {o.ci[1]:.3f}]")
            else:
                lines.append(f"{kind} order: n/a ({o.note})")
        return "\n".join(lines)


#: step sizes a study needs at least (an order is a slope; the bias extrapolation uses two)
MIN_ETAS = 2


def check_etas(etas) -> list:
    """The study's step sizes, largest first: a sequence of at least :data:`MIN_ETAS`
    **distinct** finite numbers > 0 (one rule for :func:`run_study` and ``mowtheory flow
    --etas``; ``None`` means the problem's defaults and is resolved by the caller)."""
    if isinstance(etas, (str, bytes)) or not hasattr(etas, "__iter__"):
        raise TypeError(f"etas must be a sequence of step sizes, e.g. [0.01, 0.005]; "
                        f"got etas={etas!r}")
    vals = sorted((check_positive("etas", e) for e in etas), reverse=True)
    if len(vals) < MIN_ETAS:
        raise ValueError(f"etas must hold at least {MIN_ETAS} distinct step sizes to fit an "
                         f"order; got etas={list(etas)!r}")
    dup = sorted({e for i, e in enumerate(vals) if i and e == vals[i - 1]}, reverse=True)
    if dup:
        raise ValueError(f"etas must be distinct step sizes (an order is fitted through "
                         f"them); got etas={list(etas)!r}, repeating {dup}")
    return vals


#: recorded times per run by default (always allowed, even above a short run's step count)
DEFAULT_RECORD = 32


def max_record(horizon: float, etas) -> int:
    """The most recorded times a study accepts: the step count ``horizon / eta`` of its
    smallest step size (a run has no more distinct times to record), or
    :data:`DEFAULT_RECORD` when that is larger."""
    return max(DEFAULT_RECORD, int(round(horizon / min(etas))))


def memory_estimate(prob, *, n: int, k: int, etas, replicas: int, horizon: float,
                    record: int, bootstrap: int) -> int:
    """A lower bound, in bytes, of the memory a study holds at its peak: the recorded
    parameters ``(R, J, P)`` float64 of every run (kept for the bias and the plot), one
    step's data, prior and window ``(R, n, d + 2 D)``, its pairwise block ``(R, n, n)``, the
    bootstrap weights ``(B, R)`` and resampled curves ``(B, J, P)`` with
    ``J = min(record, steps) + 1``."""
    P, d, D = prob.n_params, prob.data_dim, prob.latent_dim
    J = min(record, int(round(horizon / min(etas)))) + 1
    kept = len(etas) * replicas * J * P
    step = replicas * (n * (d + 2 * D) + n * n + 4 * P)
    boot = bootstrap * (replicas + J * P)
    return 8 * (kept + step + boot)


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return 1 << 62


def _check_resources(prob, *, n, k, etas, replicas, horizon, record, bootstrap) -> None:
    """Refuse a study that cannot fit in this machine's memory, naming the option to lower."""
    most = max_record(horizon, etas)
    if record > most:
        raise ValueError(f"record must be <= {most}, the step count horizon / eta at the "
                         f"smallest eta = {min(etas):g} (a run has no more times to record; "
                         f"{DEFAULT_RECORD} is always allowed); got record={record}")
    need, have = memory_estimate(prob, n=n, k=k, etas=etas, replicas=replicas,
                                 horizon=horizon, record=record, bootstrap=bootstrap), \
        _physical_memory()
    if need > have:
        per = need / replicas
        raise ValueError(f"replicas={replicas} needs at least {need / 2 ** 30:.3g} GiB "
                         f"(about {per:.3g} bytes a replica over {len(etas)} step sizes, "
                         f"{min(record, most) + 1} recorded times), more than this machine's "
                         f"{have / 2 ** 30:.3g} GiB: lower --replicas (replicas <= "
                         f"{int(have // per)}), --record or --bootstrap")


def default_etas(problem) -> list:
    """The problem's suggested step sizes (``problem.defaults["etas"]``)."""
    return list(problem.defaults.get("etas", (0.04, 0.02, 0.01, 0.005, 0.0025)))


def _simulate_etas(prob, theta0, etas, ref, wrong, *, horizon, replicas, seed, init, refresh,
                   window, tau, record, bootstrap, progress, desc, **kw) -> tuple:
    """One replica simulation per step size (generator ``seed * 1000 + 1 + i`` for the i-th)
    and its errors against ``ref`` and ``wrong`` (bootstrap generator ``seed * 1000 + 999``,
    shared across step sizes in order); returns ``(sims, rows)``."""
    bar = None
    if progress:
        from tqdm.auto import tqdm
        total = sum(int(round(horizon / e)) for e in etas)
        bar = tqdm(total=total, desc=desc, unit="step", leave=False, dynamic_ncols=True)
    sims, rows = [], []
    boot_gen = torch.Generator().manual_seed(seed * 1000 + 999)
    try:
        for i, eta in enumerate(etas):
            sim = simulate(prob, theta0, eta=eta, horizon=horizon, replicas=replicas,
                           generator=torch.Generator().manual_seed(seed * 1000 + 1 + i),
                           init=init, refresh=refresh, window=window, tau=tau, record=record,
                           progress=bar, **kw)
            rows.append(errors(sim, ref, wrong, bootstrap=bootstrap, generator=boot_gen))
            sims.append(sim)
    finally:
        if bar is not None:
            bar.close()
    return sims, rows


def run_study(problem="linear-gaussian", *, params: Optional[dict] = None,
              n: Optional[int] = None, k: Optional[int] = None,
              etas: Optional[Sequence[float]] = None, replicas: int = 2048,
              horizon: Optional[float] = None, seed: int = 0, init: str = "encode",
              refresh: str = "post", reduction: str = "sum", balanced: bool = False,
              window: str = "steps", tau: Optional[float] = None, record: int = 32,
              bootstrap: int = 200, progress: bool = False, keep_sims: bool = True,
              desc: Optional[str] = None,
              references: Optional[tuple] = None) -> Study:
    """Run the study and return a :class:`Study`. ``None`` arguments take the problem's
    defaults (``problem.defaults``: n, k, horizon, etas). ``etas``: at least 2 distinct step
    sizes (:func:`check_etas`). ``bootstrap``: 0 (no confidence intervals: the order verdicts
    are INCONCLUSIVE) or at least :data:`~.rates.MIN_BOOTSTRAP`. A study with fewer than
    :data:`~.rates.MIN_REPLICAS` replicas runs, and its verdicts are INCONCLUSIVE. Every
    argument, and the memory the study needs (:func:`memory_estimate`), is checked before
    the first step. ``references``: ``(ref, wrong)`` already solved for this problem,
    theta_0 and options (:func:`~.reference.solve_reference`; ``wrong`` may be None), to
    reuse them across studies of the same flow (planted faults of an expensive problem)."""
    t0 = time.perf_counter()
    prob = get_problem(problem, **(params or {}))
    dflt = prob.defaults
    n = check_int("n", dflt.get("n", 8) if n is None else n, low=2)
    k = check_int("k", dflt.get("k", 1) if k is None else k, low=1, high=n, high_name="n")
    horizon = check_positive("horizon", dflt.get("horizon", 1.0) if horizon is None else horizon)
    etas = check_etas(default_etas(prob) if etas is None else etas)
    replicas = check_int("replicas", replicas, low=2)
    seed = check_int("seed", seed, low=0)
    record = check_int("record", record, low=1)
    bootstrap = check_int("bootstrap", bootstrap, low=0)
    if 0 < bootstrap < MIN_BOOTSTRAP:
        raise ValueError(f"bootstrap must be 0 (no confidence intervals) or >= {MIN_BOOTSTRAP} "
                         f"(a 95% interval needs that many resamplings); got bootstrap={bootstrap}")
    for name, flag in (("balanced", balanced), ("progress", progress), ("keep_sims", keep_sims)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool; got {name}={flag!r}")
    if window == "time" and tau is None:
        tau = horizon / 4
    theta0 = prob.theta0(torch.Generator().manual_seed(seed))
    kw = dict(n=n, k=k, reduction=reduction, balanced=balanced)
    for eta in etas:   # validate every option before the long part
        _check_common(prob, theta0, n, k, eta, horizon, replicas, init, refresh, reduction,
                      window, tau, min(record, DEFAULT_RECORD))
    _check_resources(prob, n=n, k=k, etas=etas, replicas=replicas, horizon=horizon,
                     record=record, bootstrap=bootstrap)
    if references is not None:
        ref, wrong = references
    else:
        ref = solve_reference(prob, theta0, horizon, ode="mow", **kw)
        wrong = solve_reference(prob, theta0, horizon, ode="wrong", **kw)
    sims, rows = _simulate_etas(prob, theta0, etas, ref, wrong, horizon=horizon,
                                replicas=replicas, seed=seed, init=init, refresh=refresh,
                                window=window, tau=tau, record=record, bootstrap=bootstrap,
                                progress=progress, desc=desc or f"{prob.name} n={n} k={k}",
                                **kw)
    orders = {"strong": fitted_order(rows, "strong"), "weak": fitted_order(rows, "weak")}
    bias = extrapolated_bias(sims, ref)
    verdicts = [order_verdict(orders["strong"], "strong"), order_verdict(orders["weak"], "weak"),
                bias_verdict(bias)]
    if k < n and wrong is not None:
        verdicts.append(wrong_ode_verdict(rows))
    plain = (int, float, str, bool, list, tuple, type(None))
    config = dict(problem=prob.name, n=n, k=k, horizon=horizon, replicas=replicas, seed=seed,
                  params={key: v if isinstance(v, plain) else repr(v)
                          for key, v in (params or {}).items()},
                  init=init, refresh=refresh, reduction=reduction, balanced=bool(balanced),
                  window=window, tau=tau, record=record, bootstrap=bootstrap,
                  theta0=[float(v) for v in theta0])
    return Study(config=config, etas=etas, rows=rows, orders=orders, verdicts=verdicts,
                 ref=ref, wrong=wrong, sims=sims if keep_sims else [],
                 wall=time.perf_counter() - t0, problem=prob,
                 extra={"bias_at_zero": None if bias is None else bias.to_json()})


def run_controls(main, *, replicas: int, seed: int, progress: bool,
                 control_replicas=None) -> dict:
    """The planted-fault studies: the main study with ``window="time"`` and with
    ``window="leak"`` (if it was a ``"steps"`` study with a window), and the position-weighted
    F with and without symmetrisation. ``control_replicas`` replicas each; None: ``min(replicas,
    512)`` for the window controls (their faults are large) and ``2 * replicas`` for the
    position-weighted pair (its fault is an O(1/n) asymmetry, the subtlest of the four)."""
    c = main.config
    out = {}
    if c["window"] == "steps" and c["k"] < c["n"] and c["init"] == "encode":
        for window in ("time", "leak"):
            out[f"{window}_window"] = run_study(
                main.problem, n=c["n"], k=c["k"], etas=main.etas,
                replicas=control_replicas or min(replicas, 512),
                horizon=c["horizon"], seed=seed, init=c["init"], refresh=c["refresh"],
                reduction=c["reduction"], balanced=c["balanced"], window=window,
                record=c["record"], bootstrap=c["bootstrap"], progress=progress,
                desc=f"control: window={window}")
    pw = get_problem("position-weighted")
    pw_record = min(c["record"], max_record(pw.defaults.get("horizon", 1.0), default_etas(pw)))
    for key, sym in (("position_weighted", False), ("symmetrized", True)):
        out[key] = run_study("position-weighted", params={"symmetrize": sym},
                             replicas=control_replicas or 2 * replicas,
                             seed=seed, record=pw_record, bootstrap=c["bootstrap"],
                             progress=progress, desc=f"control: {key.replace('_', '-')}")
    return out
