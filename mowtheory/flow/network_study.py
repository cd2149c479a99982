"""The convergence study of Theorem 1 on a real network, with its planted faults.

:func:`run_network_study` runs the study of :func:`~.study.run_study` on a
:class:`~.network.NetworkProblem` (R replicas of the network advanced together, at every
step size, against the exact reference ODE ``S' = -(k/n) grad C``), then:

- **observables** a user cares about, on the replicas and on the reference at the recorded
  times ``T/2`` and ``T``: ``recon`` (the mean per-pixel squared error over all N rows),
  ``F`` (``lam E[F_n]``, exact over a fixed subsample of ``observable_rows`` rows and as
  many prior points, so that it is cheap for every replica) and ``C = F + w E[red G]`` with
  the weights of the MoW flow; each gets strong and weak errors, fitted orders with
  bootstrap intervals and the order verdicts;
- **planted faults**, each judged by the same verdicts and required to be *rejected*: the
  window fixed in time (``window="time"``), the gradient leaking into the window
  (``window="leak"``), the time scale ``k/n`` replaced by 1 (``gradient_scale = n/k``),
  a position-dependent F (and its exact symmetrisation, which must pass), and a reference
  built from a wrong expectation formula (the main runs compared with it).

The expensive part on a network is the reference (each drift evaluation is a pass over the
N rows with ``O(N^2)`` kernel sums): it is solved once per distinct flow and shared by the
studies of that flow (``references=`` of :func:`~.study.run_study`).
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch

from .._validate import check_int, check_positive
from .network import NetworkProblem
from .faults import fault_verdict, fault_verdicts
from .rates import (FAULT_TIME_SCALE, FAULT_WRONG_EXPECTATION, bias_verdict, errors,
                    extrapolated_bias, fitted_order, order_verdict, prefixed)
from .reference import solve_reference
from .study import Study, run_study

OBSERVABLES = ("recon", "F", "C")


def variant(problem: NetworkProblem, **changes) -> NetworkProblem:
    """A copy of ``problem`` sharing its modules, data and prior points, with some of
    ``gradient_scale``, ``position_weight``, ``symmetric``, ``wrong_expectation``, ``name``
    changed (the planted faults and their controls)."""
    allowed = {"gradient_scale", "position_weight", "symmetric", "wrong_expectation", "name"}
    bad = set(changes) - allowed
    if bad:
        raise ValueError(f"variant() takes {sorted(allowed)}; got {sorted(bad)}")
    new = copy.copy(problem)
    for key, value in changes.items():
        setattr(new, key, value)
    new.gradient_scale = check_positive("gradient_scale", new.gradient_scale)
    new.position_weight = check_positive("position_weight", new.position_weight,
                                         allow_zero=True)
    new.permutation_invariant = new.symmetric or new.position_weight == 0
    return new


# --------------------------------------------------------------------------- observables
class _Run:
    """An observable's values on the replicas, shaped like a simulation for :func:`errors`."""

    def __init__(self, eta, times, values, stable):
        self.eta, self.times, self.thetas, self.stable = eta, times, values, stable
        self.replicas = values.shape[0]


class _Ref:
    def __init__(self, times, values):
        self.times, self.values = np.asarray(times, float), values.numpy()

    def __call__(self, t):
        t = np.atleast_1d(np.asarray(t, float))
        idx = [int(np.argmin(np.abs(self.times - v))) for v in t]
        return self.values[idx]


def _observe(problem: NetworkProblem, theta: torch.Tensor, *, n: int, k: int, reduction: str,
             sub: torch.Tensor, prior_sub: Optional[torch.Tensor], chunk: int = 32):
    """Observables of parameters ``theta`` (``(B, P)``) -> ``(B, 3)``: recon, F, C."""
    out = []
    w_g = k if reduction == "sum" else 1.0
    with torch.no_grad():
        for th in theta.split(chunk):
            recon = problem.per_example(th, problem.data).mean(-1) / problem.gradient_scale
            z = problem.encode(th, sub)
            prior = None if prior_sub is None else prior_sub.expand(len(th), *prior_sub.shape)
            f = problem.lam * problem.cost.expected_over_dataset(z, n, prior)
            c = (k / n) * f + w_g * recon
            out.append(torch.stack([recon, f, c], -1))
    return torch.cat(out)


def observable_studies(problem: NetworkProblem, main: Study, *, observable_rows: int = 256,
                       bootstrap: int = 200, seed: int = 0) -> dict:
    """Strong/weak errors, orders and verdicts of the observables (module docstring) for the
    runs of ``main`` (which must keep its simulations); returns ``{name: Study}``."""
    c = main.config
    n, k, horizon = c["n"], c["k"], c["horizon"]
    g = torch.Generator().manual_seed(seed * 1000 + 555)
    rows = torch.randperm(len(problem.data), generator=g)[:observable_rows]
    sub = problem.data[rows]
    prior_sub = problem.prior_points[:observable_rows] if problem.needs_prior else None
    kw = dict(n=n, k=k, reduction=c["reduction"], sub=sub, prior_sub=prior_sub)
    times = np.array([horizon / 2, horizon])
    ref_vals = _observe(problem, torch.from_numpy(main.ref(times)), **kw)    # (2, 3)
    boot = torch.Generator().manual_seed(seed * 1000 + 998)
    per_obs = {name: [] for name in OBSERVABLES}
    sims = {name: [] for name in OBSERVABLES}
    for sim in main.sims:
        idx = [int(np.argmin(np.abs(sim.times - t))) for t in times]
        if sim.stable:
            th = sim.thetas[:, idx]                                          # (R, 2, P)
            vals = _observe(problem, th.reshape(-1, th.shape[-1]), **kw).reshape(
                th.shape[0], len(idx), -1)
        else:
            vals = torch.full((sim.replicas, len(idx), 3), float("nan"), dtype=torch.float64)
        for j, name in enumerate(OBSERVABLES):
            run = _Run(sim.eta, times, vals[..., j:j + 1], sim.stable)
            ref = _Ref(times, ref_vals[:, j:j + 1])
            per_obs[name].append(errors(run, ref, None, bootstrap=bootstrap, generator=boot))
            sims[name].append(run)
    out = {}
    for j, name in enumerate(OBSERVABLES):
        rws = per_obs[name]
        orders = {kind: fitted_order(rws, kind) for kind in ("strong", "weak")}
        bias = extrapolated_bias(sims[name], _Ref(times, ref_vals[:, j:j + 1]))
        vs = [prefixed(v, f"observable.{name}", f"observable {name}: ") for v in (
            order_verdict(orders["strong"], "strong"), order_verdict(orders["weak"], "weak"),
            bias_verdict(bias))]
        out[name] = Study(config=dict(c, problem=f"{c['problem']} [{name}]"), etas=main.etas,
                          rows=rws, orders=orders, verdicts=vs, ref=None, wrong=None,
                          extra={"reference_values": ref_vals[:, j].tolist(),
                                 "times": times.tolist()})
    return out


# --------------------------------------------------------------------------- the study
@dataclass
class NetworkStudy:
    """Result of :func:`run_network_study`."""
    main: Study
    observables: dict
    controls: dict
    verdicts: list
    wall: float
    config: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"config": self.config, "main": self.main.to_json(),
                "observables": {k: v.to_json() for k, v in self.observables.items()},
                "controls": {k: v.to_json() for k, v in self.controls.items()},
                "verdicts": self.verdicts, "wall_seconds": round(self.wall, 2)}

    def table(self) -> str:
        lines = [self.main.table()]
        for name, st in self.observables.items():
            o = [st.orders[kind] for kind in ("strong", "weak")]
            fmt = (lambda x: f"{x.estimate:.3f} [{x.ci[0]:.3f}, {x.ci[1]:.3f}]"
                   if np.isfinite(x.estimate) and np.isfinite(x.ci[0]) else "n/a")
            weak = ", ".join(f"{r.weak:.2e}" if r.stable else "unstable" for r in st.rows)
            lines.append(f"observable {name:>5}: strong order {fmt(o[0])}, weak order "
                         f"{fmt(o[1])}; weak errors {weak}")
        return "\n".join(lines)


def _judged(sims: Sequence, ref, config: dict, *, bootstrap: int, seed: int) -> Study:
    """The runs ``sims`` judged against another reference ``ref`` (a planted wrong one)."""
    gen = torch.Generator().manual_seed(seed * 1000 + 997)
    rows = [errors(s, ref, None, bootstrap=bootstrap, generator=gen) for s in sims]
    orders = {kind: fitted_order(rows, kind) for kind in ("strong", "weak")}
    verdicts = [order_verdict(orders["strong"], "strong"), order_verdict(orders["weak"], "weak"),
                bias_verdict(extrapolated_bias(sims, ref))]
    return Study(config=config, etas=[s.eta for s in sims], rows=rows, orders=orders,
                 verdicts=verdicts, ref=ref, wrong=None, sims=[])


def run_network_study(problem: NetworkProblem, *, n: int = 8, k: int = 1,
                      etas: Optional[Sequence[float]] = None, replicas: int = 256,
                      horizon: float = 1.0, seed: int = 0, init: str = "encode",
                      refresh: str = "post", reduction: str = "sum", record: int = 16,
                      bootstrap: int = 200, controls: bool = True,
                      control_replicas: Optional[int] = None, position_weight: float = 1.0,
                      observables: bool = True, observable_rows: int = 256,
                      progress: bool = False) -> NetworkStudy:
    """Theorem 1 on ``problem`` (a :class:`~.network.NetworkProblem`): the main study, its
    observables and (``controls``) the planted faults, with every verdict.

    ``control_replicas`` (default ``replicas``) for the fault studies; ``position_weight``:
    the weight c of the planted position-dependent term. Returns :class:`NetworkStudy`;
    ``verdicts`` holds the main study's verdicts, the observables' and the faults'."""
    if not isinstance(problem, NetworkProblem):
        raise TypeError(f"problem must be a NetworkProblem (mowtheory.flow.network); got "
                        f"{type(problem).__name__}")
    t0 = time.perf_counter()
    n = check_int("n", n, low=2)
    k = check_int("k", k, low=1, high=n, high_name="n")
    replicas = check_int("replicas", replicas, low=2)
    control_replicas = replicas if control_replicas is None else \
        check_int("control_replicas", control_replicas, low=2)
    position_weight = check_positive("position_weight", position_weight)
    observable_rows = check_int("observable_rows", observable_rows, low=2)
    common = dict(n=n, k=k, etas=etas, horizon=horizon, seed=seed, init=init, refresh=refresh,
                  reduction=reduction, record=record, bootstrap=bootstrap, progress=progress)
    main = run_study(problem, replicas=replicas, desc="main study", **common)
    main.config.pop("theta0", None)          # P numbers: the network's, not a result
    verdicts = list(main.verdicts)
    obs = {}
    if observables:
        obs = observable_studies(problem, main, observable_rows=observable_rows,
                                 bootstrap=bootstrap, seed=seed)
        for st in obs.values():
            verdicts += st.verdicts
    ctl = {}
    if controls and k < n:
        refs = (main.ref, None)
        common["etas"] = main.etas
        for window in ("time", "leak"):
            if init == "encode":
                ctl[f"{window}_window"] = run_study(
                    problem, replicas=control_replicas, window=window, references=refs,
                    desc=f"fault: window={window}", **common)
        ctl["time_scale"] = run_study(
            variant(problem, gradient_scale=n / k, name=f"{problem.name} [time scale 1]"),
            replicas=control_replicas, references=refs, desc="fault: time scale 1", **common)
        pw = variant(problem, position_weight=position_weight, symmetric=False,
                     name=f"{problem.name} [position-weighted]")
        theta0 = problem.theta0()
        pw_ref = solve_reference(pw, theta0, horizon, n=n, k=k, reduction=reduction)
        ctl["position_weighted"] = run_study(pw, replicas=control_replicas,
                                             references=(pw_ref, None),
                                             desc="fault: position-weighted F", **common)
        ctl["symmetrized"] = run_study(
            variant(pw, symmetric=True, name=f"{problem.name} [symmetrised]"),
            replicas=control_replicas, references=(pw_ref, None),
            desc="control: symmetrised F", **common)
        bad = variant(problem, wrong_expectation=True, name=f"{problem.name} [wrong E]")
        bad_ref = solve_reference(bad, theta0, horizon, n=n, k=k, reduction=reduction)
        ctl["wrong_expectation"] = _judged(main.sims, bad_ref,
                                           dict(main.config, problem=bad.name),
                                           bootstrap=bootstrap, seed=seed)
        verdicts += fault_verdicts(ctl["position_weighted"], ctl["symmetrized"],
                                   ctl.get("time_window"), ctl.get("leak_window"))
        verdicts += [
            fault_verdict(FAULT_TIME_SCALE, "planted fault: time scale k/n replaced by 1 (drift "
                          "n/k times MoW's) is rejected", ctl["time_scale"]),
            fault_verdict(FAULT_WRONG_EXPECTATION, "planted fault: a reference from a wrong "
                          "expectation formula (n^2 z-z pairs) is rejected",
                          ctl["wrong_expectation"])]
    config = dict(main.config, controls=bool(controls), control_replicas=control_replicas,
                  position_weight=position_weight, observable_rows=observable_rows,
                  n_params=problem.n_params, data_rows=len(problem.data),
                  lam=problem.lam, cost=problem.cost.name)
    config.pop("theta0", None)
    return NetworkStudy(main=main, observables=obs, controls=ctl, verdicts=verdicts,
                        wall=time.perf_counter() - t0, config=config)
