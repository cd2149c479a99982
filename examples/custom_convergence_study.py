"""A convergence study of your own problem with ``mowtheory.flow``.

Theorem 1 says that MoW_k(n) with step eta follows the flow S' = -(k/n) grad C(S) as
eta -> 0, where C(theta) = E[F_n] + n E[G] is the expected cost of a batch of n
(docs/theory.md). To check it on a problem of your own, subclass
:class:`mowtheory.flow.Problem` with the maps (encoder, F, G) and the closed forms of E[F_n]
and of G's Gaussian residual, and hand an instance to :func:`mowtheory.flow.run_study`.

The problem here ("shift"): data x ~ N(0, s2) in 1-D, one parameter theta,

    encoder  z = x + theta                      F(z_1..z_n) = (mean_i z_i)^2
    G(x)     = beta (theta - x)^2              (residual y = sqrt(beta) (theta - x))

so E[F_n] = theta^2 + s2 / n and G's residual is Gaussian with mean sqrt(beta) theta and
variance beta s2. The study simulates many MoW runs (replicas) at several step sizes,
measures the strong and weak errors against the reference solution of the right ODE and of
the wrong one (S' = -grad C), fits the orders and prints the verdicts.

    python examples/custom_convergence_study.py            # ~1 min on a laptop core
    python examples/custom_convergence_study.py --quick    # a few seconds (smoke run)
"""
from __future__ import annotations

import argparse
import math

import torch

from mowtheory.flow import Problem, run_study

DTYPE = torch.float64


class Shift(Problem):
    """z = x + theta, F = (mean z)^2, G = beta (theta - x)^2, x ~ N(0, s2)."""

    name = "shift"
    n_params = 1
    data_dim = 1
    latent_dim = 1
    defaults = {"n": 8, "k": 1, "horizon": 1.0, "etas": (0.04, 0.02, 0.01, 0.005)}

    def __init__(self, s2: float = 1.0, beta: float = 0.2, theta_init: float = 1.5):
        self.s2, self.beta, self.theta_init = float(s2), float(beta), float(theta_init)
        self._data_scale = torch.tensor([math.sqrt(self.s2)], dtype=DTYPE)  # used by sample_data

    def theta0(self, generator):
        return torch.tensor([self.theta_init], dtype=DTYPE, device=generator.device)

    def encode(self, theta, x):            # theta (..., 1), x (..., b, 1) -> (..., b, 1)
        return x + theta.unsqueeze(-2)

    def batch_cost(self, z, prior=None):   # (..., n, 1) -> (...)
        return z.mean(-2).pow(2).sum(-1)

    def residual(self, theta, x):          # G = |residual|^2
        return math.sqrt(self.beta) * (theta.unsqueeze(-2) - x)

    def residual_gaussian(self, theta):    # residual ~ N(m, A) at theta
        m = math.sqrt(self.beta) * theta
        A = torch.full((*theta.shape[:-1], 1, 1), self.beta * self.s2, dtype=theta.dtype,
                       device=theta.device)
        return m, A

    def expected_batch_cost(self, theta, n):
        return theta[..., 0] ** 2 + self.s2 / n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.quick:
        study = run_study(Shift(), n=4, k=1, etas=[0.05, 0.025, 0.0125], replicas=64,
                          horizon=0.5, record=5, bootstrap=20)
    else:
        study = run_study(Shift(), replicas=1024)
    print(study.table())
    for v in study.verdicts:
        print(f"{v['status']:>12}  {v['claim']}: {v['detail']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
