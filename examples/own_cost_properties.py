"""Property tests for your own batch cost F, with ``mowtheory.testing``.

MoW's theorem needs F to be permutation invariant, and a correct MoW objective lets no
gradient reach the frozen window (docs/theory.md). ``mowtheory.testing`` checks both for any
F you write, with hypothesis generating the inputs (docs/guides/own-cost.md). This script

1. checks a permutation-invariant F of its own (a Gaussian-kernel "spread" cost) and shows the
   checker catching a position-dependent F, and passing once it is symmetrised;
2. checks with hypothesis that ``mow_loss`` freezes the window for that F, and shows the
   checker catching an objective that forgets to detach the window.

    python examples/own_cost_properties.py            # 200 hypothesis examples per property
    python examples/own_cost_properties.py --quick    # 10 (a smoke run)

In a test suite, write the same checks as pytest functions decorated with ``@given``.
"""
from __future__ import annotations

import argparse

import torch
from hypothesis import given, settings

from mowtheory import costs, mow_loss
from mowtheory import testing as mt


def spread(z: torch.Tensor) -> torch.Tensor:
    """My F: mean Gaussian-kernel similarity of all pairs, ``(n, D) -> ()``. Invariant."""
    d2 = torch.cdist(z, z).square()
    return torch.exp(-d2 / 2).mean()


def weighted_spread(z: torch.Tensor) -> torch.Tensor:
    """A faulty F: the last rows (where MoW puts the fresh latents) weigh more. Not invariant."""
    w = torch.arange(1, z.shape[-2] + 1, dtype=z.dtype)
    return (torch.exp(-torch.cdist(z, z).square() / 2) * w).mean()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="few hypothesis examples")
    args = ap.parse_args(argv)
    examples = 10 if args.quick else 200
    g = torch.Generator().manual_seed(0)
    z = torch.randn(8, 3, generator=g, dtype=torch.float64)

    # 1. permutation invariance
    print("spread: |F(z[perm]) - F(z)| =", mt.check_permutation_invariant(spread, z))
    try:
        mt.check_permutation_invariant(weighted_spread, z)
        raise SystemExit("the checker missed a position-dependent F")
    except AssertionError as exc:
        print("weighted_spread rejected:", str(exc).split(";")[0])
    symmetric = costs.symmetrize(weighted_spread, n_permutations=64, generator=g)
    exact = costs.symmetrize(weighted_spread)            # the mean over all n! orders (n <= 8)
    print("symmetrised (exact) weighted_spread: |F(z[perm]) - F(z)| =",
          mt.check_permutation_invariant(exact, z[:5]))
    print("symmetrised (64 random orders) value:", float(symmetric(z)))

    # 2. the window is frozen, for every window/fresh split hypothesis generates
    @settings(max_examples=examples, deadline=None, database=None)
    @given(mt.mow_cases(needs_prior=False, max_n=8, max_d=4))
    def window_is_frozen(case):
        mt.check_gradient_frozen(lambda f, w, y: mow_loss(spread, f, w).total, spread,
                                 case.fresh, case.window, atol=case.atol)

    window_is_frozen()
    print(f"mow_loss freezes the window for spread ({examples} hypothesis examples)")

    def leaky(f, w, y):            # forgets to detach: gradient flows into the window
        return spread(torch.cat([w, f]))

    try:
        mt.check_gradient_frozen(leaky, spread, z[6:], z[:6])
        raise SystemExit("the checker missed a leaking window")
    except AssertionError as exc:
        print("leaky objective rejected:", exc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
