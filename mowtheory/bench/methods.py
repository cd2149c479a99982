"""``mowtheory bench step --methods``: time per optimizer step and per example processed of
the three training methods on one model, side by side.

Variants (CWAE cost, ``sqrt_mean`` reduction, Adam), on random images of the model's input
size:

- ``MoW k=K``: :meth:`mowtheory.mow.MoW.step` with n, k (refresh ``post``: the k examples are
  re-encoded after the update, as the paper and the trainer's default);
- ``gradcache c=C``: :class:`mowtheory.gradcache.GradCache`, the exact n-batch step with C
  examples encoded at a time (one extra encoder forward per example, plus one decoder
  forward for ``sqrt_mean``);
- ``minibatch``: :class:`mowtheory.gradcache.Minibatch`, the plain n-batch step.

Each variant owns a copy of the model and its optimizer; after one warm-up step each, the
variants run one step in turn, ``reps`` times (interleaved, so load from other processes hits
them alike); medians. Time per example = time per step / examples read by the step (k for
MoW, n for the others). The memory of the same steps is ``mowtheory bench memory --chunks``.
"""
from __future__ import annotations

import copy

import torch

from .. import costs as C
from ..gradcache import GradCache, Minibatch
from ..mow import MoW
from . import _common as U


def _recon(model):
    def G(x, z):
        return (model.decode(z) - x).pow(2).flatten(1).sum(1)
    return G


def measure(arch: str, resolution, *, n: int, ks, chunks, device="cpu", reps: int = 3,
            seed: int = 0) -> list[dict]:
    """One row per variant: ``step_s`` and ``example_s`` (medians over ``reps``)."""
    from ..train.models import build_autoencoder
    dev = torch.device(device)
    torch.manual_seed(seed)
    base = build_autoencoder(arch, resolution=resolution).to(dev)
    x = torch.rand(n, *base.input_shape, generator=torch.Generator().manual_seed(seed + 1))
    x = x.to(dev)
    variants = []

    def add(name, make, per):
        model = copy.deepcopy(base)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        gen = torch.Generator(device=dev).manual_seed(seed + 2)
        step = make(model, gen)
        variants.append((name, per, lambda: step.step(x[:per], opt)))

    def mow(k):
        def make(model, gen):
            m = MoW(model.encode, C.get("cwae"), n=n, k=k, latent_dim=model.latent_dim,
                    per_example=_recon(model), reduction="sqrt_mean", generator=gen, device=dev)
            m.init_window("prior")
            return m
        return make

    for k in ks:
        add(f"MoW k={k}", mow(k), k)
    for c in chunks:
        add(f"gradcache c={c}", lambda model, gen, c=c: GradCache(
            model.encode, C.get("cwae"), n=n, chunk=c, per_example=_recon(model),
            reduction="sqrt_mean", generator=gen, device=dev), n)
    add("minibatch", lambda model, gen: Minibatch(
        model.encode, C.get("cwae"), n=n, per_example=_recon(model), reduction="sqrt_mean",
        generator=gen, device=dev), n)
    for _, _, fn in variants:                                 # warm-up
        fn()
    times = {name: [] for name, _, _ in variants}
    for _ in range(reps):
        for name, _, fn in variants:
            times[name].append(U.timed(fn, dev))
    rows = []
    for name, per, _ in variants:
        t = U.median(times[name])
        rows.append({"arch": arch, "resolution": base.input_shape[-1], "n": n, "variant": name,
                     "examples_per_step": per, "device": str(dev), "reps": reps,
                     "step_s": t, "example_s": t / per, "times_s": times[name]})
    ref = {r["variant"]: r for r in rows}
    for r in rows:
        for other in ("MoW k=1", "minibatch"):
            if other in ref and other != r["variant"]:
                key = "per_example_vs_" + ("mow1" if other == "MoW k=1" else "minibatch")
                r[key] = r["example_s"] / ref[other]["example_s"]
    return rows


def format_results(rows: list) -> str:
    return U.table(
        ["arch", "resolution", "n", "step", "examples / step", "time per step",
         "time per example", "per example / MoW k=1", "per example / minibatch"],
        [[r["arch"], r["resolution"], r["n"], r["variant"], r["examples_per_step"],
          U.fmt_s(r["step_s"]), U.fmt_s(r["example_s"]),
          f"{r['per_example_vs_mow1']:.2f}x" if "per_example_vs_mow1" in r else "—",
          f"{r['per_example_vs_minibatch']:.2f}x" if "per_example_vs_minibatch" in r else "—"]
         for r in rows])


def run(args) -> int:
    """``bench step --methods``: every (arch, resolution) of the options."""
    from .._validate import check_int
    from .costs import _ints
    archs = [a.strip() for a in args.arch.split(",") if a.strip()]
    ks, chunks = _ints(args.k, "--k"), _ints(args.chunks, "--chunks")
    n = check_int("n", args.n, low=2)
    for k in ks:
        check_int("k", k, low=1, high=n, high_name="n")
    for c in chunks:
        check_int("chunk (in --chunks)", c, low=1, high=n, high_name="n")
    reps = check_int("reps", args.reps, low=1)
    resolutions = _ints(args.resolutions, "--resolutions") if args.resolutions else [None]
    devs = U.devices(args.device)
    print(f"bench step --methods: arch={archs} resolutions={resolutions} n={n} k={ks} "
          f"c={chunks} reps={reps} on {', '.join(devs)} (torch threads "
          f"{torch.get_num_threads()})", flush=True)
    rows = []
    for dev in devs:
        for arch in archs:
            for res in resolutions:
                got = measure(arch, res, n=n, ks=ks, chunks=chunks, device=dev, reps=reps)
                for r in got:
                    print(f"  {arch} {r['resolution']} {dev} {r['variant']}: step "
                          f"{U.fmt_s(r['step_s'])}, per example {U.fmt_s(r['example_s'])}",
                          flush=True)
                rows += got
    print()
    print(format_results(rows))
    config = {"arch": archs, "resolutions": resolutions, "n": n, "k": ks, "chunks": chunks,
              "reps": reps, "devices": devs, "cost": "cwae", "reduction": "sqrt_mean"}
    return U.finish(args, "step-methods", config, sub="step", rows=rows)
