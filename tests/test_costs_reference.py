"""Each batch cost against independent float64 references: plain Python double loops
(agreement to 1e-10), GeomLoss ``SamplesLoss`` and POT ``ot.sliced_wasserstein_distance``."""
from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from mowtheory import costs as C

TOL = 1e-10
FLOATS = st.floats(-4.0, 4.0, allow_nan=False, allow_infinity=False, width=64)


def close(a, b, tol=TOL):
    a, b = float(a), float(b)
    return abs(a - b) <= tol * max(1.0, abs(b))


@st.composite
def pair_samples(draw, min_n=1, max_n=8, min_d=1, max_d=5, same_n=False):
    n = draw(st.integers(min_n, max_n))
    n_y = n if same_n else draw(st.integers(min_n, max_n))
    d = draw(st.integers(min_d, max_d))
    z = draw(hnp.arrays(np.float64, (n, d), elements=FLOATS))
    y = draw(hnp.arrays(np.float64, (n_y, d), elements=FLOATS))
    return z.tolist(), y.tolist()


def t(rows):
    return torch.tensor(rows, dtype=torch.float64)


# --------------------------------------------------------------- plain double loops
def d2(a, b):
    return math.fsum((ai - bi) ** 2 for ai, bi in zip(a, b))


def ref_cw(z, gamma=None):
    n, dim = len(z), len(z[0])
    g = (4 / (3 * n)) ** 0.4 if gamma is None else gamma
    k = 1 / (2 * dim - 3)
    pairs = math.fsum((g + k * d2(a, b)) ** -0.5 for a in z for b in z)
    unary = math.fsum((g + 0.5 + k * d2(a, [0.0] * dim)) ** -0.5 for a in z)
    return 1 / math.sqrt(1 + g) + pairs / n**2 - 2 * unary / n


def ref_mmd(z, y, kernel="imq", scales=(0.1, 0.2, 0.5, 1, 2, 5, 10), sigma2=1.0):
    n, m, dim = len(z), len(y), len(z[0])
    total = []
    for s in scales:
        c = 2 * dim * sigma2 * s
        k = (lambda a, b: c / (c + d2(a, b))) if kernel == "imq" else (
            lambda a, b: math.exp(-d2(a, b) / c))
        zz = math.fsum(k(z[i], z[j]) for i in range(n) for j in range(n) if i != j)
        yy = math.fsum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
        zy = math.fsum(k(a, b) for a in z for b in y)
        total.append(zz / (n * (n - 1)) + yy / (m * (m - 1)) - 2 * zy / (n * m))
    return math.fsum(total)


def ref_sw(z, y, dirs):
    out = []
    for th in dirs:
        pz = sorted(math.fsum(a * b for a, b in zip(p, th)) for p in z)
        py = sorted(math.fsum(a * b for a, b in zip(p, th)) for p in y)
        out.extend((a - b) ** 2 for a, b in zip(pz, py))
    return math.fsum(out) / len(out)


def ref_energy(z, y):
    dist = lambda a, b: math.sqrt(d2(a, b))
    n, m = len(z), len(y)
    zy = math.fsum(dist(a, b) for a in z for b in y) / (n * m)
    zz = math.fsum(dist(a, b) for a in z for b in z) / n**2
    yy = math.fsum(dist(a, b) for a in y for b in y) / m**2
    return 2 * zy - zz - yy


def ref_gmmn(z, y, bandwidths=(1, 2, 4, 8, 16)):
    k = lambda a, b: math.fsum(math.exp(-d2(a, b) / (2 * s * s)) for s in bandwidths)
    n, m = len(z), len(y)
    zz = math.fsum(k(a, b) for a in z for b in z) / n**2
    yy = math.fsum(k(a, b) for a in y for b in y) / m**2
    zy = math.fsum(k(a, b) for a in z for b in y) / (n * m)
    return zz + yy - 2 * zy


def ref_pullaway(z, eps=1e-12):
    # the documented scale-invariant form: rows divided by their largest |entry| (zero rows,
    # and rows of subnormal numbers, whose reciprocal overflows, stay zero), eps relative to
    # that scale
    n = len(z)
    def unit(a):
        m = max(abs(x) for x in a)
        return [x / m for x in a] if m >= sys.float_info.min else [0.0 for _ in a]
    def cos2(a, b):
        a, b = unit(a), unit(b)
        dot = math.fsum(x * w for x, w in zip(a, b))
        return dot**2 / ((math.fsum(x * x for x in a) + eps) * (math.fsum(w * w for w in b) + eps))
    return math.fsum(cos2(z[i], z[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))


# --------------------------------------------------------------- double-loop agreement
@settings(deadline=None)
@given(pair_samples(min_n=2, min_d=2), st.sampled_from([None, 0.3, 2.0]))
def test_cramer_wold_double_loop(zy, gamma):
    z, _ = zy
    ref = ref_cw(z, gamma)
    assert close(C.cramer_wold(t(z), gamma=gamma), ref)
    assert close(C.log_cramer_wold(t(z), gamma=gamma), math.log(ref))
    assert close(C.get("cw", gamma=gamma)(t(z)), ref)


@settings(deadline=None)
@given(pair_samples(min_n=2), st.sampled_from(["imq", "rbf"]),
       st.sampled_from([(0.1, 0.2, 0.5, 1, 2, 5, 10), (1.0,), (0.3, 7.0)]),
       st.sampled_from([1.0, 0.5, 2.0]))
def test_mmd_double_loop(zy, kernel, scales, sigma2):
    z, y = zy
    ref = ref_mmd(z, y, kernel, scales, sigma2)
    assert close(C.mmd(t(z), t(y), kernel=kernel, scales=scales, sigma2=sigma2), ref)
    assert close(C.get("wae", kernel=kernel, scales=scales, sigma2=sigma2)(t(z), t(y)), ref)


@settings(deadline=None)
@given(pair_samples(same_n=True), st.integers(1, 6), st.integers(0, 2**32 - 1))
def test_sliced_wasserstein_double_loop(zy, n_dirs, seed):
    z, y = zy
    g = torch.Generator().manual_seed(seed)
    dirs = C.random_directions(n_dirs, len(z[0]), generator=g, dtype=torch.float64)
    ref = ref_sw(z, y, dirs.tolist())
    assert close(C.sliced_wasserstein(t(z), t(y), directions=dirs), ref)
    # drawn directions: the same generator state gives the same directions
    drawn = C.sliced_wasserstein(t(z), t(y), n_directions=n_dirs,
                                 generator=torch.Generator().manual_seed(seed))
    assert close(drawn, ref)


@settings(deadline=None)
@given(pair_samples())
def test_energy_double_loop(zy):
    z, y = zy
    assert close(C.energy_distance(t(z), t(y)), ref_energy(z, y))


@settings(deadline=None)
@given(pair_samples(), st.sampled_from([(1, 2, 4, 8, 16), (0.5,), (1.5, 3.0)]))
def test_gmmn_double_loop(zy, bandwidths):
    z, y = zy
    ref = ref_gmmn(z, y, bandwidths)
    assert close(C.gmmn_mmd(t(z), t(y), bandwidths=bandwidths), ref)
    root = C.gmmn_mmd(t(z), t(y), bandwidths=bandwidths, sqrt=True)
    assert close(root**2, ref)  # the root itself is ill-conditioned where MMD^2 ~ 0
    if ref > 1e-6:
        assert close(root, math.sqrt(ref))


@settings(deadline=None)
@given(pair_samples(min_n=2))
def test_pullaway_double_loop(zy):
    z, _ = zy
    assert close(C.pullaway(t(z)), ref_pullaway(z))
    assert close(C.get("pullaway")(t(z)), ref_pullaway(z))


def test_pullaway_subnormal_rows_count_as_zero_and_tiny_normal_rows_do_not():
    # hypothesis found 2.2e-311 (subnormal): the documented contract treats such a row as zero
    # (1 / its scale overflows); the smallest normal rows are still scale-invariant
    for m, want in [(2.225073858507e-311, 0.0), (sys.float_info.min, 1.0), (1e-300, 1.0)]:
        z = [[m], [m]]
        assert close(C.pullaway(t(z)), want) and close(ref_pullaway(z), want), m


# --------------------------------------------------------------- GeomLoss and POT
# Optional packages: only the tests below that compare against them are skipped without them
# (the double-loop references above always run).
@pytest.fixture
def geomloss():
    return pytest.importorskip("geomloss")


@pytest.fixture
def ot():
    return pytest.importorskip("ot")


def _normal_pair(seed, n, m, d):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g, dtype=torch.float64),
            1.3 * torch.randn(m, d, generator=g, dtype=torch.float64) + 0.2)


@pytest.mark.parametrize("seed,n,m,d", [(0, 7, 7, 3), (1, 5, 9, 2), (2, 12, 6, 6)])
def test_gmmn_vs_geomloss_gaussian(geomloss, seed, n, m, d):
    z, y = _normal_pair(seed, n, m, d)
    bandwidths = (1.0, 2.0, 4.0, 8.0, 16.0)
    # SamplesLoss("gaussian", blur=s) = 1/2 * [V-statistic MMD^2 with exp(-|a-b|^2 / (2 s^2))]
    # (uniform weights 1/n, diagonal included): gmmn_mmd = sum_s 2 * SamplesLoss_s.
    ref = sum(2 * geomloss.SamplesLoss("gaussian", blur=s, backend="tensorized")(z, y)
              for s in bandwidths)
    assert close(C.gmmn_mmd(z, y, bandwidths=bandwidths), ref, 1e-9)


@pytest.mark.parametrize("seed,n,m,d", [(0, 7, 7, 3), (1, 5, 9, 2), (2, 12, 6, 6)])
def test_energy_vs_geomloss(geomloss, seed, n, m, d):
    z, y = _normal_pair(seed, n, m, d)
    # SamplesLoss("energy") = 1/2 * sum a_i a_j (-d_ij) + 1/2 * sum b b (-d) - sum a b (-d),
    # i.e. 1/2 * energy distance, except that GeomLoss clamps d^2 >= 1e-8, so each diagonal
    # d_ii counts as 1e-4: it adds -1/2 * 1e-4 * (1/n + 1/m). Hence
    # energy = 2 * SamplesLoss + 1e-4 * (1/n + 1/m)  (no off-diagonal pair is that close here).
    loss = geomloss.SamplesLoss("energy", backend="tensorized")(z, y)
    ref = 2 * loss + 1e-4 * (1 / n + 1 / m)
    assert close(C.energy_distance(z, y), ref, 1e-9)


@pytest.mark.parametrize("seed,n,m,d", [(0, 7, 7, 3), (1, 5, 9, 2), (2, 12, 6, 6)])
def test_mmd_imq_vs_geomloss_custom_kernel(geomloss, seed, n, m, d):
    z, y = _normal_pair(seed, n, m, d)
    scales = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)

    def imq(a, b, blur=None, use_keops=False, ranges=None):  # sum_s C / (C + |a - b|^2)
        sq = (a.unsqueeze(-2) - b.unsqueeze(-3)).square().sum(-1)
        return sum(2 * d * s / (2 * d * s + sq) for s in scales)

    loss = geomloss.SamplesLoss("gaussian", kernel=imq, backend="tensorized")
    a = torch.full((n,), 1 / n, dtype=torch.float64)
    b = torch.full((m,), 1 / m, dtype=torch.float64)
    # GeomLoss returns 1/2 V_zz + 1/2 V_yy - V_zy (V: weighted V-statistic block means).
    # Zero weights isolate the blocks: V_zz = 2 L(a, z, 0, y), V_yy = 2 L(0, z, b, y),
    # V_zy = (V_zz + V_yy) / 2 - L(a, z, b, y). The U-statistic of mmd drops the diagonal
    # k(a, a) = len(scales): U_zz = (n V_zz - len(scales)) / (n - 1), same for y, so
    # mmd = U_zz + U_yy - 2 V_zy.
    v_zz = 2 * loss(a, z, torch.zeros_like(b), y)
    v_yy = 2 * loss(torch.zeros_like(a), z, b, y)
    v_zy = (v_zz + v_yy) / 2 - loss(a, z, b, y)
    s = len(scales)
    ref = (n * v_zz - s) / (n - 1) + (m * v_yy - s) / (m - 1) - 2 * v_zy
    assert close(C.mmd(z, y, scales=scales), ref, 1e-9)


@pytest.mark.parametrize("seed,n,d,L", [(0, 7, 3, 5), (1, 11, 2, 20), (2, 6, 6, 1)])
def test_sliced_wasserstein_vs_pot(ot, seed, n, d, L):
    z, y = _normal_pair(seed, n, n, d)
    dirs = C.random_directions(L, d, generator=torch.Generator().manual_seed(seed + 10),
                               dtype=torch.float64)
    # POT returns (mean_l W_2^2(projection l))^(1/2) with uniform weights 1/n and
    # projections of shape (d, L); our value is the mean without the root: square it.
    ref = ot.sliced_wasserstein_distance(z.numpy(), y.numpy(), projections=dirs.T.numpy(),
                                         p=2) ** 2
    assert close(C.sliced_wasserstein(z, y, directions=dirs), ref, 1e-10)
