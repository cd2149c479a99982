"""Every CUDA figure the package owes, in one prepared run with a time budget.

Run once on a machine with a GPU (torch only: no network, no other package needed)::

    PYTHONPATH=. python experiments/gpu_suite.py --device cuda --out $OUT

and copy ``$OUT/gpu.md`` and ``$OUT/gpu.json`` to ``experiments/results/``. Items, each
through the package's own code path, each with its own time budget (seconds, ``--quick``
sizes in brackets), inside a global budget (``--budget``, default 480 s):

1. ``step_share``: the window's share of a MoW training step,
   ``(t_mow - t_plain) / t_mow`` (:func:`mowtheory.bench.step.measure`; target <= 5 % on
   CUDA, with the CUDA sync guard and the host-read audit);
2. ``costs``: the rows of ``mowtheory bench costs`` on the device
   (:func:`mowtheory.bench.costs.run_costs`: split vs full step, n in {64, 256, 1024, 4096},
   k in {1, 8}, every splittable cost; slopes and the 100x target at n = 4096, k = 1);
3. ``memory``: peak memory of MoW_k(64) steps on the FFHQ-style autoencoder against
   resolution 64..1024, k in {1, 8, 64}, float32 and bfloat16 (``torch.autocast``)
   (:func:`mowtheory.bench.memory_child.child`, in this process so that an out-of-memory point
   is a recorded result: ``torch.cuda.max_memory_allocated`` on CUDA);
4. ``train_1024``: ``mowtheory train`` (:func:`mowtheory.train.trainer.train`) with n = 64,
   k = 1 at 1024x1024 on a synthetic image folder written to a temporary folder (one epoch
   over 64 images), float32 and ``--bf16``;
5. ``flow_replicas``: the replica-ensemble study of Theorem 1 on a real network
   (:func:`mowtheory.flow.network_study.run_network_study` on a
   :class:`~mowtheory.flow.network.NetworkProblem` moved with ``.to(device)``), the same
   configuration on the device and on the CPU: wall times side by side. The rows are
   synthetic (seeded) so that no dataset package is needed.

Each item is skipped, with the reason, when the global budget left is below its minimum;
an item that runs past its own budget is stopped (``SIGALRM``) and keeps the rows it
measured. CUDA out-of-memory (``torch.cuda.OutOfMemoryError`` or a ``RuntimeError``
saying "out of memory") is a result (``"oom"``): the cache is freed and the suite goes on.

Outputs in ``--out``: ``gpu.json`` and ``gpu.md`` for a full CUDA run; any other run
(``--device cpu`` or ``--quick``) writes ``gpu_suite_check.json`` and
``gpu_suite_check.md`` instead, so that ``gpu.md`` only ever holds real GPU figures.
``--device cpu --quick`` runs every code path at tiny sizes in well under two minutes
(``tests/test_gpu_suite.py``).
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import platform
import shlex
import signal
import sys
import tempfile
import threading
import time
import types
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:                       # run from anywhere, without installing
    sys.path.insert(0, str(ROOT))

from mowtheory import _io
from mowtheory._validate import check_positive

ITEMS = ("step_share", "costs", "memory", "train_1024", "flow_replicas")
DEFAULT_BUDGET = 480.0
#: item -> (budget s, minimum s to start) for full runs and for --quick runs
BUDGETS = {"step_share": (80.0, 20.0), "costs": (80.0, 20.0), "memory": (150.0, 30.0),
           "train_1024": (90.0, 30.0), "flow_replicas": (70.0, 20.0)}
QUICK_BUDGETS = {name: (40.0, 1.0) for name in ITEMS}


class ItemTimeout(BaseException):
    """An item ran past its budget (raised by the SIGALRM handler; a BaseException so that
    no ``except Exception`` inside the package swallows it)."""


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is a (CUDA) out-of-memory error."""
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom is not None and isinstance(exc, oom)) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


def guarded(fn: Callable[[], dict], where: dict) -> dict:
    """``fn()`` as a row: ``{**where, "status": "ok", **fn()}``, or ``status "oom"`` (cache
    freed) or ``"error"`` with the first line of the exception."""
    try:
        return {**where, "status": "ok", **fn()}
    except ItemTimeout:
        raise
    except Exception as exc:                     # noqa: BLE001 - every failure is a result
        status = "oom" if is_oom(exc) else "error"
        msg = _first_line(exc)
    free_memory()                                # the traceback (and its tensors) is gone
    return {**where, "status": status, "error": msg}


@contextlib.contextmanager
def alarm(seconds: float):
    """Raise :class:`ItemTimeout` in this thread after ``seconds`` (main thread with
    SIGALRM only; elsewhere the budget is only checked between rows)."""
    usable = hasattr(signal, "SIGALRM") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def handler(signum, frame):
        raise ItemTimeout(f"ran past its budget of {seconds:.3g} s")

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 1e-3))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class Ctx:
    """What an item sees: device, sizes (``quick``), its deadline, its rows, a log."""

    def __init__(self, device: str, quick: bool, deadline: float, tmp: Path, log):
        self.device, self.quick, self.deadline, self.tmp, self.log = device, quick, deadline, \
            tmp, log
        self.rows: list = []
        self.last_row_s = 0.0

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def row(self, fn: Callable[[], dict], where: dict) -> dict:
        """Measure one row unless the time left is below the last row's duration."""
        if self.rows and self.left() < 1.2 * self.last_row_s:
            r = {**where, "status": "skipped",
                 "reason": f"{self.left():.0f} s left of the item's budget; the previous row "
                           f"took {self.last_row_s:.0f} s"}
        else:
            t0 = time.perf_counter()
            r = guarded(fn, where)
            self.last_row_s = time.perf_counter() - t0
            r["wall_s"] = round(self.last_row_s, 3)
        self.rows.append(r)
        self.log(f"    {_row_text(r)}")
        return r


def _row_text(r: dict) -> str:
    keys = ", ".join(f"{k}={v}" for k, v in r.items()
                     if k in ("arch", "cost", "n", "k", "resolution", "dtype", "precision",
                              "device"))
    tail = r.get("reason") or r.get("error") or ""
    return f"{keys}: {r['status']}{(' (' + tail + ')') if tail else ''}"


def _ok(rows):
    return [r for r in rows if r.get("status") == "ok"]


# --------------------------------------------------------------------------- 1. step share
def item_step_share(ctx: Ctx) -> None:
    from mowtheory.bench import step
    if ctx.quick:
        grid, n, kw = [("mnist", "cwae", 1)], 8, dict(steps=2, reps=1, budget_s=0.01)
    else:
        grid = [(a, c, k) for a in ("celeba", "mnist") for c in ("cwae", "wae") for k in (1, 8)]
        n, kw = 64, dict(steps=0, reps=5, budget_s=0.2)
    for arch, cost, k in grid:
        ctx.row(lambda arch=arch, cost=cost, k=k: step.measure(arch, cost, n=n, k=k,
                                                               device=ctx.device, **kw),
                {"arch": arch, "cost": cost, "n": n, "k": k})


def summary_step_share(rows: list, device: str) -> dict:
    from mowtheory.bench import step
    ok = _ok(rows)
    return {"target": f"window share <= {100 * step.TARGET_SHARE:g}% on CUDA",
            "max_window_share": max((r["window_share"] for r in ok), default=None),
            "targets": step.targets(ok) if ok else {}}


# --------------------------------------------------------------------------- 2. bench costs
def item_costs(ctx: Ctx) -> None:
    from mowtheory import costs as C
    from mowtheory.bench import costs as B
    if ctx.quick:
        names, ns, ks = ["cwae", "wae"], [16, 32], [1]
        kw = dict(dim=8, reps=3, split_steps=2, budget_s=0.05)
    else:
        names = [nm for nm in C.names() if C.get(nm, **B._params(nm)).supports_split]
        ns, ks = list(B.DEFAULT_NS), list(B.DEFAULT_KS)
        kw = dict(dim=64, reps=5, split_steps=20, budget_s=1.0)
    for k in ks:
        for nm in names:
            for n in ns:
                def one(nm=nm, n=n, k=k):
                    res = B.run_costs([C.get(nm, **B._params(nm))], [n], [k],
                                      devices=[ctx.device], log=lambda s: None, **kw)
                    return res["rows"][0]
                ctx.row(one, {"cost": nm, "n": n, "k": k})


def summary_costs(rows: list, device: str) -> dict:
    from mowtheory.bench import costs as B
    ok = _ok(rows)
    sl = B.slopes(ok)
    return {"slopes": sl, "targets": B.targets(ok, sl)}


# --------------------------------------------------------------------------- 3. memory
def item_memory(ctx: Ctx) -> None:
    from mowtheory.bench import memory_child as M
    if ctx.quick:
        resolutions, n, ks, steps = [16], 4, [1, 4], 1
    else:
        resolutions, n, ks, steps = [1024, 512, 256, 128, 64], 64, [1, 8, 64], 3
    for res in resolutions:
        for k in ks:
            for precision in ("float32", "bfloat16"):
                def one(res=res, k=k, precision=precision):
                    args = types.SimpleNamespace(
                        resolution=res, k=k, n=n, steps=steps, device=ctx.device,
                        threads=torch.get_num_threads(), method="mow", chunk=1,
                        tensor_peak=False)             # CPU: RSS only (no profiler)
                    amp = torch.autocast(torch.device(ctx.device).type, dtype=torch.bfloat16,
                                         enabled=precision == "bfloat16")
                    if torch.device(ctx.device).type == "cuda":
                        torch.cuda.reset_peak_memory_stats()
                    with amp:
                        out = M.child(args)
                    out["peak_mb"] = M.peak_mb(out, ctx.device)
                    return out
                ctx.row(one, {"resolution": res, "k": k, "n": n, "precision": precision})


def summary_memory(rows: list, device: str) -> dict:
    ok = {(r["resolution"], r["precision"], r["k"]): r for r in _ok(rows)}
    ratios = []
    for (res, prec, k), r in sorted(ok.items()):
        if k == 1:
            for big in sorted({kk for (rr, pp, kk) in ok if (rr, pp) == (res, prec) and kk > 1}):
                ratios.append({"resolution": res, "precision": prec, "k_big": big,
                               "peak_ratio": ok[(res, prec, big)]["peak_mb"] / r["peak_mb"]})
    return {"peak": "torch.cuda.max_memory_allocated" if device == "cuda"
            else "process peak RSS (ru_maxrss)",
            "oom": [{k: r[k] for k in ("resolution", "k", "precision")} for r in rows
                    if r["status"] == "oom"],
            "ratios_vs_k1": ratios}


# --------------------------------------------------------------------------- 4. training
def write_image_folder(folder: Path, count: int, size: int, seed: int = 0) -> Path:
    """``count`` RGB PNGs of ``size``x``size`` in ``folder``: ``min(count, 8)`` distinct
    smooth random patterns (quick to encode and decode), copied round-robin to the rest."""
    import shutil

    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    u = np.linspace(0.0, 1.0, size, dtype=np.float32)
    distinct = min(count, 8)
    for i in range(distinct):
        a = rng.uniform(0.5, 4.0, size=(3, 2))
        ph = rng.uniform(0, 2 * np.pi, size=(3, 2))
        img = np.stack([0.5 + 0.25 * np.sin(2 * np.pi * a[c, 0] * u[None, :] + ph[c, 0])
                        + 0.25 * np.cos(2 * np.pi * a[c, 1] * u[:, None] + ph[c, 1])
                        for c in range(3)], axis=-1)
        Image.fromarray((img * 255).astype(np.uint8)).save(folder / f"{i:04d}.png",
                                                            compress_level=1)
    for i in range(distinct, count):
        shutil.copyfile(folder / f"{i % distinct:04d}.png", folder / f"{i:04d}.png")
    return folder


def _tqdm_shim() -> None:
    """The trainer's progress bar needs ``tqdm``; a lent GPU machine may have torch only:
    install a silent stand-in (progress is off anyway)."""
    try:
        import tqdm.auto  # noqa: F401
    except ImportError:
        class _Bar:
            def __init__(self, *a, **kw): pass
            def update(self, *a): pass
            def set_postfix(self, *a, **kw): pass
            def close(self): pass
            @staticmethod
            def write(s, *a, **kw): print(s)
        mod = types.ModuleType("tqdm")
        auto = types.ModuleType("tqdm.auto")
        mod.tqdm = auto.tqdm = _Bar
        mod.auto = auto
        sys.modules.setdefault("tqdm", mod)
        sys.modules.setdefault("tqdm.auto", auto)


def item_train_1024(ctx: Ctx) -> None:
    from mowtheory.train.trainer import TrainConfig, train
    _tqdm_shim()
    res, n, count = (16, 4, 10) if ctx.quick else (1024, 64, 80)     # 80 -> 64 train, 16 test
    limit = n
    try:
        folder = write_image_folder(ctx.tmp / f"images{res}", count, res)
    except ImportError as exc:
        ctx.rows.append({"status": "skipped", "reason": f"writing the images needs Pillow: {exc}"})
        return
    for bf16 in (False, True):
        def one(bf16=bf16):
            cfg = TrainConfig(model="cwae", dataset="ffhq", data_dir=str(folder), resolution=res,
                              n=n, k=1, limit=limit, epochs=1, device=ctx.device, bf16=bf16,
                              out=str(ctx.tmp / f"run-{res}-{'bf16' if bf16 else 'fp32'}"),
                              eval_limit=4, distance_n=4, fd=False, images=False,
                              progress=False, overwrite=True)
            cuda = torch.device(ctx.device).type == "cuda"
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            rep = train(cfg)
            out = {"steps": rep["step"], "train_seconds": rep["train_seconds"],
                   "seconds": rep["seconds"], "recon_error":
                   rep["final_metrics"].get("recon_error"), "status_train": rep["status"],
                   "steps_per_s_incl_eval": rep["step"] / max(rep["train_seconds"], 1e-9)}
            if cuda:
                out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
            return out
        ctx.row(one, {"resolution": res, "n": n, "k": 1,
                      "precision": "bfloat16" if bf16 else "float32"})


def summary_train_1024(rows: list, device: str) -> dict:
    return {"note": "one epoch over the training images, k=1 a step; train_seconds includes "
                    "the window init, the end-of-epoch evaluation and the checkpoint"}


# --------------------------------------------------------------------------- 5. flow replicas
def _flow_problem(device: str, quick: bool):
    from mowtheory.flow.network import NetworkProblem, mlp_autoencoder
    rows, d, hidden = (64, 8, 4) if quick else (256, 16, 8)
    g = torch.Generator().manual_seed(0)
    basis = torch.randn(4, d, generator=g, dtype=torch.float64)
    data = torch.sigmoid(torch.randn(rows, 4, generator=g, dtype=torch.float64) @ basis)
    enc, dec = mlp_autoencoder(d, 2, hidden, generator=g)
    p = NetworkProblem(enc, dec, data, "wae", prior_points=256, generator=g,
                       name=f"mlp/synthetic{rows}x{d}/wae")
    return p.to(device) if device != "cpu" else p


def item_flow_replicas(ctx: Ctx) -> None:
    from mowtheory.bench._common import sync
    from mowtheory.flow.network_study import run_network_study
    kw = (dict(n=4, k=1, replicas=8, etas=(0.04, 0.02), horizon=0.08, bootstrap=0, record=2)
          if ctx.quick else dict(n=8, k=1, replicas=512, etas=(0.04, 0.02), horizon=0.2,
                                 bootstrap=200, record=4))
    for dev in dict.fromkeys([ctx.device, "cpu"]):
        def one(dev=dev):
            problem = _flow_problem(dev, ctx.quick)
            t0 = time.perf_counter()
            st = run_network_study(problem, controls=False, observables=False, **kw)
            sync(dev)
            return {"wall_s_study": time.perf_counter() - t0, "n_params": problem.n_params,
                    "verdicts": [v["status"] for v in st.verdicts],
                    **{k: (list(v) if isinstance(v, tuple) else v) for k, v in kw.items()}}
        ctx.row(one, {"device": dev})


def summary_flow_replicas(rows: list, device: str) -> dict:
    t = {r["device"]: r["wall_s_study"] for r in _ok(rows)}
    out = {"wall_s": t, "data": "synthetic seeded rows (no dataset package needed)"}
    if device != "cpu" and device in t and "cpu" in t:
        out["cpu_over_device"] = t["cpu"] / t[device]
    return out


RUNNERS = {name: (globals()[f"item_{name}"], globals()[f"summary_{name}"]) for name in ITEMS}


# --------------------------------------------------------------------------- suite
def machine(device: str) -> dict:
    info = {"torch": torch.__version__, "cuda": torch.version.cuda, "python":
            platform.python_version(), "platform": platform.platform(), "device": device,
            "cpu_threads": torch.get_num_threads()}
    if torch.device(device).type == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=torch.cuda.get_device_name(0), gpu_memory_gb=props.total_memory / 2**30,
                    capability=f"{props.major}.{props.minor}",
                    cudnn=torch.backends.cudnn.version())
    return info


def run_item(name: str, ctx: Ctx, budget: float) -> dict:
    run, summarize = RUNNERS[name]
    t0 = time.perf_counter()
    stopped = None
    try:
        with alarm(budget):
            run(ctx)
    except ItemTimeout as exc:
        stopped = str(exc)
    except Exception as exc:                     # noqa: BLE001 - recorded, the suite goes on
        ctx.rows.append({"status": "oom" if is_oom(exc) else "error",
                         "error": _first_line(exc)})
    free_memory()
    rows = ctx.rows
    statuses = {r["status"] for r in rows}
    if "ok" in statuses:
        status = "ok"
    elif "oom" in statuses:
        status = "oom"
    elif "error" in statuses:
        status = "error"
    else:
        status = "skipped"
    out = {"status": status, "budget_s": round(budget, 1),
           "wall_s": round(time.perf_counter() - t0, 2), "rows": rows}
    if stopped:
        out["stopped"] = stopped
    if status == "ok":
        try:
            out["figures"] = summarize(rows, ctx.device)
        except Exception as exc:                 # noqa: BLE001
            out["figures"] = {"error": _first_line(exc)}
    elif status == "skipped":
        out["reason"] = stopped or "; ".join(r.get("reason", "") for r in rows) or "no rows"
    else:
        out["reason"] = "; ".join(r["error"] for r in rows if "error" in r)
    return out


def run_suite(device: str = "cuda", *, quick: bool = False, budget: float = DEFAULT_BUDGET,
              items=ITEMS, item_budgets: dict | None = None, log=print) -> dict:
    """Run ``items`` on ``device`` within ``budget`` seconds; returns the JSON document."""
    budgets = dict(QUICK_BUDGETS if quick else BUDGETS)
    for name, b in (item_budgets or {}).items():
        budgets[name] = (b, min(budgets[name][1], b))
    t_start = time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory(prefix="mowtheory-gpu-suite-") as tmp:
        for name in items:
            left = budget - (time.perf_counter() - t_start)
            item_budget, minimum = budgets[name]
            if left < minimum:
                results[name] = {"status": "skipped", "budget_s": item_budget, "rows": [],
                                 "reason": f"{max(left, 0):.1f} s left of the global budget "
                                           f"{budget:g} s; this item needs at least "
                                           f"{minimum:g} s"}
                log(f"{name}: skipped: {results[name]['reason']}")
                continue
            use = min(item_budget, left)
            log(f"{name}: budget {use:.0f} s", )
            ctx = Ctx(device, quick, time.perf_counter() + use, Path(tmp), log)
            results[name] = run_item(name, ctx, use)
            log(f"{name}: {results[name]['status']} in {results[name]['wall_s']:.1f} s")
    return {"suite": "gpu", "quick": quick, "budget_s": budget, "machine": machine(device),
            "items": results, "wall_s": round(time.perf_counter() - t_start, 2),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


# --------------------------------------------------------------------------- markdown
def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


#: the columns of each item's table in the Markdown (the JSON keeps every field)
MD_COLUMNS = {
    "step_share": ("arch", "cost", "n", "k", "status", "plain_s", "mow_s", "window_ops_s",
                   "window_share", "window_share_pre", "host_reads_accelerator_path"),
    "costs": ("cost", "n", "k", "status", "full_median_s", "split_median_s",
              "split_amortised_s", "ratio", "ratio_amortised", "grad_rel_err"),
    "memory": ("resolution", "k", "n", "precision", "status", "peak_mb", "step_s", "params"),
    "train_1024": ("resolution", "n", "k", "precision", "status", "steps", "train_seconds",
                   "steps_per_s_incl_eval", "cuda_max_allocated_mb", "recon_error"),
    "flow_replicas": ("device", "status", "wall_s_study", "replicas", "n", "k", "etas",
                      "horizon", "n_params"),
}


def to_markdown(doc: dict, command: str) -> str:
    m = doc["machine"]
    real = m["device"] == "cuda" and not doc["quick"]
    title = ("# CUDA figures (experiments/gpu_suite.py)" if real else
             f"# experiments/gpu_suite.py code-path check (device {m['device']}"
             f"{', --quick sizes' if doc['quick'] else ''}): not CUDA figures")
    lines = [title, "",
             (f"Generated by `{command}` in {doc['wall_s']:.0f} s (global budget "
              f"{doc['budget_s']:g} s{', --quick sizes' if doc['quick'] else ''})."), "",
             f"Device: {m.get('gpu', m['device'])}"
             + (f" ({m['gpu_memory_gb']:.0f} GiB, compute capability {m['capability']})"
                if "gpu" in m else "")
             + f"; torch {m['torch']}, CUDA {m['cuda']}, cuDNN {m.get('cudnn')}, Python "
               f"{m['python']}.", ""]
    for name, it in doc["items"].items():
        lines += [f"## {name}: {it['status']}", "",
                  f"Budget {it['budget_s']} s, wall {it.get('wall_s', 0)} s."
                  + (f" Stopped: {it['stopped']}." if it.get("stopped") else ""), ""]
        if it["status"] != "ok":
            lines += [f"{it['status']}: {it.get('reason', '')}", ""]
        for key, val in (it.get("figures") or {}).items():
            lines.append(f"- {key}: `{_io.json_dumps(val)}`")
        rows = it["rows"]
        if rows:
            cols = [c for c in MD_COLUMNS[name] if any(c in r for r in rows)] + ["wall_s"]
            lines += ["", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
            why = [f"{_row_text(r)}" for r in rows if r["status"] != "ok"]
            lines += [""] + [f"- {w}" for w in why]
        lines.append("")
    return "\n".join(lines)


def output_names(device: str, quick: bool) -> tuple:
    """``gpu.json``/``gpu.md`` only for a full CUDA run."""
    stem = "gpu" if device == "cuda" and not quick else "gpu_suite_check"
    return f"{stem}.json", f"{stem}.md"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--quick", action="store_true", help="tiny sizes (checks the code paths)")
    p.add_argument("--budget", type=float, default=DEFAULT_BUDGET,
                   help="global budget in seconds")
    p.add_argument("--out", default=str(ROOT / "experiments" / "results"),
                   help="folder for the JSON and Markdown (on a lent GPU machine: $OUT)")
    p.add_argument("--items", default=",".join(ITEMS), help="comma-separated subset of items")
    args = p.parse_args(argv)
    try:
        check_positive("budget (--budget)", args.budget)
        items = [s.strip() for s in args.items.split(",") if s.strip()]
        bad = [s for s in items if s not in ITEMS]
        if bad or not items:
            raise ValueError(f"--items must be a comma-separated subset of {', '.join(ITEMS)}; "
                             f"got --items {args.items!r}")
        if args.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda: torch.cuda.is_available() is False on this "
                             "machine; got --device cuda (use --device cpu --quick to check "
                             "the code paths)")
        out = _io.check_output_dir("--out", args.out)
    except (ValueError, TypeError) as exc:
        print(f"gpu_suite: error: {exc}", file=sys.stderr)
        return 2
    if args.device == "cpu":
        torch.set_num_threads(1)
    command = "PYTHONPATH=. python experiments/gpu_suite.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    doc = run_suite(args.device, quick=args.quick, budget=args.budget, items=items,
                    log=lambda s: print(s, flush=True))
    doc["command"] = command.strip()
    jname, mname = output_names(args.device, args.quick)
    _io.atomic_write_json(out / jname, doc)
    _io.atomic_write_text(out / mname, to_markdown(doc, doc["command"]))
    print(f"wrote {out / jname} and {out / mname}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
