"""Errors, fitted orders with bootstrap confidence intervals, and verdicts.

For a run at step size eta with replicas ``S_eta^r`` and the reference ``S`` (the ODE (2)),
on the recorded times ``t_j`` (every ``horizon/record``, see :mod:`.simulate`):

- strong error ``E_s = mean_r sup_j |S_eta^r(t_j) - S(t_j)|``  (Euclidean norm over parameters;
  expected order 1/2: single paths fluctuate by O(sqrt(eta)));
- weak error ``E_w = sup_j |mean_r S_eta^r(t_j) - S(t_j)|`` (expected order 1: Euler,
  modified-equation and staleness terms are all O(eta));
- its standard error: the bootstrap standard deviation over replicas; its **noise floor**: the
  95th percentile over the bootstrap of ``sup_j |mean_b(t_j) - mean(t_j)|``, the size the weak
  error would have from Monte Carlo noise alone (``max_j sqrt(tr Cov_j / R)`` without a
  bootstrap). A weak error below its floor is not significant: it is reported as "at noise
  floor" and left out of the weak fit (above it, the noise inflates the weak error by at most
  the floor and typically by ``(floor/weak)^2 / 2``);
- the wrong-ODE weak error: the same with ``S' = -grad C`` (:mod:`.reference`, ``ode="wrong"``).
- the **bias at eta -> 0** (:func:`extrapolated_bias`): the mean error curves
  ``m_eta(t_j) = mean_r S_eta^r(t_j) - S(t_j)`` of the two smallest stable step sizes
  ``eta_1 < eta_2 = q eta_1``, extrapolated to zero step size (Richardson, first order):
  ``D_0 = (q m_{eta_1} - m_{eta_2}) / (q - 1)``, each (time, parameter) entry divided by its
  standard error (the runs are independent). A first-order method has ``m_eta = eta e(t) +
  O(eta^2)``, so ``D_0 = O(eta_1^2)`` plus noise; a drift that is wrong by a fixed amount
  leaves a floor ``D_0 -> b(t) != 0`` that a slope fitted over all step sizes can hide (a
  gradient 10 % too large still fits a weak order of 0.95). Studentising matters: the
  parameters' Monte Carlo noise differs by an order of magnitude, and a Euclidean sup is
  dominated by the noisiest one.

Orders are least-squares slopes of ``log E`` against ``log eta`` over the stable (and, for the
weak error, resolved) step sizes; the confidence intervals are percentile intervals of the
slope over ``bootstrap`` resamplings of the replicas (independently at every eta).

Verdicts (``{"id", "claim", "passed", "status", "detail"}``, :func:`.verdicts.verdict`; ``status`` is
``"PASS"``, ``"FAIL"`` or ``"INCONCLUSIVE"``, and an inconclusive verdict has ``passed=False``):
a verdict whose statistic, interval or sample is NaN, empty or below a stated minimum
(:data:`MIN_REPLICAS` replicas, :data:`MIN_BOOTSTRAP` bootstrap resamplings,
:data:`MIN_ORDER_POINTS` usable step sizes for an order) is INCONCLUSIVE with the reason,
never PASS or FAIL. Strong order in ``0.5 +/- 0.3``; weak order in
``1 +/- 0.3``; no bias at eta -> 0 (every ``|D_0| / SE`` below the Bonferroni threshold at
family-wise level ``BIAS_ALPHA`` = 0.1 %); the wrong ODE is rejected (its error does not fall with eta: fitted slope
< 0.3, and at the smallest stable eta it exceeds the right ODE's weak error by >= 10x);
planted faults (:func:`mowtheory.flow.faults.fault_verdicts`): the position-weighted F, the time-fixed window and the
gradient leaking into the window (``window="leak"``) are rejected (weak error resolved and the
orders not both in band), the symmetrised F passes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Optional, Sequence

import numpy as np
import torch

from .reference import ReferenceSolution
from .simulate import SimulationResult
from .verdicts import (FAIL, FAULT_LEAK, FAULT_POSITION_WEIGHTED,  # noqa: F401 (re-exported)
                       FAULT_TIME_SCALE, FAULT_TIME_WINDOW, FAULT_WRONG_EXPECTATION, IDS,
                       INCONCLUSIVE, NO_BIAS_FLOOR, PASS, STRONG_ORDER, SYMMETRIZED_FOLLOWS,
                       WEAK_ORDER, WRONG_ODE, Verdict, by_id, id_of, prefixed, status, verdict)

STRONG_BAND = (0.2, 0.8)
WEAK_BAND = (0.7, 1.3)
WRONG_MAX_SLOPE = 0.3
WRONG_MARGIN = 10.0
FLOOR_FACTOR = 1.0
BIAS_ALPHA = 1e-3
#: replicas below which no verdict is drawn: the bootstrap and the sample covariances behind
#: every interval and noise floor rest on the replicas being a sample, not a handful
MIN_REPLICAS = 16
#: bootstrap resamplings below which a 95% percentile interval is not computed: with fewer
#: than 1 / 0.05 = 20 resamplings its 2.5% and 97.5% tails hold less than half a resampling
MIN_BOOTSTRAP = 20
#: usable step sizes an order is fitted over (a slope through 2 points has no residual)
MIN_ORDER_POINTS = 3

def all_finite(*vals) -> bool:
    return all(v is not None and math.isfinite(float(v)) for v in vals)


def sample_problem(rows: Sequence["EtaErrors"]) -> Optional[str]:
    """Why the replicas of ``rows`` are too few for a verdict (None when they suffice)."""
    reps = [e.replicas for e in rows if e.stable and e.replicas is not None]
    if reps and min(reps) < MIN_REPLICAS:
        return (f"{min(reps)} replicas; a verdict needs replicas >= {MIN_REPLICAS} "
                f"(MIN_REPLICAS)")
    return None


@dataclass
class EtaErrors:
    """Errors of one step size; ``None`` fields when the run was unstable."""
    eta: float
    stable: bool
    strong: Optional[float] = None
    strong_se: Optional[float] = None
    weak: Optional[float] = None
    weak_se: Optional[float] = None
    noise_floor: Optional[float] = None
    wrong: Optional[float] = None
    resolved: bool = False
    boot_strong: Optional[np.ndarray] = field(default=None, repr=False)
    boot_weak: Optional[np.ndarray] = field(default=None, repr=False)
    replicas: Optional[int] = None
    bootstrap: int = 0


def _boot_counts(R: int, B: int, generator: torch.Generator) -> torch.Tensor:
    idx = torch.randint(R, (B, R), generator=generator)
    counts = torch.zeros(B, R, dtype=torch.float64)
    counts.scatter_add_(1, idx, torch.ones(B, R, dtype=torch.float64))
    return counts


def errors(sim: SimulationResult, ref: ReferenceSolution,
           wrong: Optional[ReferenceSolution] = None, *, bootstrap: int = 200,
           generator: Optional[torch.Generator] = None) -> EtaErrors:
    """Strong and weak errors (with bootstrap samples) of one run against ``ref``."""
    if not sim.stable:
        return EtaErrors(eta=sim.eta, stable=False, replicas=sim.replicas)
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    S = torch.from_numpy(ref(sim.times))                        # (J, P)
    d = sim.thetas - S                                          # (R, J, P)
    R, J, P = d.shape
    per_rep = d.norm(dim=-1).amax(-1)                           # (R,)
    mean_d = d.mean(0)                                          # (J, P)
    weak = float(mean_d.norm(dim=-1).max())
    floor = float((d.var(0, unbiased=True).sum(-1) / R).sqrt().max()) if R > 1 else float("inf")
    out = EtaErrors(eta=sim.eta, stable=True, strong=float(per_rep.mean()), weak=weak,
                    noise_floor=floor, resolved=weak >= FLOOR_FACTOR * floor, replicas=R)
    if wrong is not None:
        Sw = torch.from_numpy(wrong(sim.times))
        out.wrong = float((sim.thetas.mean(0) - Sw).norm(dim=-1).max())
    if bootstrap > 0 and R > 1:
        C = _boot_counts(R, bootstrap, generator) / R            # (B, R)
        out.bootstrap = int(bootstrap)
        out.boot_strong = (C @ per_rep).numpy()
        mb = (C @ d.reshape(R, J * P)).reshape(-1, J, P)        # (B, J, P) resampled means
        out.boot_weak = mb.norm(dim=-1).amax(-1).numpy()
        null = (mb - mean_d).norm(dim=-1).amax(-1)              # sup-norm of pure MC noise
        out.noise_floor = float(torch.quantile(null, 0.95))
        out.resolved = weak >= FLOOR_FACTOR * out.noise_floor
        out.strong_se = float(out.boot_strong.std(ddof=1))
        out.weak_se = float(out.boot_weak.std(ddof=1))
    return out


@dataclass
class Bias:
    """The weak error extrapolated to eta -> 0 (:func:`extrapolated_bias`)."""
    etas: tuple
    sup: float           # sup_j |D_0(t_j)| (Euclidean over parameters)
    z_max: float         # max over (time, parameter) of |D_0| / its standard error
    z_crit: float        # Bonferroni threshold of z_max at family-wise level BIAS_ALPHA
    entries: int         # number of (time, parameter) entries tested
    replicas: int = 0    # the smaller replica count of the two runs

    def to_json(self) -> dict:
        f = (lambda v: v if math.isfinite(v) else None)
        return {"etas": list(self.etas), "sup": f(self.sup), "z_max": f(self.z_max),
                "z_crit": f(self.z_crit), "entries": self.entries, "replicas": self.replicas}


def extrapolated_bias(sims: Sequence[SimulationResult], ref: ReferenceSolution, *,
                      alpha: Optional[float] = None) -> Optional[Bias]:
    """Richardson extrapolation to eta -> 0 of the mean error curves of the two smallest stable
    step sizes (module docstring), studentised entry by entry, at the times both runs recorded;
    None with fewer than two stable runs."""
    alpha = BIAS_ALPHA if alpha is None else alpha
    use = sorted((s for s in sims if s.stable), key=lambda s: s.eta)
    use = [s for i, s in enumerate(use) if i == 0 or s.eta > use[i - 1].eta][:2]  # distinct
    if len(use) < 2:
        return None
    (s1, s2), q = use, use[1].eta / use[0].eta
    # the times both runs recorded (always t = 0 and the horizon; all of them when the step
    # counts are multiples of ``record``)
    t1, t2 = np.asarray(s1.times, float), np.asarray(s2.times, float)
    tol = 1e-9 * max(1.0, float(np.abs(t1).max()))
    i1, i2 = np.nonzero(np.abs(t1[:, None] - t2[None, :]) <= tol)
    d1, d2 = ((s.thetas[:, i] - torch.from_numpy(ref(s.times[i])))             # (R, J, P)
              for s, i in ((s1, i1), (s2, i2)))
    D0 = (q * d1.mean(0) - d2.mean(0)) / (q - 1)                             # (J, P)
    se = ((q ** 2 * d1.var(0) / len(d1) + d2.var(0) / len(d2)).sqrt() / (q - 1))
    ok = se > 0                                   # t = 0 (and any frozen parameter) has none
    m = int(ok.sum())
    z_max = float((D0[ok].abs() / se[ok]).max()) if m else 0.0
    z_crit = NormalDist().inv_cdf(1 - alpha / (2 * max(m, 1)))
    return Bias((s1.eta, s2.eta), float(D0.norm(dim=-1).max()), z_max, z_crit, m,
                min(len(d1), len(d2)))


def bias_verdict(bias: Optional[Bias]) -> dict:
    """The weak error must extrapolate to 0 as eta -> 0: no entry of ``D_0`` beyond the
    Bonferroni threshold (a bias that the step size cannot remove)."""
    claim, vid = "weak error extrapolates to 0 as eta -> 0 (no bias floor)", NO_BIAS_FLOOR
    if bias is None:
        return verdict(vid, claim, False, "", inconclusive="< 2 stable step sizes")
    if bias.replicas < MIN_REPLICAS:
        return verdict(vid, claim, False, "", inconclusive=(
            f"{bias.replicas} replicas; a verdict needs replicas >= {MIN_REPLICAS} (MIN_REPLICAS)"))
    if bias.entries == 0 or not all_finite(bias.z_max, bias.z_crit, bias.sup):
        return verdict(vid, claim, False, "", inconclusive=(
            f"degenerate statistic: z_max={bias.z_max}, sup |D_0|={bias.sup} over "
            f"{bias.entries} entries with a standard error"))
    ok = bias.z_max <= bias.z_crit
    return verdict(vid, claim, ok, (f"Richardson extrapolation from eta = {bias.etas[0]:g}, {bias.etas[1]:g}: "
                       f"sup |D_0| = {bias.sup:.3g}, largest |D_0| / SE = {bias.z_max:.2f} over "
                       f"{bias.entries} (time, parameter) entries (must be <= {bias.z_crit:.2f}, "
                       f"Bonferroni at family-wise {BIAS_ALPHA:g})"))


def fit_order(etas: Sequence[float], errs: Sequence[float]):
    """Least-squares ``log err = p log eta + c``; returns ``(p, c)`` (NaN with < 2 points)."""
    x, y = np.log(np.asarray(etas, float)), np.log(np.asarray(errs, float))
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 2:
        return float("nan"), float("nan")
    p, c = np.polyfit(x[ok], y[ok], 1)
    return float(p), float(c)


def _slope_rows(etas, rows):
    """Slopes of many error curves at once: ``rows`` (B, m) against ``etas`` (m,)."""
    x = np.log(np.asarray(etas, float))
    y = np.log(np.maximum(rows, 1e-300))
    xc = x - x.mean()
    return (y - y.mean(1, keepdims=True)) @ xc / (xc @ xc)


@dataclass
class Order:
    estimate: float
    ci: tuple
    etas: list
    note: str = ""
    replicas: Optional[int] = None     # the fewest replicas of a run it was fitted over

    def to_json(self) -> dict:
        f = (lambda v: None if v is None or not math.isfinite(v) else round(v, 4))
        return {"estimate": f(self.estimate), "ci": [f(self.ci[0]), f(self.ci[1])],
                "etas": self.etas, "note": self.note}


def fitted_order(rows: Sequence[EtaErrors], kind: str, *,
                 min_points: int = MIN_ORDER_POINTS) -> Order:
    """Order of the ``"strong"`` or ``"weak"`` error over the usable step sizes, with a 95%
    basic bootstrap interval (NaN, with the reason in ``note``, below :data:`MIN_BOOTSTRAP`
    resamplings)."""
    use = [e for e in rows if e.stable and (kind == "strong" or e.resolved)]
    etas = [e.eta for e in use]
    reps = min((e.replicas for e in use if e.replicas is not None), default=None)
    nan2 = (float("nan"), float("nan"))
    if len(set(etas)) < min_points:
        why = ("unstable" if kind == "strong" else "unstable or below the noise floor")
        return Order(float("nan"), nan2, etas,
                     f"only {len(set(etas))} distinct step size(s) usable (others {why}); "
                     f"need {min_points}", reps)
    est, _ = fit_order(etas, [getattr(e, kind) for e in use])
    boots = [getattr(e, "boot_" + kind) for e in use]
    nboot = min(e.bootstrap for e in use)
    if nboot < MIN_BOOTSTRAP or any(b is None for b in boots):
        return Order(est, nan2, etas,
                     f"no confidence interval: bootstrap={nboot} resamplings; a 95% interval "
                     f"needs bootstrap >= {MIN_BOOTSTRAP} (MIN_BOOTSTRAP)", reps)
    slopes = _slope_rows(etas, np.stack(boots, 1))
    lo, hi = np.percentile(slopes, [2.5, 97.5])
    ci = (float(2 * est - hi), float(2 * est - lo))     # basic (bias-reflecting) interval
    note = "" if all_finite(est, *ci) else f"degenerate fit: estimate {est}, 95% CI {list(ci)}"
    return Order(est, ci, etas, note, reps)


def _fmt_ci(o: Order) -> str:
    return f"{o.estimate:.3f} (95% CI [{o.ci[0]:.3f}, {o.ci[1]:.3f}]) over eta = " + \
        ", ".join(f"{e:g}" for e in o.etas)


def order_verdict(o: Order, kind: str) -> dict:
    lo, hi = STRONG_BAND if kind == "strong" else WEAK_BAND
    target = 0.5 if kind == "strong" else 1.0
    claim, vid = f"{kind} order within {target} +/- 0.3", f"{kind}_order"
    if not all_finite(o.estimate, *o.ci):
        return verdict(vid, claim, False, "", inconclusive=o.note or (
            f"degenerate fit: estimate {o.estimate}, 95% CI {list(o.ci)}"))
    if o.replicas is not None and o.replicas < MIN_REPLICAS:
        return verdict(vid, claim, False, "", inconclusive=(
            f"{o.replicas} replicas; a verdict needs replicas >= {MIN_REPLICAS} (MIN_REPLICAS)"))
    ok = lo <= o.estimate <= hi
    return verdict(vid, claim, ok, f"fitted {kind} order " + _fmt_ci(o))


def wrong_ode_verdict(rows: Sequence[EtaErrors]) -> dict:
    """The wrong ODE ``S' = -grad C`` must be rejected: its error does not fall with eta and,
    at the smallest stable eta, exceeds the right ODE's weak error by a wide margin."""
    claim = (f"wrong ODE S' = -grad C rejected (error does not fall with eta; "
             f">= {WRONG_MARGIN:g}x the right ODE's at the smallest eta)")
    use = [e for e in rows if e.stable and e.wrong is not None]
    if len({e.eta for e in use}) < 2:
        return verdict(WRONG_ODE, claim, False, "",
                       inconclusive="< 2 distinct stable step sizes")
    few = sample_problem(use)
    if few:
        return verdict(WRONG_ODE, claim, False, "", inconclusive=few)
    slope, _ = fit_order([e.eta for e in use], [e.wrong for e in use])
    last = min(use, key=lambda e: e.eta)
    ratio = last.wrong / max(last.weak, last.noise_floor, 1e-300)
    if not all_finite(slope, ratio):
        return verdict(WRONG_ODE, claim, False, "", inconclusive=(
            f"degenerate statistic: slope {slope}, ratio {ratio}"))
    ok = slope < WRONG_MAX_SLOPE and ratio >= WRONG_MARGIN
    detail = (f"wrong-ODE error slope {slope:.3f} (must be < {WRONG_MAX_SLOPE}); at eta = "
              f"{last.eta:g} it is {last.wrong:.4g} vs right-ODE weak error {last.weak:.4g} "
              f"(ratio {ratio:.1f}, must be >= {WRONG_MARGIN:g})")
    return verdict(WRONG_ODE, claim, ok, detail)


