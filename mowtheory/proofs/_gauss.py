"""Exact Gaussian expectations of polynomials (Isserlis/Wick), in a sympy polynomial ring.

A :class:`GaussModel` is a polynomial ring over the rationals whose generators are

- free symbols (parameters θ, their frozen copies, coefficients of F and G, s2, ...), and
- data variables: ``count`` independent Gaussian vectors ``N(0, cov)`` of dimension ``dim``
  per block (``x0_0, x0_1, x1_0, ...`` for block ``"x"``).

:meth:`GaussModel.E` takes the expectation over all data variables exactly: the expectation of a
monomial factorises over the independent vectors, and the moment of one vector is computed by
Isserlis' theorem, E[x_a · rest] = Σ_b cov[a][b] · E[rest without one x_b] (a recursion over
exponent vectors, memoised). Covariance entries may be numbers or free symbols of the ring
(for example ``s2``), so the results are polynomials in the free symbols with exact
rational coefficients.

Ring arithmetic (``sympy.polys.rings``) is used instead of ``sympy.Expr`` because it is
one to two orders of magnitude faster and an identity "difference == 0" is then an exact
polynomial identity, not the outcome of a heuristic ``simplify``.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Iterable, Sequence

from sympy import QQ, Rational
from sympy.polys.rings import PolyRing


class GaussModel:
    """Polynomial ring with Gaussian data variables and exact expectations.

    Args:
        symbols: names of the free (non-random) generators.
        blocks: ``(prefix, count, dim, cov)`` tuples; ``cov`` is a ``dim × dim`` nested list of
            numbers (int, Fraction, sympy Rational) or names of free symbols. Block ``prefix``
            gets the variables ``f"{prefix}{i}_{a}"`` for example ``i < count`` and coordinate
            ``a < dim``.
    """

    def __init__(self, symbols: Sequence[str], blocks: Iterable[tuple]):
        blocks = list(blocks)
        names = list(symbols)
        self._block_vars: dict[str, list[list[int]]] = {}
        for prefix, count, dim, _ in blocks:
            idx = []
            for i in range(count):
                row = []
                for a in range(dim):
                    row.append(len(names))
                    names.append(f"{prefix}{i}_{a}")
                idx.append(row)
            self._block_vars[prefix] = idx
        if len(set(names)) != len(names):
            raise ValueError(f"generator names must be distinct; got {names}")
        self.R = PolyRing(names, QQ)
        self.names = names
        self._index = {nm: j for j, nm in enumerate(names)}
        # independent groups: (block prefix, generator indices of one example)
        self._groups: list[tuple[str, tuple[int, ...]]] = []
        self._cov: dict[str, list[list]] = {}
        self._data_idx: list[int] = []
        for prefix, count, dim, cov in blocks:
            if len(cov) != dim or any(len(r) != dim for r in cov):
                raise ValueError(f"cov of block {prefix!r} must be {dim}x{dim}; got {cov}")
            self._cov[prefix] = [[self.const(c) for c in r] for r in cov]
            for row in self._block_vars[prefix]:
                self._groups.append((prefix, tuple(row)))
                self._data_idx.extend(row)
        self._moments: dict[tuple, object] = {}

    # ---------------------------------------------------------------- construction helpers
    def const(self, c):
        """A ring element from a number, a Fraction, a sympy Rational or a free-symbol name."""
        if isinstance(c, str):
            return self.sym(c)
        if isinstance(c, Fraction):
            return self.R(QQ(c.numerator, c.denominator))
        if isinstance(c, Rational):
            return self.R(QQ(int(c.p), int(c.q)))
        if hasattr(c, "ring") and c.ring == self.R:
            return c
        return self.R(QQ(c) if isinstance(c, int) else QQ(*Fraction(c).as_integer_ratio()))

    def sym(self, name: str):
        """The generator called ``name``."""
        return self.R.gens[self._index[name]]

    def syms(self, names: Iterable[str]) -> list:
        return [self.sym(nm) for nm in names]

    def data(self, prefix: str) -> list[list]:
        """The data variables of block ``prefix`` as ``[example][coordinate]``."""
        return [[self.R.gens[j] for j in row] for row in self._block_vars[prefix]]

    # ---------------------------------------------------------------- expectation
    def _moment(self, prefix: str, e: tuple[int, ...]):
        key = (prefix, e)
        got = self._moments.get(key)
        if got is not None:
            return got
        R = self.R
        if not any(e):
            res = R.one
        elif sum(e) % 2:
            res = R.zero
        else:
            cov = self._cov[prefix]
            a = next(j for j, p in enumerate(e) if p)
            e1 = list(e)
            e1[a] -= 1
            res = R.zero
            for b, p in enumerate(e1):
                if p and cov[a][b]:
                    e2 = list(e1)
                    e2[b] -= 1
                    res += p * cov[a][b] * self._moment(prefix, tuple(e2))
        self._moments[key] = res
        return res

    def E(self, f):
        """Exact expectation of the polynomial ``f`` over all data variables."""
        R = self.R
        f = self.const(f) if not (hasattr(f, "ring") and f.ring == R) else f
        groups = self._groups
        data_idx = self._data_idx
        acc: dict[tuple, dict] = {}
        for monom, coeff in f.items():
            key = []
            odd = False
            for prefix, idxs in groups:
                e = tuple(monom[j] for j in idxs)
                if any(e):
                    if sum(e) % 2:
                        odd = True
                        break
                    key.append((prefix, e))
            if odd:
                continue
            rest = list(monom)
            for j in data_idx:
                rest[j] = 0
            rest = tuple(rest)
            d = acc.setdefault(tuple(key), {})
            d[rest] = d.get(rest, QQ(0)) + coeff
        out = R.zero
        for key, d in acc.items():
            m = R.one
            for prefix, e in key:
                m = m * self._moment(prefix, e)
                if not m:
                    break
            if m:
                out += m * R.from_dict({mo: c for mo, c in d.items() if c})
        return out

    # ---------------------------------------------------------------- conversion
    def to_expr(self, f):
        """The sympy expression of a ring element."""
        return f.as_expr()


def rational(x) -> Fraction:
    """An exact Fraction from an int, a Fraction, a sympy Rational, a string or a float
    (floats are taken at their exact binary value)."""
    if isinstance(x, Fraction):
        return x
    if isinstance(x, Rational):
        return Fraction(int(x.p), int(x.q))
    if isinstance(x, str):
        return Fraction(x)
    return Fraction(x)
