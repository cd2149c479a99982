"""MoW in a Hugging Face Accelerate loop, on one process or several (CPU: gloo).

One process: the model, optimizer and data loader go through ``accelerator.prepare``; each
step is MoW's two phases around Accelerate's backward::

    parts, ctx = mow.loss(x)               # inside accelerator.autocast() for mixed precision
    accelerator.backward(parts.total)
    optimizer.step(); optimizer.zero_grad()
    mow.commit(ctx)                        # the window slides after the update

Several processes: every rank holds the same *global* window
(:class:`mowtheory.distributed.DistributedMoW`): the k fresh latents of all P ranks are
gathered into one objective of one process with k·P, and the parameter gradients are
**summed** over ranks (``allreduce_gradients``) before the step. So the model is not wrapped
in DDP by ``accelerator.prepare`` (DDP would *average* the gradients, and only for graphs
that went through its ``forward``); only the optimizer and the data loader are prepared. The
loader is sharded by Accelerate: rank r reads batch ``s·P + r`` at step s, rows ``r·k ..
r·k + k - 1`` of the global batch s of k·P rows, which is what one process with k·P reads.

    pip install "mowtheory[accelerate]"
    python examples/accelerate_loop.py                      # one process, 300 steps
    python examples/accelerate_loop.py --processes 2        # two CPU processes (gloo)
    python examples/accelerate_loop.py --quick              # 12 steps (a smoke run)
"""
from __future__ import annotations

import argparse
import os
import socket
import tempfile

import torch
import torch.multiprocessing as mp
from torch import nn

from mowtheory import MoW, costs
from mowtheory.distributed import DistributedMoW, allreduce_gradients, broadcast_parameters

X_DIM, LATENT = 5, 3


class AE(nn.Module):
    """MLP autoencoder ``(b, 5) -> (b, 3) -> (b, 5)``; ``G`` is its squared reconstruction
    error ``(k, 5), (k, 3) -> (k,)``."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(X_DIM, 16), nn.Tanh(), nn.Linear(16, LATENT))
        self.dec = nn.Linear(LATENT, X_DIM)

    def G(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return (self.dec(z) - x).square().sum(-1)


def data(N: int, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return (torch.randn(N, 2, generator=g, dtype=dtype)
            @ torch.randn(2, X_DIM, generator=g, dtype=dtype))


def train(x: torch.Tensor, *, n: int, k: int, steps: int, lr: float = 0.01, seed: int = 0,
          mixed_precision: str = "no") -> tuple:
    """MoW_k(n) (per process k; the window holds ``n - k·P`` latents) for ``steps`` steps on
    the rows of ``x`` after the first ``n - k·P`` (which fill the window). Returns
    ``(model, mow, accelerator)``; every rank ends with the same model and window."""
    from accelerate import Accelerator
    accelerator = Accelerator(cpu=True, mixed_precision=mixed_precision)
    P = accelerator.num_processes
    torch.manual_seed(seed)
    model = AE().to(dtype=x.dtype)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    m = n - k * P
    loader = torch.utils.data.DataLoader(x[m:m + steps * k * P], batch_size=k, shuffle=False)
    kw = dict(n=n, latent_dim=LATENT, per_example=model.G, dtype=x.dtype,
              generator=torch.Generator().manual_seed(seed + 1))
    if P == 1:
        model, opt, loader = accelerator.prepare(model, opt, loader)
        mow = MoW(model.enc, costs.get("cwae"), k=k, **kw)
    else:                                        # no DDP: MoW sums the gradients itself
        model = model.to(accelerator.device)
        opt, loader = accelerator.prepare(opt, loader)
        broadcast_parameters(model)
        mow = DistributedMoW(model.enc, costs.get("cwae"), k=k, **kw)
    mow.init_window("encode", x[:m].to(accelerator.device))
    for batch in loader:
        with accelerator.autocast():
            parts, ctx = mow.loss(batch)
        accelerator.backward(parts.total)
        if P > 1:
            allreduce_gradients(list(model.parameters()))
        opt.step()
        opt.zero_grad()
        mow.commit(ctx)
    return model, mow, accelerator


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, port: int, out: str, args: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    x = data(args["N"], dtype=args["dtype"])
    model, mow, acc = train(x, n=args["n"], k=args["k"], steps=args["steps"],
                            lr=args.get("lr", 0.01))
    mow.check_synchronized(model)                # same window and weights on every rank
    if acc.is_main_process:
        torch.save({"model": model.state_dict(), "mow": mow.state_dict()}, out + ".tmp")
        os.replace(out + ".tmp", out)
    acc.wait_for_everyone()
    torch.distributed.destroy_process_group()


def train_processes(world: int, *, N: int, n: int, k: int, steps: int, lr: float = 0.01,
                    dtype=torch.float32) -> dict:
    """Run :func:`train` in ``world`` CPU processes (gloo); returns rank 0's
    ``{"model": state_dict, "mow": MoW state}``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rank0.pt")
        args = dict(N=N, n=n, k=k, steps=steps, lr=lr, dtype=dtype)
        mp.spawn(_rank, args=(world, _free_port(), out, args), nprocs=world, join=True)
        return torch.load(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="12 steps (a smoke run)")
    p.add_argument("--processes", type=int, default=1, help="CPU processes (gloo)")
    p.add_argument("--mixed-precision", default="no", choices=("no", "bf16"))
    args = p.parse_args(argv)
    steps, n, k = (12, 16, 2) if args.quick else (300, 32, 2)
    N = n + steps * k * args.processes
    if args.processes > 1:
        state = train_processes(args.processes, N=N, n=n, k=k, steps=steps)
        model = AE()
        model.load_state_dict(state["model"])
        done = state["mow"]["mow"]["steps"]
    else:
        model, mow, _ = train(data(N), n=n, k=k, steps=steps,
                              mixed_precision=args.mixed_precision)
        done = mow.steps
    x = data(N)
    with torch.no_grad():
        err = float((model.dec(model.enc(x)) - x).square().sum(-1).mean())
    print(f"accelerate, {args.processes} process(es): {done} MoW steps, "
          f"mean reconstruction error {err:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
