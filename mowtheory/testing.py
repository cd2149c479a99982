"""Property-test toolkit: point it at your own batch cost F.

Hypothesis strategies (each returns inputs together with what a check needs to know):

- :func:`latent_batches`: float64 latent batches ``(n, D)``, finite and bounded;
- :func:`permutations`: a permutation of ``range(n)`` as a LongTensor;
- :func:`mow_cases`: a whole MoW situation, :class:`MoWCase` (window, fresh latents, prior
  sample, n, k and the tolerance to compare in).

Checkers (raise ``AssertionError`` with the evidence; return the measured deviation; raise
:class:`Inconclusive`, a ``ValueError``, when F's output cannot be judged: not a tensor, not
of the expected shape, NaN or infinite -- such a check never passes):

- :func:`check_permutation_invariant`: F(z[σ], y[τ]) == F(z, y);
- :func:`check_gradient_frozen`: an objective lets no gradient reach the window, and its
  gradient with respect to the fresh latents is that of F with the window detached;

and :func:`window_machine`, a hypothesis state machine that drives a
:class:`~mowtheory.window.LatentWindow` (and, given a cost, its split cache) against a plain
list model of the window.

Example (pytest)::

    from hypothesis import given
    from mowtheory import testing as mt

    @given(mt.mow_cases(needs_prior=False))
    def test_my_F_is_frozen(case):
        mt.check_gradient_frozen(my_objective, my_F, case.fresh, case.window, atol=case.atol)
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import torch

try:
    from hypothesis import strategies as st
    from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
except ImportError as exc:  # pragma: no cover - hypothesis is in the `test` extra
    raise ImportError("mowtheory.testing needs hypothesis: pip install 'mowtheory[test]'") from exc

from .window import LatentWindow

__all__ = ["MoWCase", "Inconclusive", "latent_batches", "permutations", "mow_cases",
           "check_permutation_invariant", "check_gradient_frozen", "window_machine"]

_BOUND = 3.0


class Inconclusive(ValueError):
    """A check could not be computed (F returned something other than a finite tensor of the
    expected shape): neither a pass nor evidence of the property failing."""


def _judgeable(value, what: str, shape: tuple = ()) -> torch.Tensor:
    """``value`` must be a finite tensor of ``shape`` (0-dim by default), else Inconclusive."""
    if not isinstance(value, torch.Tensor):
        raise Inconclusive(f"{what} must return a torch.Tensor of shape {shape}; got "
                           f"{type(value).__name__} {value!r}: the check is inconclusive")
    if tuple(value.shape) != tuple(shape):
        raise Inconclusive(f"{what} must return a tensor of shape {tuple(shape)} (one value per "
                           f"batch); got shape {tuple(value.shape)}: the check is inconclusive")
    if not bool(torch.isfinite(value).all()):
        vals = value.detach().flatten()[:4].tolist()
        raise Inconclusive(f"{what} returned a non-finite value ({vals}): the check is "
                           f"inconclusive (F is NaN or infinite at this input)")
    return value


def _check_range(lo_name: str, lo, hi_name: str, hi, low: int) -> None:
    from ._validate import check_int
    check_int(lo_name, lo, low=low)
    check_int(hi_name, hi, low=low)
    if lo > hi:
        raise ValueError(f"{lo_name} must be <= {hi_name}; got {lo_name}={lo} > {hi_name}={hi}")


def _tensor(rows, dtype=torch.float64) -> torch.Tensor:
    return torch.tensor(rows, dtype=dtype)


def latent_batches(*, min_n: int = 2, max_n: int = 16, min_d: int = 1, max_d: int = 8,
                   n: Optional[int] = None, d: Optional[int] = None, bound: float = _BOUND):
    """Strategy of float64 tensors ``(n, D)`` with entries in ``[-bound, bound]`` (finite)."""
    _check_range("min_n", min_n, "max_n", max_n, 1)
    _check_range("min_d", min_d, "max_d", max_d, 1)
    from ._validate import check_int, check_positive
    if n is not None:
        check_int("n", n, low=1)
    if d is not None:
        check_int("d", d, low=1)
    check_positive("bound", bound)
    n_st = st.just(n) if n is not None else st.integers(min_n, max_n)
    d_st = st.just(d) if d is not None else st.integers(min_d, max_d)
    elem = st.floats(-bound, bound, allow_nan=False, allow_infinity=False, width=64)

    @st.composite
    def build(draw):
        nn_, dd = draw(n_st), draw(d_st)
        return _tensor(draw(st.lists(st.lists(elem, min_size=dd, max_size=dd),
                                     min_size=nn_, max_size=nn_)))
    return build()


def permutations(n: int):
    """Strategy of permutations of ``range(n)``, as LongTensors of shape ``(n,)``."""
    return st.permutations(list(range(n))).map(lambda p: torch.tensor(p, dtype=torch.long))


class MoWCase(NamedTuple):
    """One MoW situation: ``window`` ``(n-k, D)``, ``fresh`` ``(k, D)``, ``prior`` ``(n, D)``
    or None, and ``atol``: the float64 tolerance a check of it should use."""
    window: torch.Tensor
    fresh: torch.Tensor
    prior: Optional[torch.Tensor]
    n: int
    k: int
    atol: float


def mow_cases(*, min_n: int = 2, max_n: int = 16, min_d: int = 2, max_d: int = 8,
              needs_prior: bool = True, allow_empty_window: bool = True):
    """Strategy of :class:`MoWCase` with ``1 <= k <= n`` (``k < n`` unless
    ``allow_empty_window``), float64 entries bounded by 3."""
    _check_range("min_n", min_n, "max_n", max_n, 1 if allow_empty_window else 2)
    _check_range("min_d", min_d, "max_d", max_d, 1)

    @st.composite
    def build(draw):
        n = draw(st.integers(min_n, max_n))
        k = draw(st.integers(1, n if allow_empty_window else n - 1))
        d = draw(st.integers(min_d, max_d))
        z = draw(latent_batches(n=n, d=d))
        y = draw(latent_batches(n=n, d=d)) if needs_prior else None
        return MoWCase(z[: n - k], z[n - k:], y, n, k, 1e-9)
    return build()


def _call(F, z, y):
    return F(z) if y is None else F(z, y)


def check_permutation_invariant(F: Callable, z: torch.Tensor, y: Optional[torch.Tensor] = None,
                                *, perm_z: Optional[torch.Tensor] = None,
                                perm_y: Optional[torch.Tensor] = None,
                                generator: Optional[torch.Generator] = None,
                                atol: float = 1e-10, rtol: float = 1e-10) -> float:
    """Check ``F(z[perm_z], y[perm_y]) == F(z, y)`` (z: ``(n, D)``, y: ``(n_y, D)`` or None).

    Permutations default to random ones from ``generator`` (seeded 0 when None); y is
    permuted separately from z. Returns ``|difference|``; raises AssertionError beyond
    ``atol + rtol·|F(z, y)|``.
    """
    if not isinstance(z, torch.Tensor) or z.dim() < 2:
        raise TypeError(f"z must be a tensor of shape (..., n, D); got {z!r:.80}")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    pz = perm_z if perm_z is not None else torch.randperm(z.shape[-2], generator=g)
    batch = tuple(z.shape[:-2])
    base = _judgeable(_call(F, z, y), "F(z, y)", batch)
    yp = None
    if y is not None:
        py = perm_y if perm_y is not None else torch.randperm(y.shape[-2], generator=g)
        yp = y[..., py, :]
    moved = _judgeable(_call(F, z[..., pz, :], yp), "F(z[perm_z], y[perm_y])", batch)
    diff = float((moved - base).abs().max())
    tol = atol + rtol * float(base.abs().max())
    if not diff <= tol:
        raise AssertionError(
            f"F is not permutation invariant: |F(z[perm]) - F(z)| = {diff:.3e} > {tol:.3e} "
            f"for perm_z={pz.tolist()}; symmetrize it with mowtheory.costs.symmetrize")
    return diff


def check_gradient_frozen(objective: Callable, F: Callable, fresh: torch.Tensor,
                          window: torch.Tensor, prior: Optional[torch.Tensor] = None, *,
                          atol: float = 1e-9, rtol: float = 1e-9,
                          grad_scale=None) -> float:
    """Check that a MoW objective freezes the window.

    Args:
        objective: ``objective(fresh, window, prior) -> 0-dim tensor``, the code under test
            (e.g. ``lambda f, w, y: mow_loss(F, f, w, prior=y).total``).
        F: the batch cost, ``F(z)`` or ``F(z, prior)`` on ``z = cat([window, fresh])``.
        fresh: ``(k, D)``; window: ``(n-k, D)``; prior: ``(n, D)`` or None.

    Asserts (1) no gradient reaches ``window`` even when it requires grad, and (2) the
    gradient with respect to ``fresh`` equals that of ``F(cat([window.detach(), fresh]))``
    within ``atol + rtol * max |reference gradient|`` (a scale-invariant F such as the
    pulling-away term has gradients of size ``1 / |z|``, whose rounding is relative).
    ``grad_scale`` (a float, or a ``(k,)`` tensor, one value per fresh row) is the size of
    the gradient's rounding where the exact gradient vanishes: row i is then held to
    ``atol + rtol * max(max |reference gradient|, grad_scale[i])``. E.g. ``1 / |z_i|`` for a
    cost homogeneous of degree 0 in each row (pullaway at a row of norm 1e-200 whose exact
    gradient is 0 rounds to ~1e-28 / |z_i|, not to 0). Returns the max abs gradient
    difference.
    """
    f = fresh.detach().clone().requires_grad_(True)
    w = window.detach().clone().requires_grad_(True)
    out = _judgeable(objective(f, w, prior), "objective(fresh, window, prior)")
    grads = torch.autograd.grad(out, [f, w], allow_unused=True)
    gw = grads[1]
    if gw is not None and float(gw.abs().max() if gw.numel() else 0.0) > 0.0:
        raise AssertionError(
            f"gradient leaks into the window: max |d objective / d window| = "
            f"{float(gw.abs().max()):.3e}; frozen latents must be detached")
    f2 = fresh.detach().clone().requires_grad_(True)
    ref = _judgeable(_call(F, torch.cat([window.detach(), f2], dim=-2), prior), "F(z, prior)")
    (g_ref,) = torch.autograd.grad(ref, [f2])
    g = grads[0] if grads[0] is not None else torch.zeros_like(g_ref)
    if not g.numel():
        return 0.0
    ref_max = float(g_ref.abs().max())
    scale = torch.as_tensor(0.0 if grad_scale is None else grad_scale, dtype=g.dtype)
    row_tol = atol + rtol * torch.clamp(scale.reshape(-1), min=ref_max)  # (k,) or (1,)
    row_diff = (g - g_ref).abs().reshape(g.shape[0], -1).amax(-1) if g.dim() else \
        (g - g_ref).abs().reshape(1)
    over = row_diff - row_tol
    if not bool((over <= 0).all()):
        i = int(torch.nan_to_num(over, nan=float("inf")).argmax())
        tol = float(row_tol[i if row_tol.numel() > 1 else 0])
        raise AssertionError(
            f"gradient with respect to the fresh latents differs from that of F with the "
            f"window detached by {float(row_diff[i]):.3e} > atol + rtol * max|grad| = "
            f"{tol:.1e} (fresh row {i})")
    return float(row_diff.max())


def _machine_inputs(n, k, dim, cost) -> tuple:
    """The checked sizes of :func:`window_machine` and the fixed fresh rows ``(k, dim)`` and
    prior sample ``(n, dim)`` (or None) its split value is checked at."""
    from ._validate import check_int
    n = check_int("n", n, low=2)
    k = check_int("k", k, low=1, high=n, high_name="n")
    dim = check_int("dim", dim, low=1)
    if cost is None:
        return n, k, dim, None, None
    if not getattr(cost, "supports_split", False):
        raise ValueError(f"cost must support split evaluation (cost.supports_split) for the "
                         f"window machine to check its cache; got cost={cost!r:.80}, which "
                         f"does not: pass cost=None to check the window alone")
    g = torch.Generator().manual_seed(0)
    fresh_z = torch.randn(k, dim, generator=g, dtype=torch.float64)
    prior_y = torch.randn(n, dim, generator=g, dtype=torch.float64) if cost.needs_prior else None
    return n, k, dim, fresh_z, prior_y


def window_machine(n: int, k: int, dim: int, *, cost=None, atol: float = 1e-10):
    """A hypothesis ``RuleBasedStateMachine`` class driving ``LatentWindow(n, k, dim)``
    (float64) against a list model: after every push the window holds the ``n - k`` newest
    rows, oldest first, detached. With ``cost`` (a ``BatchCost`` with split support), its
    incrementally updated cache must also match a cache computed from scratch (sums and
    key), and the split value with that cache, ``cost.split(window, Z, y, cache=cache)``,
    must match the full one, ``cost(cat([window, Z]), y)``, for fixed fresh rows ``Z``
    ``(k, dim)`` and (costs with ``needs_prior``) a fixed prior sample ``y`` ``(n, dim)``, both
    drawn once from ``torch.Generator().manual_seed(0)``. Values agree within
    ``atol * (1 + |reference|)`` (the registered costs, with rows bounded by 3, agree to
    1e-14 after slides of up to ``ceil((n - k) / k)`` incremental updates).
    Use as ``TestX = window_machine(8, 3, 2).TestCase``."""
    n, k, dim, fresh_z, prior_y = _machine_inputs(n, k, dim, cost)
    rows = st.lists(st.lists(st.floats(-_BOUND, _BOUND, allow_nan=False, width=64),
                             min_size=dim, max_size=dim), min_size=k, max_size=k)

    class WindowMachine(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            self.window = LatentWindow(n, k, dim, dtype=torch.float64)
            self.model: list = []
            self.cache = None

        @rule(init=st.lists(st.lists(st.floats(-_BOUND, _BOUND, allow_nan=False, width=64),
                                     min_size=dim, max_size=dim), min_size=n - k, max_size=n - k))
        def fill(self, init):
            self.window.fill(_tensor(init).reshape(n - k, dim))
            self.model = [list(r) for r in init]
            if cost is not None:
                self.cache = cost.init_cache(self.window.buffer, n=n)

        @rule(new=rows)
        def push(self, new):
            if not self.window.is_full:
                return
            t = _tensor(new).reshape(k, dim).requires_grad_(True) * 1.0
            if cost is not None and self.window.size > 0:
                r = min(k, self.window.size)
                self.cache = cost.update_cache(self.cache, self.window.buffer,
                                               self.window.next_slots(), t[-r:].detach())
            self.window.push(t)
            self.model = (self.model + [list(r) for r in new])[-(n - k):] if n > k else []

        @invariant()
        def matches_model(self):
            if not self.window.is_full:
                return
            got = self.window.ordered()
            assert got.grad_fn is None and not got.requires_grad, "window retains autograd state"
            want = _tensor(self.model).reshape(n - k, dim)
            assert torch.equal(got, want), f"window {got.tolist()} != model {self.model}"

        @invariant()
        def cache_matches(self):
            if cost is None or not self.window.is_full or self.window.size == 0:
                return
            fresh_cache = cost.init_cache(self.window.buffer, n=n)
            for a, b in zip(self.cache[:2], fresh_cache[:2]):
                assert abs(float(a) - float(b)) <= atol * (1 + abs(float(b))), \
                    f"incremental cache {float(a)} != recomputed {float(b)}"
            assert self.cache.key == fresh_cache.key, \
                f"incremental cache key {self.cache.key} != recomputed {fresh_cache.key}"

        @invariant()
        def split_matches_full(self):
            if cost is None or not self.window.is_full:
                return
            H = self.window.buffer
            try:
                got = float(cost.split(H, fresh_z, prior_y, cache=self.cache))
            except ValueError as exc:           # e.g. a stale cache, refused by split
                raise AssertionError(f"split refused the window's cache: {exc}") from exc
            want = float(cost(torch.cat([H, fresh_z]), prior_y))
            assert abs(got - want) <= atol * (1 + abs(want)), \
                f"split value {got!r} with the window's cache != full value {want!r}"

    return WindowMachine
