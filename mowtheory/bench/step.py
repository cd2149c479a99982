"""``mowtheory bench step``: a MoW training step against a plain k-example autoencoder step
on the same model; the window's share of the step time.

Variants, timed in interleaved blocks of ``steps`` steps (medians over the blocks):

- ``plain``: encode the k examples, decode, per-example reconstruction G (summed), F on the
  k latents (with a k-row prior sample for two-sample costs; no F when k is below the
  cost's ``min_n``, e.g. k=1 for U-statistics), backward, optimizer step.
- ``mow``: :meth:`mowtheory.mow.MoW.step` as the trainer runs it (refresh ``post``: the k
  examples are re-encoded without gradient after the update; ``exact_value=True``).
- ``mow_pre``: refresh ``pre`` (the authors' code: no re-encoding).
- ``mow_fast``: refresh ``post`` with ``exact_value=False`` (F's value without the
  theta-independent blocks; same gradient).

The window's share is ``(t_mow - t_plain) / t_mow``. Besides, the window operations alone
(split value and gradient w.r.t. the k latents, cache update, push) are timed on the
model's latent size (``window_ops``).

Host synchronisation: no ``.item()``, ``float()``, ``.cpu()`` or other read of a tensor in
the step loop. On CUDA the MoW loop runs under ``torch.cuda.set_sync_debug_mode("error")``;
on every device :class:`HostReads` audits one step for Python-level reads of tensor values
from mowtheory code, on the accelerator code path (``host_reads_accelerator_path``, must be
0) and on the CPU path (``host_reads_cpu_path``: the argument checks of the k fresh latents
and slot indices, host memory on CPU).
"""
from __future__ import annotations

import contextlib
import copy
import os
import sys
from typing import Optional

import torch

from .. import costs as C
from ..mow import MoW
from . import _common as U

_PKG = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))     # .../mowtheory
_BENCH = os.path.dirname(os.path.abspath(__file__))
_READS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__", "__index__")
VARIANTS = ("plain", "mow", "mow_pre", "mow_fast")
TARGET_SHARE = 0.05   # on CUDA


class HostSync(AssertionError):
    """A tensor value was read on the host inside a step (see :class:`HostReads`)."""


class HostReads:
    """Context manager that records (``raise_=True``: forbids) Python-level reads of tensor
    values (``.item()``, ``.tolist()``, ``.cpu()``, ``.numpy()``, ``float()``, ``int()``,
    ``bool()``, ``__index__``) made from mowtheory code (not from torch or the caller).

    ``accelerator_path=True`` makes the batch costs take the code path they take for
    accelerator tensors (no host-side argument checks), so that path can be audited on CPU.
    ``reads`` lists ``(method, file, line)`` of the reads seen.
    """

    def __init__(self, *, raise_: bool = False, accelerator_path: bool = False):
        self.raise_, self.accelerator_path = raise_, accelerator_path
        self.reads: list = []
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> "HostReads":
        from ..costs import registry
        if self.accelerator_path:
            old = registry._eager_checks
            registry._eager_checks = lambda t: False
            self._stack.callback(setattr, registry, "_eager_checks", old)
        for name in _READS:
            orig = getattr(torch.Tensor, name, None)
            if orig is None:
                continue
            setattr(torch.Tensor, name, self._wrap(name, orig))
            self._stack.callback(setattr, torch.Tensor, name, orig)
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def _wrap(self, name, orig):
        audit = self

        def read(self_t, *a, **kw):
            f = sys._getframe(1)
            path = os.path.abspath(f.f_code.co_filename)
            if path.startswith(_PKG) and not path.startswith(_BENCH):
                where = (name, os.path.relpath(path, os.path.dirname(_PKG)), f.f_lineno)
                audit.reads.append(where)
                if audit.raise_:
                    raise HostSync(f"host read of a tensor value inside a step: Tensor.{name} "
                                   f"called from {where[1]}:{where[2]}")
            return orig(self_t, *a, **kw)

        read.__name__ = name
        return read


@contextlib.contextmanager
def _cuda_sync_guard(device):
    if torch.device(device).type != "cuda":
        yield
        return
    old = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(old)


class _Setup:
    """Model copies, optimizers, MoW objects and a pool of data batches for one config."""

    def __init__(self, arch: str, cost_name: str, *, n: int, k: int, device, seed: int = 0,
                 lr: float = 1e-4, pool: int = 8, latent_dim: Optional[int] = None):
        from ..train.models import build_autoencoder
        self.device, self.n, self.k = torch.device(device), n, k
        torch.manual_seed(seed)
        base = build_autoencoder(arch, latent_dim=latent_dim).to(self.device)
        self.D = base.latent_dim
        self.cost = C.get(cost_name, **({"generator": torch.Generator(device=self.device)
                                         .manual_seed(seed)} if cost_name == "swae" else {}))
        g = torch.Generator().manual_seed(seed + 1)
        self.xs = [torch.rand(k, *base.input_shape, generator=g).to(self.device)
                   for _ in range(pool)]
        self.i = 0
        self.steppers = {}
        for variant in VARIANTS:
            model = copy.deepcopy(base)
            opt = torch.optim.Adam(model.parameters(), lr=lr)
            if variant == "plain":
                self.steppers[variant] = self._plain(model, opt, seed)
            else:
                mow = MoW(model.encode, self.cost, n=n, k=k, latent_dim=self.D,
                          per_example=_recon(model), refresh="pre" if variant == "mow_pre"
                          else "post", exact_value=variant != "mow_fast",
                          generator=torch.Generator(device=self.device).manual_seed(seed + 2),
                          device=self.device)
                mow.init_window("prior")
                self.steppers[variant] = (lambda x, mow=mow, opt=opt: mow.step(x, opt))
                setattr(self, variant, mow)

    def _plain(self, model, opt, seed):
        cost, k, dev = self.cost, self.k, self.device
        gen = torch.Generator(device=dev).manual_seed(seed + 2)
        with_f = k >= cost.min_n
        G = _recon(model)

        def step(x):
            z = model.encode(x)
            total = G(x, z).sum()
            if with_f:
                y = (torch.randn(k, self.D, generator=gen, device=dev) if cost.needs_prior
                     else None)
                total = total + cost(z, y)
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            return total.detach()

        self.plain_has_f = with_f
        return step

    def run(self, variant: str, steps: int, *, guard: bool = True) -> None:
        """``steps`` steps of ``variant``; MoW variants under the CUDA sync guard (not during
        warm-up: first calls build cached constants on the device, a host-to-device copy)."""
        fn = self.steppers[variant]
        guard = (_cuda_sync_guard(self.device) if guard and variant != "plain"
                 else contextlib.nullcontext())
        with guard:
            for _ in range(steps):
                fn(self.xs[self.i % len(self.xs)])
                self.i += 1

    def window_ops(self):
        """The window's own work per step on detached latents of the model's size: split
        value + gradient w.r.t. the k latents (exact value, as the ``mow`` variant), cache
        update and push (:class:`mowtheory.bench.costs._Bench`)."""
        from .costs import _Bench
        b = _Bench(self.cost, n=self.n, k=self.k, dim=self.D, dtype=torch.float32,
                   device=self.device, pool=8, seed=5, constants=True)
        return b.split_step


def _recon(model):
    def G(x, z):
        return (model.decode(z) - x).pow(2).flatten(1).sum(1)
    return G


def audit(setup: _Setup, *, accelerator_path: bool) -> list:
    """Host reads from mowtheory code during one MoW step (refresh post, exact value)."""
    mow = setup.mow
    x = setup.xs[0]
    with HostReads(accelerator_path=accelerator_path) as h:
        mow.step(x, _NoOpt())
    return h.reads


class _NoOpt(torch.optim.Optimizer):
    """Optimizer stand-in for the audit (torch's optimizers are not mowtheory code); a
    subclass so that ``MoW.step``'s type check accepts it, with nothing to update."""

    def __init__(self) -> None:       # no parameter groups: torch's __init__ would refuse
        self.param_groups = []

    def zero_grad(self, set_to_none: bool = True) -> None:
        pass

    def step(self) -> None:
        pass


def measure(arch: str, cost_name: str, *, n: int, k: int, device="cpu", steps: int = 0,
            reps: int = 5, budget_s: float = 2.0, seed: int = 0) -> dict:
    """Per-step medians of the variants for one (arch, cost, n, k); ``steps=0``: blocks of
    about ``budget_s`` seconds (at least 2 steps). Short blocks, many repetitions: the
    variants are interleaved finely, so load from other processes hits them alike."""
    s = _Setup(arch, cost_name, n=n, k=k, device=device, seed=seed)
    for v in VARIANTS:                                    # warm-up
        s.run(v, 2, guard=False)
    if steps <= 0:
        t1 = U.timed(lambda: s.run("mow", 3), device) / 3
        steps = int(max(2, min(200, budget_s / max(t1, 1e-6))))
    times = {v: [] for v in VARIANTS}
    for _ in range(reps):
        for v in VARIANTS:
            times[v].append(U.timed(lambda v=v: s.run(v, steps), device) / steps)
    op = s.window_ops()
    for _ in range(3):
        op()
    wsteps = max(steps, 20)
    t_ops = U.median([U.timed(lambda: [op() for _ in range(wsteps)], device) / wsteps
                      for _ in range(reps)])
    med = {v: U.median(t) for v, t in times.items()}
    row = {"arch": arch, "cost": cost_name, "n": n, "k": k, "latent_dim": s.D,
           "device": str(device), "steps_per_block": steps, "reps": reps,
           "plain_has_F": s.plain_has_f,
           **{f"{v}_s": med[v] for v in VARIANTS},
           "window_ops_s": t_ops,
           "window_share": (med["mow"] - med["plain"]) / med["mow"],
           "window_share_pre": (med["mow_pre"] - med["plain"]) / med["mow_pre"],
           "window_share_fast": (med["mow_fast"] - med["plain"]) / med["mow_fast"],
           "window_ops_share": t_ops / med["mow"],
           "host_reads_accelerator_path": len(audit(s, accelerator_path=True)),
           "host_reads_cpu_path": len(audit(s, accelerator_path=False))}
    return row


def format_results(rows: list) -> str:
    out = [U.table(
        ["arch", "cost", "device", "n", "k", "plain", "MoW (post)", "MoW (pre)",
         "MoW (post, no constants)", "window ops", "window share", "share (pre)",
         "host reads (accel. path)"],
        [[r["arch"], r["cost"], r["device"], r["n"], r["k"],
          U.fmt_s(r["plain_s"]) + ("" if r["plain_has_F"] else " (no F)"),
          U.fmt_s(r["mow_s"]), U.fmt_s(r["mow_pre_s"]), U.fmt_s(r["mow_fast_s"]),
          U.fmt_s(r["window_ops_s"]), f"{100 * r['window_share']:.1f}%",
          f"{100 * r['window_share_pre']:.1f}%", r["host_reads_accelerator_path"]]
         for r in rows])]
    return "\n".join(out)


def targets(rows: list) -> dict:
    out = {"no_host_sync": {"target": "no host read of a tensor value in MoW.step "
                                      "(accelerator code path)",
                            "pass": all(r["host_reads_accelerator_path"] == 0 for r in rows)}}
    cuda = [r for r in rows if r["device"].startswith("cuda")]
    if cuda:
        worst = max(cuda, key=lambda r: r["window_share"])
        out["cuda_share"] = {"target": f"window share <= {100 * TARGET_SHARE:g}% on CUDA",
                             "max_share": worst["window_share"],
                             "pass": worst["window_share"] <= TARGET_SHARE}
    cpu = [r for r in rows if r["device"] == "cpu"]
    if cpu:
        out["cpu_share"] = {"target": "reported (no target on CPU)",
                            "max_share": max(r["window_share"] for r in cpu), "pass": None}
    return out


# --------------------------------------------------------------------------- CLI
def add_arguments(p) -> None:
    p.add_argument("--arch", default="mnist,celeba",
                   help="comma-separated build_autoencoder names")
    p.add_argument("--costs", default="cwae,wae", help="comma-separated registry names")
    p.add_argument("--n", type=int, default=64, help="batch size n of MoW")
    p.add_argument("--k", default="1,8", help="comma-separated fresh examples per step")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--steps", type=int, default=0,
                   help="steps per timed block (0: about --budget seconds per block)")
    p.add_argument("--budget", type=float, default=0.4, help="seconds per timed block")
    p.add_argument("--reps", type=int, default=11, help="interleaved blocks per variant")
    p.add_argument("--profile", action="store_true",
                   help="print torch.profiler tables of a MoW and a plain step")
    p.add_argument("--compile", action="store_true",
                   help="add rows with the torch.compile speedup of the MoW step "
                        "(mowtheory.bench.compile_step; compiling takes minutes on a small CPU)")
    p.add_argument("--methods", action="store_true",
                   help="instead: time per step and per example of MoW (each --k), gradcache "
                        "(each --chunks) and minibatch on --arch at --resolutions "
                        "(mowtheory.bench.methods; cost cwae), e.g. --arch ffhq "
                        "--resolutions 128,256 --reps 3")
    p.add_argument("--resolutions", default="",
                   help="--methods: comma-separated image sides (default: the arch's)")
    p.add_argument("--chunks", default="1,8", help="--methods: gradcache chunk sizes")


def run(args) -> int:
    from .costs import _ints
    if args.methods:
        from . import methods
        return methods.run(args)
    archs = [a.strip() for a in args.arch.split(",") if a.strip()]
    names = [c.strip() for c in args.costs.split(",") if c.strip()]
    for nm in names:
        if nm not in C.names():
            raise ValueError(f"--costs: cost must be one of {', '.join(C.names())}; got {nm!r}")
    ks = _ints(args.k, "--k")
    devs = U.devices(args.device)
    print(f"bench step: arch={archs} costs={names} n={args.n} k={ks} on {', '.join(devs)} "
          f"(torch threads {torch.get_num_threads()})", flush=True)
    rows = []
    for dev in devs:
        for arch in archs:
            for nm in names:
                for k in ks:
                    r = measure(arch, nm, n=args.n, k=k, device=dev, steps=args.steps,
                                reps=args.reps, budget_s=args.budget)
                    rows.append(r)
                    print(f"  {arch} {nm} {dev} k={k}: plain {U.fmt_s(r['plain_s'])}, MoW "
                          f"{U.fmt_s(r['mow_s'])} -> window share "
                          f"{100 * r['window_share']:.1f}% (window ops "
                          f"{U.fmt_s(r['window_ops_s'])}), host reads on the accelerator "
                          f"path {r['host_reads_accelerator_path']}", flush=True)
    print()
    print(format_results(rows))
    tg = targets(rows)
    for name, t in tg.items():
        status = {True: "PASS", False: "FAIL", None: "reported"}[t["pass"]]
        val = t.get("max_share")
        extra = f": {100 * val:.1f}%" if val is not None else ""
        print(f"target {name}: {t['target']}{extra} -> {status}")
    compiled = []
    if getattr(args, "compile", False):
        from . import compile_step
        for dev in devs:
            for arch in archs:
                for nm in names:
                    for k in ks:
                        compiled.append(compile_step.measure(arch, nm, n=args.n, k=k, device=dev,
                                                             reps=args.reps, budget_s=args.budget))
        print("\ntorch.compile (loss compiled with inductor, eager backward/update/commit):")
        print(compile_step.format_results(compiled))
    if args.profile:
        s = _Setup(archs[0], names[0], n=args.n, k=ks[0], device=devs[0])
        for v in ("mow", "plain"):
            s.run(v, 2, guard=False)
            print(f"\nprofile {v} step: {archs[0]} {names[0]} n={args.n} k={ks[0]} {devs[0]}")
            print(U.profile_table(lambda v=v: s.run(v, 1), steps=20, device=devs[0]))
    config = {"arch": archs, "costs": names, "n": args.n, "k": ks, "devices": devs,
              "steps": args.steps, "budget_s": args.budget, "reps": args.reps}
    return U.finish(args, "step", config, rows=rows, targets=tg,
                    **({"compile_rows": compiled} if compiled else {}))
