"""``mowtheory bench step --compile``: the MoW step with ``torch.compile``'d loss against eager.

Two copies of the same autoencoder and MoW (refresh ``post``, exact value), Adam:

- ``eager``: :meth:`mowtheory.mow.MoW.step`;
- ``compiled``: ``loss = torch.compile(mow.loss)`` (inductor, the default backend), then the
  same backward, ``optimizer.step()`` and :meth:`~mowtheory.mow.MoW.commit` as ``step``
  (the compiled graph covers the encoder, G, F against the window and their backward).

Reported per configuration: the median step time of each (interleaved blocks, after the
warm-up that compiles), the speedup ``eager / compiled``, the compile time (first two calls:
the graph at step 0 and the recompilation once the step count varies), and the number of
graph breaks dynamo recorded (0 on the default path; a cost that draws a prior sample from a
``torch.Generator`` breaks there).
"""
from __future__ import annotations

import copy
import time

import torch

from .. import costs as C
from ..mow import MoW
from . import _common as U


def _pair(arch: str, cost_name: str, *, n: int, k: int, device, seed: int):
    from ..train.models import build_autoencoder
    torch.manual_seed(seed)
    base = build_autoencoder(arch).to(device)
    g = torch.Generator().manual_seed(seed + 1)
    xs = [torch.rand(k, *base.input_shape, generator=g).to(device) for _ in range(8)]
    out = []
    for _ in range(2):
        model = copy.deepcopy(base)
        cost = C.get(cost_name, **({"generator": torch.Generator(device=device).manual_seed(seed)}
                                   if cost_name == "swae" else {}))
        mow = MoW(model.encode, cost, n=n, k=k, latent_dim=base.latent_dim,
                  per_example=lambda x, z, m=model: (m.decode(z) - x).pow(2).flatten(1).sum(1),
                  generator=torch.Generator(device=device).manual_seed(seed + 2), device=device)
        mow.init_window("prior")
        out.append((mow, torch.optim.Adam(model.parameters(), lr=1e-4)))
    return out, xs


def measure(arch: str, cost_name: str, *, n: int, k: int, device="cpu", reps: int = 5,
            budget_s: float = 0.4, seed: int = 0, backend: str = "inductor") -> dict:
    """Median seconds per step, eager and with the loss compiled by ``backend`` (a
    ``torch.compile`` backend name), for one configuration."""
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    counters.clear()
    ((eager, opt_e), (comp, opt_c)), xs = _pair(arch, cost_name, n=n, k=k, device=device,
                                                seed=seed)
    loss = torch.compile(comp.loss, backend=backend)

    def compiled_step(x):
        parts, ctx = loss(x)
        opt_c.zero_grad(set_to_none=True)
        parts.total.backward()
        opt_c.step()
        comp.commit(ctx)

    steppers = {"eager": lambda x: eager.step(x, opt_e), "compiled": compiled_step}
    t0 = time.perf_counter()
    for i in range(3):                      # compile (step 0), recompile (steps vary), run
        compiled_step(xs[i % len(xs)])
    U.sync(device)
    compile_s = time.perf_counter() - t0
    for i in range(3):
        steppers["eager"](xs[i % len(xs)])
    t1 = U.timed(lambda: [steppers["eager"](x) for x in xs[:3]], device) / 3
    steps = int(max(2, min(200, budget_s / max(t1, 1e-6))))
    times = {v: [] for v in steppers}
    for _ in range(reps):
        for v, fn in steppers.items():
            times[v].append(U.timed(lambda fn=fn: [fn(xs[i % len(xs)]) for i in range(steps)],
                                    device) / steps)
    med = {v: U.median(t) for v, t in times.items()}
    return {"arch": arch, "cost": cost_name, "n": n, "k": k, "device": str(device),
            "backend": backend,
            "steps_per_block": steps, "reps": reps, "eager_s": med["eager"],
            "compiled_s": med["compiled"], "speedup": med["eager"] / med["compiled"],
            "compile_s": compile_s, "graph_breaks": int(sum(counters["graph_break"].values()))}


def format_results(rows: list) -> str:
    return U.table(["arch", "cost", "device", "n", "k", "MoW step (eager)",
                    "MoW step (compiled loss)", "speedup", "compile time", "graph breaks"],
                   [[r["arch"], r["cost"], r["device"], r["n"], r["k"], U.fmt_s(r["eager_s"]),
                     U.fmt_s(r["compiled_s"]), f"{r['speedup']:.2f}x",
                     f"{r['compile_s']:.1f} s", r["graph_breaks"]] for r in rows])
