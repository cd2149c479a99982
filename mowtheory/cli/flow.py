"""``mowtheory flow``: the convergence-rate study of Theorem 1 on an analytic toy problem.

With no arguments it runs the headline study: ``linear-gaussian``, n=8, k=1, horizon 1,
eta = 0.01 ... 0.000625 (4 halvings), 2048 replicas; then the planted-fault controls (the
same study with ``window="time"`` and with ``window="leak"``, gradient leaking into the
window, and the position-weighted F with and without symmetrisation); prints the table (eta,
strong error, weak error +/- se, wrong-ODE error) and the verdicts with their evidence; and
writes a PNG (default ``mowtheory_out/flow.png``).

Each verdict prints PASS, FAIL or INCONCLUSIVE (a statistic, interval or sample that is NaN,
empty or below its stated minimum: fewer than 16 replicas, no bootstrap, too few usable step
sizes). The parser is generated from :class:`~mowtheory.flow.config.FlowConfig`. Exit status
(:func:`mowtheory.cli.verdict_exit_status`, shared with ``mowtheory
check``): 0 when every verdict passed; 1 when one FAILED (the verdicts are printed, with a
final ``RESULT:`` line saying how many failed or were inconclusive), and with ``--strict``
also when one is INCONCLUSIVE; 2 on bad arguments (a one-line error, before any work: the
etas, ``--bootstrap``, the output paths, the memory the study needs).
"""
from __future__ import annotations

import argparse
import ast
import sys
import time

from . import verdict_exit_status
from ._options import Formatter, add_options, option, values


def _floats(text: str) -> list:
    try:       # an empty item ("0.01,,0.005", a trailing comma) is an error: float("") raises
        vals = [float(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"etas must be a comma-separated list of numbers, e.g. 0.01,0.005 (no empty "
            f"items); got {text!r}") from None
    from ..flow.study import check_etas            # one rule for the CLI and run_study
    try:
        check_etas(vals)
    except (ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return vals


def _bootstrap(text: str) -> int:
    from ..flow.rates import MIN_BOOTSTRAP
    try:
        b = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bootstrap must be an integer; got {text!r}") from None
    if b < MIN_BOOTSTRAP:
        raise argparse.ArgumentTypeError(
            f"bootstrap must be >= {MIN_BOOTSTRAP} (the resamplings behind every 95% interval "
            f"and noise floor of the verdicts); got bootstrap={b}")
    return b


def _param(text: str):
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--param must be KEY=VALUE (e.g. beta=0.5); got {text!r}")
    key, val = text.split("=", 1)
    try:
        val = ast.literal_eval(val)
    except (ValueError, SyntaxError):
        pass
    return key.strip(), val


#: the options of `mowtheory flow`, by group: one :class:`Option` per
#: :class:`~mowtheory.flow.config.FlowConfig` field, whose default and type it takes
#: (:func:`mowtheory.cli._options.add_options`); the choices come from the registries
OPTIONS = (
    (None, (
        option("problem", "toy problem with a closed-form expected cost"),
        option("param", "a problem parameter (repeatable), e.g. --param beta=0.1",
               type=_param, action="append", metavar="KEY=VALUE"),
        option("symmetrize", "position-weighted only: symmetrise F "
                             "(mowtheory.costs.symmetrize)"),
        option("n", "batch size seen by F (None: the problem's)"),
        option("k", "fresh examples per step (None: the problem's)"),
        option("etas", "comma-separated step sizes (None: the problem's)", type=_floats),
        option("replicas", "replicas per step size (None: 2048 for a toy problem, 256 for "
                           "--model)"),
        option("control_replicas", "replicas of each planted-fault control, at least 16 "
                                   "(None: min(R, 512) for the window controls and 2R for "
                                   "the position-weighted pair of a toy study, R for a "
                                   "--model study; R = --replicas)"),
        option("horizon", "T, the time horizon (None: the problem's)"),
        option("seed", "seeds the replicas' draws"),
        option("init", "window init policy"),
        option("refresh", "latents stored after the update (post) or before it (pre)"),
        option("reduction", "reduction of G over the k fresh examples"),
        option("balanced", "scale F by n/k"),
        option("window", "'time': latents stale by a fixed time tau; 'leak': gradient flows "
                         "into the window's latents (planted faults)"),
        option("tau", "staleness for --window time (None: T/4)"),
        option("record", "recorded times per run"),
        option("bootstrap", "bootstrap resamplings (at least 20)", type=_bootstrap),
        option("controls", "also run the planted-fault controls", action="both"),
        option("sme", "also check the fluctuations against the stochastic modified equation"),
        option("threads", "torch threads"),
        option("json", "write the results as JSON", metavar="PATH"),
        option("plot", "PNG path", metavar="PATH"),
        option("no_plot", "do not write the PNG"),
        option("quiet", "no progress bar"),
        option("strict", "also exit 1 when a verdict is INCONCLUSIVE (one that FAILED always "
                         "exits 1)"),
    )),
    ("real network (--model)", (
        option("model", "run the study on a real autoencoder instead of a toy --problem"),
        option("dataset", "rows the autoencoder is trained on"),
        option("cost", "batch cost F; cwae, swae and gmmn(sqrt) run the coupled check"),
        option("limit", "use the first LIMIT rows"),
        option("latent_dim", "latent dimension D"),
        option("hidden", "hidden width of the MLP"),
        option("lam", "weight of F"),
        option("coupled", "the coupled, reference-free check even for an exact cost"),
        option("device", "cpu or cuda"),
    )),
)


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``flow`` to ``subparsers``: one option per :class:`FlowConfig` field (a test
    checks that every field has one, with the field's default)."""
    from ..costs import names as cost_names
    from ..flow.config import FlowConfig
    from ..flow.network import DATASETS, MODELS
    from ..flow.problems import names
    from ..flow.simulate import WINDOW_MODES
    from ..mow import REDUCTIONS, REFRESH_POLICIES
    from ..window import INIT_POLICIES
    p = subparsers.add_parser(
        "flow", help="convergence-rate study of MoW against its gradient-flow ODE",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
        formatter_class=Formatter)
    add_options(p, FlowConfig, OPTIONS, choices={
        "problem": names(), "init": INIT_POLICIES, "refresh": REFRESH_POLICIES,
        "reduction": REDUCTIONS, "window": WINDOW_MODES, "model": MODELS,
        "dataset": DATASETS, "cost": cost_names()})
    return p


def config_from_args(args):
    """The :class:`~mowtheory.flow.config.FlowConfig` of parsed arguments (validated)."""
    from ..flow.config import FlowConfig
    return FlowConfig(**values(FlowConfig, args))


def _control_line(name, st) -> str:
    last = min((r for r in st.rows if r.stable), key=lambda r: r.eta, default=None)
    o = st.orders["weak"]
    order = f"{o.estimate:.2f}" if o.estimate == o.estimate else "n/a"
    if last is None:
        return f"  {name}: no stable step size"
    return (f"  {name} ({st.config['problem']}, n={st.config['n']}, k={st.config['k']}, "
            f"{st.config['replicas']} replicas): weak error at eta={last.eta:g} "
            f"{last.weak:.3e} (floor {last.noise_floor:.1e}), weak order {order}, "
            f"strong order {st.orders['strong'].estimate:.2f}")


def run(args) -> int:
    import torch

    from .._io import atomic_write_json, check_output_file
    from ..flow.plot import plot_study
    from ..flow.faults import fault_verdicts
    from ..flow.study import run_controls, run_study

    t0 = time.perf_counter()
    cfg = config_from_args(args)                    # every option checked before any work
    if cfg.json:
        check_output_file("--json", cfg.json)
    if not cfg.no_plot and cfg.plot:
        check_output_file("--plot", cfg.plot)
    torch.set_num_threads(cfg.threads)

    def report(verdicts, wall):
        return _report(verdicts, wall, strict=cfg.strict)
    if cfg.model is not None:
        from .flow_network import run as run_network
        return run_network(cfg, report)
    progress, replicas = not cfg.quiet, cfg.replicas_or_default()
    main = run_study(cfg.problem, params=cfg.params(), n=cfg.n, k=cfg.k, etas=cfg.etas,
                     replicas=replicas, horizon=cfg.horizon, seed=cfg.seed,
                     init=cfg.init, refresh=cfg.refresh, reduction=cfg.reduction,
                     balanced=cfg.balanced, window=cfg.window, tau=cfg.tau,
                     record=cfg.record, bootstrap=cfg.bootstrap, progress=progress,
                     desc="main study")
    controls = run_controls(main, replicas=replicas, seed=cfg.seed,
                            progress=progress,
                            control_replicas=cfg.control_replicas) if cfg.controls else {}
    verdicts = list(main.verdicts)
    verdicts += fault_verdicts(controls.get("position_weighted"), controls.get("symmetrized"),
                               controls.get("time_window"), controls.get("leak_window"))
    sme = None
    if cfg.sme:
        from ..flow.sme import check_sme
        sme = check_sme(main)
        verdicts.append(sme["verdict"])
    wall = time.perf_counter() - t0

    out = sys.stdout
    print("MoW gradient-flow study: iterates S_eta against S' = -(k/n) grad C (Theorem 1)", file=out)
    print(main.table(), file=out)
    if controls:
        print("planted-fault controls (the instrument must reject the faults):", file=out)
        for name, st in controls.items():
            print(_control_line(name.replace("_", "-"), st), file=out)
    code = report(verdicts, wall)

    if not cfg.no_plot and cfg.plot:
        print(f"plot: {plot_study(main, cfg.plot)}", file=out)
    if cfg.json:
        data = main.to_json()
        data["verdicts"] = verdicts
        data["study_verdicts"] = main.verdicts
        data["controls"] = {name: st.to_json() for name, st in controls.items()}
        if sme is not None:
            data["sme"] = sme
        data["wall_seconds"] = round(wall, 2)
        atomic_write_json(cfg.json, data)
        print(f"json: {cfg.json}", file=out)
    return code


def _report(verdicts, wall: float, *, strict: bool, out=None) -> int:
    """Print the verdicts and the ``RESULT:`` line; return the exit status
    (:func:`mowtheory.cli.verdict_exit_status`)."""
    from ..flow.rates import FAIL, INCONCLUSIVE, status
    out = out or sys.stdout
    print("verdicts:", file=out)
    for v in verdicts:
        print(f"  {status(v)}  {v['claim']}\n        {v['detail']}", file=out)
    failed = [v for v in verdicts if not v["passed"]]
    n_fail = sum(status(v) == FAIL for v in verdicts)
    n_inc = sum(status(v) == INCONCLUSIVE for v in verdicts)
    if failed:
        print(f"RESULT: {len(failed)} of {len(verdicts)} verdicts did not pass ({n_fail} FAILED, "
              f"{n_inc} INCONCLUSIVE): " + "; ".join(f"{v['claim']} [{status(v)}]"
                                                    for v in failed)
              + f"  (wall {wall:.1f} s)", file=out)
    else:
        print(f"RESULT: all {len(verdicts)} verdicts passed (wall {wall:.1f} s)", file=out)
    return verdict_exit_status([status(v) for v in verdicts], strict=strict)
