"""The coupled, reference-free check: MoW_k(n) against standard n-batch SGD on the same flow.

Where no exact ``C(theta)`` exists (``cwae``'s log, ``gmmn``'s square root, ``swae``, the
``sqrt_mean`` reduction, a user's own F), Theorem 1 can still be tested without a reference
ODE: two algorithms with the **same limit ODE** must have ensemble means that approach each
other at weak order 1 as eta -> 0.

The partner of MoW_k(n) with step eta is SGD on full batches of n fresh examples with step
``eta * k / n`` (one SGD step per MoW step, so both reach time ``t = l * eta`` at step l), on

    cost_SGD = w_F F(z_1..z_n; V) + (n / k) red(G(x_1), ..., G(x_k))      (w_F = n/k if balanced else 1)

i.e. F on the whole batch and the reduced per-example cost of k of its n examples, scaled by
``n/k``. Its expected drift per unit time is ``(k/n) grad(w_F E[F_n]) + grad E[red_k G]``,
exactly the MoW drift of the theorem (for every reduction: ``E red_k G`` is the same
expectation in both, however nonlinear ``red`` is). Neither algorithm is the ODE, but both
are within O(eta) of it in the mean, so their mean paths are within O(eta) of each other.

The contrast (which the check must reject): the same SGD with step ``eta`` (the time scale
``k/n`` forgotten), whose limit is ``S' = -grad(w_F E[F_n] + (n/k) E[red_k G])``; the distance
between the means then stays O(1) as eta -> 0.

What it cannot see: a fault shared by both algorithms (a wrong F, a wrong G, a wrong
expectation: there is none), a bias of the same sign and size in both (only differences
are measured), and the strong order (the two noises are independent).

Statistics: the weak distance ``sup_j |mean MoW(t_j) - mean SGD(t_j)|`` with bootstrap
samples that resample both ensembles independently; the noise floor is the 95th percentile
of the resampled distance around its own value; orders and verdicts are those of
:mod:`.rates`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch

from .._validate import check_choice, check_int, check_positive
from ..mow import REDUCTIONS, reduce_per_example
from .problem import DTYPE, Problem
from .problems import get_problem
from .rates import (FLOOR_FACTOR, WRONG_MAX_SLOPE, EtaErrors, _boot_counts, fit_order,
                    fitted_order, order_verdict, verdict)
from .simulate import Draws, simulate
from .study import check_etas

TIME_SCALES = ("k/n", "1")


def simulate_sgd(problem: Problem, theta0, *, n: int, k: int, eta: float, horizon: float,
                 replicas: int, generator: torch.Generator, reduction: str = "sum",
                 balanced: bool = False, time_scale: str = "k/n",
                 record: int = 16) -> tuple[np.ndarray, torch.Tensor]:
    """The SGD partner of MoW_k(n) (module docstring): ``horizon / eta`` steps of step
    ``eta * k / n`` (``time_scale="k/n"``) or ``eta`` (``"1"``, the contrast), R replicas
    advanced together. Returns ``(times (J,), thetas (R, J, P))`` at the times of
    :func:`~.simulate.simulate` with the same ``record`` (time ``t = step * eta``)."""
    problem = get_problem(problem) if isinstance(problem, str) else problem
    check_choice("time_scale", time_scale, TIME_SCALES)
    check_choice("reduction", reduction, REDUCTIONS)
    n = check_int("n", n, low=2)
    k = check_int("k", k, low=1, high=n, high_name="n")
    eta = check_positive("eta", eta)
    R = check_int("replicas", replicas, low=1)
    steps = int(round(check_positive("horizon", horizon) / eta))
    rec = sorted({int(round(j * steps / record)) for j in range(record + 1)})
    step = eta * k / n if time_scale == "k/n" else eta
    w_f = n / k if balanced else 1.0
    draws = Draws(problem, n=n, k=n, replicas=R, generator=generator)
    theta = torch.as_tensor(theta0, dtype=DTYPE).expand(R, -1).clone()
    out = torch.full((R, len(rec), theta.shape[-1]), float("nan"), dtype=DTYPE)
    out[:, 0] = theta
    where = {s: j for j, s in enumerate(rec)}
    for s in range(steps):
        x, prior = draws.step()
        th = theta.requires_grad_(True)
        f = problem.batch_cost(problem.encode(th, x), prior)
        g = reduce_per_example(problem.per_example(th, x[..., :k, :]), reduction)
        (grad,) = torch.autograd.grad((w_f * f + (n / k) * g).sum(), th)
        theta = (th - step * grad).detach()
        if s + 1 in where:
            out[:, where[s + 1]] = theta
    return np.array(rec, dtype=float) * eta, out


def coupled_errors(eta: float, a: torch.Tensor, b: torch.Tensor, *, bootstrap: int,
                   generator: torch.Generator) -> EtaErrors:
    """Weak distance between the ensemble means of ``a`` (``(R_a, J, P)``) and ``b``
    (``(R_b, J, P)``), as an :class:`~.rates.EtaErrors` (``weak``, its bootstrap samples,
    its noise floor; ``strong`` is not defined here and left None). Unstable (non-finite)
    ensembles give an unstable row."""
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        return EtaErrors(eta=eta, stable=False, replicas=min(len(a), len(b)))
    diff = a.mean(0) - b.mean(0)                                          # (J, P)
    weak = float(diff.norm(dim=-1).max())
    out = EtaErrors(eta=eta, stable=True, weak=weak, replicas=min(len(a), len(b)))
    var = a.var(0) / len(a) + b.var(0) / len(b)
    out.noise_floor = float(var.sum(-1).sqrt().max())
    if bootstrap > 0:
        (Ra, J, P), Rb = a.shape, len(b)
        ma = (_boot_counts(Ra, bootstrap, generator) / Ra) @ a.reshape(Ra, J * P)
        mb = (_boot_counts(Rb, bootstrap, generator) / Rb) @ b.reshape(Rb, J * P)
        d = (ma - mb).reshape(-1, J, P)                                   # (B, J, P)
        out.bootstrap = int(bootstrap)
        out.boot_weak = d.norm(dim=-1).amax(-1).numpy()
        out.boot_strong = out.boot_weak          # unused; keeps the row complete
        out.noise_floor = float(torch.quantile((d - diff).norm(dim=-1).amax(-1), 0.95))
        out.weak_se = float(out.boot_weak.std(ddof=1))
    out.resolved = weak >= FLOOR_FACTOR * out.noise_floor
    return out


@dataclass
class CoupledStudy:
    """Result of :func:`run_coupled`: rows and the weak order of MoW against its partner
    (``rows``, ``order``) and against the contrast (``contrast_rows``), and the verdicts."""
    config: dict
    etas: list
    rows: list
    contrast_rows: list
    order: object
    verdicts: list
    wall: float = 0.0
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        col = (lambda rows, f: [None if getattr(r, f) is None else float(getattr(r, f))
                                for r in rows])
        return dict(self.config, etas=self.etas, weak_distance=col(self.rows, "weak"),
                    weak_distance_floor=col(self.rows, "noise_floor"),
                    contrast_distance=col(self.contrast_rows, "weak"),
                    order=self.order.to_json(), verdicts=self.verdicts,
                    wall_seconds=round(self.wall, 2))

    def table(self) -> str:
        c = self.config
        lines = [f"coupled check, {c['problem']}: MoW_{c['k']}({c['n']}) at eta against "
                 f"{c['n']}-batch SGD at eta*k/n (and at eta, the contrast); "
                 f"reduction={c['reduction']} balanced={c['balanced']} replicas={c['replicas']}",
                 f"{'eta':>10}  {'distance +/- se':>22}  {'floor':>9}  {'contrast':>9}"]
        for r, w in zip(self.rows, self.contrast_rows):
            if not r.stable:
                lines.append(f"{r.eta:>10g}  unstable")
                continue
            se = f" +/- {r.weak_se:.1e}" if r.weak_se is not None else ""
            lines.append(f"{r.eta:>10g}  {r.weak:.3e}{se:>11}  {r.noise_floor:9.2e}  "
                         f"{w.weak if w.stable else float('nan'):9.4f}")
        o = self.order
        lines.append(f"weak order of the distance: {o.estimate:.3f}  95% CI "
                     f"[{o.ci[0]:.3f}, {o.ci[1]:.3f}]" if np.isfinite(o.estimate)
                     else f"weak order: n/a ({o.note})")
        return "\n".join(lines)


def run_coupled(problem, *, n: int = 8, k: int = 1, etas: Optional[Sequence[float]] = None,
                replicas: int = 256, horizon: float = 1.0, seed: int = 0,
                refresh: str = "post", reduction: str = "sum", balanced: bool = False,
                record: int = 16, bootstrap: int = 200, progress: bool = False) -> CoupledStudy:
    """The coupled check of ``problem`` (any flow problem, no exact expectation needed).

    For every eta: MoW_k(n) (:func:`~.simulate.simulate`), its SGD partner and the contrast
    (:func:`simulate_sgd`), independent seeded streams. Verdicts: the MoW-partner distance
    falls at weak order within ``1 +/- 0.3``; the contrast is rejected (its distance does not
    fall: slope < 0.3, and at the smallest eta it is resolved and >= 10x the partner's)."""
    t0 = time.perf_counter()
    prob = get_problem(problem) if isinstance(problem, str) else problem
    n = check_int("n", n, low=2)
    k = check_int("k", k, low=1, high=n - 1, high_name="n - 1")
    etas = check_etas(list(prob.defaults.get("etas", (0.04, 0.02, 0.01, 0.005)))
                      if etas is None else etas)
    replicas = check_int("replicas", replicas, low=2)
    seed = check_int("seed", seed, low=0)
    bootstrap = check_int("bootstrap", bootstrap, low=0)
    theta0 = prob.theta0(torch.Generator().manual_seed(seed))
    boot = torch.Generator().manual_seed(seed * 1000 + 996)
    rows, contrast = [], []
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=3 * len(etas), desc=f"coupled {prob.name}", unit="run", leave=False)
    kw = dict(n=n, k=k, horizon=horizon, replicas=replicas, reduction=reduction,
              balanced=balanced, record=record)
    try:
        for i, eta in enumerate(etas):
            gens = [torch.Generator().manual_seed(seed * 1000 + 100 * j + i) for j in (1, 2, 3)]
            mow = simulate(prob, theta0, eta=eta, generator=gens[0], refresh=refresh, **kw)
            mow_th = mow.thetas if mow.stable else torch.full_like(mow.thetas, float("nan"))
            _, part = simulate_sgd(prob, theta0, eta=eta, generator=gens[1], **kw)
            _, wrong = simulate_sgd(prob, theta0, eta=eta, generator=gens[2], time_scale="1", **kw)
            rows.append(coupled_errors(eta, mow_th, part, bootstrap=bootstrap, generator=boot))
            contrast.append(coupled_errors(eta, mow_th, wrong, bootstrap=0, generator=boot))
            if bar is not None:
                bar.update(3)
    finally:
        if bar is not None:
            bar.close()
    order = fitted_order(rows, "weak")
    v = order_verdict(order, "weak")
    v = v.renamed("coupled.partner_order",
                  "coupled: MoW and its n-batch SGD partner (step eta*k/n) approach at "
                  + v["claim"])
    verdicts = [v, _contrast_verdict(rows, contrast)]
    config = dict(problem=prob.name, n=n, k=k, horizon=horizon, replicas=replicas, seed=seed,
                  refresh=refresh, reduction=reduction, balanced=bool(balanced),
                  record=record, bootstrap=bootstrap)
    return CoupledStudy(config=config, etas=etas, rows=rows, contrast_rows=contrast,
                        order=order, verdicts=verdicts, wall=time.perf_counter() - t0)


CONTRAST = "coupled.contrast_rejected"


def _contrast_verdict(rows, contrast) -> dict:
    claim = ("coupled: SGD at step eta (time scale k/n forgotten) is rejected (distance does "
             "not fall with eta; >= 10x the partner's at the smallest eta)")
    use = [(r, c) for r, c in zip(rows, contrast) if r.stable and c.stable]
    if len(use) < 2:
        return verdict(CONTRAST, claim, False, "",
                       inconclusive="< 2 step sizes with both runs stable")
    slope, _ = fit_order([c.eta for _, c in use], [c.weak for _, c in use])
    r, c = min(use, key=lambda rc: rc[0].eta)
    ratio = c.weak / max(r.weak, r.noise_floor, 1e-300)
    if not (np.isfinite(slope) and np.isfinite(ratio)):
        return verdict(CONTRAST, claim, False, "",
                       inconclusive=f"degenerate statistic: slope {slope}")
    ok = slope < WRONG_MAX_SLOPE and ratio >= 10 and c.weak >= 3 * c.noise_floor
    return verdict(CONTRAST, claim, ok, f"contrast distance slope {slope:.3f} (must be < "
                              f"{WRONG_MAX_SLOPE}); at eta = {r.eta:g} it is {c.weak:.4g} vs "
                              f"the partner's {r.weak:.4g} (ratio {ratio:.1f}, must be >= 10)")
