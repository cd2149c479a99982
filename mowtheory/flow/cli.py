"""``mowtheory flow``: the convergence-rate study of Theorem 1 on an analytic toy problem.

With no arguments it runs the headline study: ``linear-gaussian``, n=8, k=1, horizon 1,
eta = 0.01 ... 0.000625 (4 halvings), 2048 replicas; then the planted-fault controls (the
same study with ``window="time"`` and with ``window="leak"``, gradient leaking into the
window, and the position-weighted F with and without symmetrisation); prints the table (eta,
strong error, weak error +/- se, wrong-ODE error) and the verdicts with their evidence; and
writes a PNG (default ``mowtheory_out/flow.png``).

Each verdict prints PASS, FAIL or INCONCLUSIVE (a statistic, interval or sample that is NaN,
empty or below its stated minimum: fewer than 16 replicas, no bootstrap, too few usable step
sizes). Exit status (:func:`mowtheory.cli.verdict_exit_status`, shared with ``mowtheory
check``): 0 when every verdict passed; 1 when one FAILED (the verdicts are printed, with a
final ``RESULT:`` line saying how many failed or were inconclusive), and with ``--strict``
also when one is INCONCLUSIVE; 2 on bad arguments (a one-line error, before any work: the
etas, ``--bootstrap``, the output paths, the memory the study needs).
"""
from __future__ import annotations

import argparse
import ast
import os
import sys
import time

DEFAULT_PLOT = os.path.join("mowtheory_out", "flow.png")


def _floats(text: str) -> list:
    try:       # an empty item ("0.01,,0.005", a trailing comma) is an error: float("") raises
        vals = [float(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"etas must be a comma-separated list of numbers, e.g. 0.01,0.005 (no empty "
            f"items); got {text!r}") from None
    from .study import check_etas                   # one rule for the CLI and run_study
    try:
        check_etas(vals)
    except (ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return vals


def _bootstrap(text: str) -> int:
    from .rates import MIN_BOOTSTRAP
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


def register(subparsers) -> argparse.ArgumentParser:
    from ..mow import REDUCTIONS, REFRESH_POLICIES
    from ..window import INIT_POLICIES
    from .problems import names
    from .simulate import WINDOW_MODES
    p = subparsers.add_parser(
        "flow", help="convergence-rate study of MoW against its gradient-flow ODE",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--problem", default="linear-gaussian", choices=names())
    p.add_argument("--param", type=_param, action="append", default=[], metavar="KEY=VALUE",
                   help="a problem parameter (repeatable), e.g. --param beta=0.1")
    p.add_argument("--symmetrize", action="store_true",
                   help="position-weighted only: symmetrise F (mowtheory.costs.symmetrize)")
    p.add_argument("--n", type=int, default=None, help="batch size seen by F (None: the problem's)")
    p.add_argument("--k", type=int, default=None, help="fresh examples per step (None: the problem's)")
    p.add_argument("--etas", type=_floats, default=None,
                   help="comma-separated step sizes (None: the problem's)")
    p.add_argument("--replicas", type=int, default=None,
                   help="replicas per step size (None: 2048 for a toy problem, 256 for --model)")
    p.add_argument("--control-replicas", type=int, default=None,
                   help="replicas of each planted-fault control, at least 16 (None: min(R, 512) "
                        "for the window controls and 2R for the position-weighted pair of a toy "
                        "study, R for a --model study; R = --replicas)")
    p.add_argument("--horizon", type=float, default=None, help="T, the time horizon (None: the problem's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", default="encode", choices=INIT_POLICIES)
    p.add_argument("--refresh", default="post", choices=REFRESH_POLICIES)
    p.add_argument("--reduction", default="sum", choices=REDUCTIONS)
    p.add_argument("--balanced", action="store_true", help="scale F by n/k")
    p.add_argument("--window", default="steps", choices=WINDOW_MODES,
                   help="'time': latents stale by a fixed time tau; 'leak': gradient flows "
                        "into the window's latents (planted faults)")
    p.add_argument("--tau", type=float, default=None, help="staleness for --window time (None: T/4)")
    p.add_argument("--record", type=int, default=32, help="recorded times per run")
    p.add_argument("--bootstrap", type=_bootstrap, default=200,
                   help="bootstrap resamplings (at least 20)")
    p.add_argument("--controls", action=argparse.BooleanOptionalAction, default=True,
                   help="also run the planted-fault controls")
    p.add_argument("--sme", action="store_true",
                   help="also check the fluctuations against the stochastic modified equation")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--json", default=None, metavar="PATH", help="write the results as JSON")
    p.add_argument("--plot", default=DEFAULT_PLOT, metavar="PATH", help="PNG path")
    p.add_argument("--no-plot", action="store_true", help="do not write the PNG")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--strict", action="store_true",
                   help="also exit 1 when a verdict is INCONCLUSIVE (one that FAILED always "
                        "exits 1)")
    from .network_cli import add_arguments
    add_arguments(p)
    p.set_defaults(_flow_defaults={a.dest: a.default for a in p._actions})
    return p


def run_controls(main, *, replicas: int, seed: int, progress: bool,
                 control_replicas=None) -> dict:
    """The planted-fault studies: the main study with ``window="time"`` and with
    ``window="leak"`` (if it was a ``"steps"`` study with a window), and the position-weighted
    F with and without symmetrisation. ``control_replicas`` replicas each; None: ``min(replicas,
    512)`` for the window controls (their faults are large) and ``2 * replicas`` for the
    position-weighted pair (its fault is an O(1/n) asymmetry, the subtlest of the four)."""
    from .problems import get_problem
    from .study import default_etas, max_record, run_study
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
    from .plot import plot_study
    from .rates import fault_verdicts
    from .study import run_study

    t0 = time.perf_counter()
    if args.json:                                   # output paths: checked before any work
        check_output_file("--json", args.json)
    if not args.no_plot and args.plot:
        check_output_file("--plot", args.plot)
    if args.threads < 1:
        raise ValueError(f"threads must be >= 1; got threads={args.threads}")
    if args.control_replicas is not None:
        if not args.controls:
            raise ValueError(f"--control-replicas {args.control_replicas} applies to the "
                             f"planted-fault controls, which --no-controls turns off")
        from .._validate import check_int
        from .rates import MIN_REPLICAS
        check_int("control_replicas (--control-replicas)", args.control_replicas,
                  low=MIN_REPLICAS)
    from . import network_cli
    network_cli.check_arguments(args, getattr(args, "_flow_defaults", {}))
    torch.set_num_threads(args.threads)

    def report(verdicts, wall):
        return _report(verdicts, wall, strict=args.strict)
    if args.model is not None:
        return network_cli.run(args, report)
    if args.replicas is None:
        args.replicas = 2048
    params = dict(args.param)
    if args.symmetrize:
        if args.problem != "position-weighted":
            raise ValueError(f"--symmetrize applies to --problem position-weighted; got "
                             f"--problem {args.problem}")
        params["symmetrize"] = True
    progress = not args.quiet
    main = run_study(args.problem, params=params, n=args.n, k=args.k, etas=args.etas,
                     replicas=args.replicas, horizon=args.horizon, seed=args.seed,
                     init=args.init, refresh=args.refresh, reduction=args.reduction,
                     balanced=args.balanced, window=args.window, tau=args.tau,
                     record=args.record, bootstrap=args.bootstrap, progress=progress,
                     desc="main study")
    controls = run_controls(main, replicas=args.replicas, seed=args.seed, progress=progress,
                            control_replicas=args.control_replicas) if args.controls else {}
    verdicts = list(main.verdicts)
    verdicts += fault_verdicts(controls.get("position_weighted"), controls.get("symmetrized"),
                               controls.get("time_window"), controls.get("leak_window"))
    sme = None
    if args.sme:
        from .sme import check_sme
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

    if not args.no_plot and args.plot:
        print(f"plot: {plot_study(main, args.plot)}", file=out)
    if args.json:
        data = main.to_json()
        data["verdicts"] = verdicts
        data["study_verdicts"] = main.verdicts
        data["controls"] = {name: st.to_json() for name, st in controls.items()}
        if sme is not None:
            data["sme"] = sme
        data["wall_seconds"] = round(wall, 2)
        atomic_write_json(args.json, data)
        print(f"json: {args.json}", file=out)
    return code


def _report(verdicts, wall: float, *, strict: bool, out=None) -> int:
    """Print the verdicts and the ``RESULT:`` line; return the exit status
    (:func:`mowtheory.cli.verdict_exit_status`)."""
    from .rates import FAIL, INCONCLUSIVE, status
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
    from ..cli import verdict_exit_status
    return verdict_exit_status([status(v) for v in verdicts], strict=strict)
