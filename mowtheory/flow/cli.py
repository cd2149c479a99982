"""``mowtheory flow``: the convergence-rate study of Theorem 1 on an analytic toy problem.

With no arguments it runs the headline study: ``linear-gaussian``, n=8, k=1, horizon 1,
eta = 0.01 ... 0.000625 (4 halvings), 2048 replicas; then the planted-fault controls (the
same study with ``window="time"`` and with ``window="leak"``, gradient leaking into the
window, and the position-weighted F with and without symmetrisation); prints the table (eta,
strong error, weak error +/- se, wrong-ODE error) and the verdicts with their evidence; and
writes a PNG (default ``mowtheory_out/flow.png``).

Exit status: 0 when the study ran, whatever the verdicts (they are printed, with a final
``RESULT:`` line saying how many failed); 1 with ``--strict`` when a verdict failed; 2 on bad
arguments (a one-line error).
"""
from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import time

DEFAULT_PLOT = os.path.join("mowtheory_out", "flow.png")


def _floats(text: str) -> list:
    try:
        vals = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"etas must be a comma-separated list of numbers, e.g. 0.01,0.005; got {text!r}") from None
    if not vals:
        raise argparse.ArgumentTypeError(f"etas must hold at least one number; got {text!r}")
    return vals


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
    p.add_argument("--replicas", type=int, default=2048)
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
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamplings")
    p.add_argument("--controls", action=argparse.BooleanOptionalAction, default=True,
                   help="also run the planted-fault controls")
    p.add_argument("--sme", action="store_true",
                   help="also check the fluctuations against the stochastic modified equation")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--json", default=None, metavar="PATH", help="write the results as JSON")
    p.add_argument("--plot", default=DEFAULT_PLOT, metavar="PATH", help="PNG path")
    p.add_argument("--no-plot", action="store_true", help="do not write the PNG")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--strict", action="store_true", help="exit 1 when a verdict failed")
    return p


def run_controls(main, *, replicas: int, seed: int, progress: bool) -> dict:
    """The planted-fault studies: the main study with ``window="time"`` and with
    ``window="leak"`` (if it was a ``"steps"`` study with a window), and the position-weighted
    F with and without symmetrisation."""
    from .study import run_study
    c = main.config
    out = {}
    if c["window"] == "steps" and c["k"] < c["n"] and c["init"] == "encode":
        for window in ("time", "leak"):
            out[f"{window}_window"] = run_study(
                main.problem, n=c["n"], k=c["k"], etas=main.etas, replicas=min(replicas, 512),
                horizon=c["horizon"], seed=seed, init=c["init"], refresh=c["refresh"],
                reduction=c["reduction"], balanced=c["balanced"], window=window,
                record=c["record"], bootstrap=c["bootstrap"], progress=progress,
                desc=f"control: window={window}")
    for key, sym in (("position_weighted", False), ("symmetrized", True)):
        out[key] = run_study("position-weighted", params={"symmetrize": sym}, replicas=4096,
                             seed=seed, record=c["record"], bootstrap=c["bootstrap"],
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

    from .plot import plot_study
    from .rates import fault_verdicts
    from .study import run_study

    t0 = time.perf_counter()
    if args.threads < 1:
        raise ValueError(f"threads must be >= 1; got threads={args.threads}")
    torch.set_num_threads(args.threads)
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
    controls = run_controls(main, replicas=args.replicas, seed=args.seed,
                            progress=progress) if args.controls else {}
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
    print("verdicts:", file=out)
    for v in verdicts:
        print(f"  {'PASS' if v['passed'] else 'FAIL'}  {v['claim']}\n        {v['detail']}", file=out)
    failed = [v for v in verdicts if not v["passed"]]
    if failed:
        print(f"RESULT: {len(failed)} of {len(verdicts)} verdicts FAILED: "
              + "; ".join(v["claim"] for v in failed) + f"  (wall {wall:.1f} s)", file=out)
    else:
        print(f"RESULT: all {len(verdicts)} verdicts passed (wall {wall:.1f} s)", file=out)

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
        d = os.path.dirname(os.path.abspath(args.json))
        os.makedirs(d, exist_ok=True)
        with open(args.json, "w") as fh:
            json.dump(data, fh, indent=1)
        print(f"json: {args.json}", file=out)
    return 1 if (failed and args.strict) else 0
