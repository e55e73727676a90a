#!/usr/bin/env python3
"""Fits the polynomial coefficients of include/aligngpt/ops/log.h and ops/erf.h.

    /usr/bin/python3 tests/tools/fit_mathf.py        # numpy + mpmath (Debian python3-numpy, python3-mpmath)

Each fit is a weighted minimax polynomial: Lawson's iteratively reweighted least squares on a dense
Chebyshev grid, the function in 50-digit mpmath. The coefficients are rounded to float one at a
time, lowest degree first, and the rest refitted after each rounding (they absorb its error). It
prints them as C++ hex floats with the fit's error; tests/test_mathf.cpp measures what is left after
float evaluation. Tests and CI never run this.
"""
import mpmath as mp
import numpy as np

mp.mp.dps = 50


def lawson(basis, target, weight, xs, iters=4000):
    """c minimising max_x weight(x) |sum_k c_k basis_k(x) - target(x)| on the points xs."""
    A = np.array([[float(b(x)) for b in basis] for x in xs])
    t = np.array([float(target(x)) for x in xs])
    w = np.array([float(weight(x)) for x in xs])
    A, t = A * w[:, None], t * w
    u = np.full(len(xs), 1.0 / len(xs))
    c = None
    for _ in range(iters):
        s = np.sqrt(u)
        c, *_ = np.linalg.lstsq(A * s[:, None], t * s, rcond=None)
        u = u * np.abs(A @ c - t)
        u /= u.sum()
    return c


def lawson_float(basis, target, weight, xs):
    """lawson with float coefficients: round the lowest one, refit the others, and so on."""
    fixed = []
    for _ in basis:
        def rest(x, fixed=tuple(fixed)):
            return target(x) - sum(mp.mpf(float(c)) * basis[k](x) for k, c in enumerate(fixed))

        fixed.append(np.float32(lawson(basis[len(fixed):], rest, weight, xs)[0]))
    worst = max(abs(weight(x) * (sum(mp.mpf(float(c)) * b(x) for c, b in zip(fixed, basis)) - target(x))) for x in xs)
    return fixed, float(worst)


def chebgrid(a, b, n):
    k = np.arange(n)
    pts = (a + b) / 2 + (b - a) / 2 * np.cos(np.pi * (k + 0.5) / n)
    return [mp.mpf(float(v)) for v in np.sort(pts)] + [mp.mpf(a), mp.mpf(b)]


def hexf(v):
    m, e = float(v).hex().split("p")
    return f"{m.rstrip('0').rstrip('.')}p{e}f"


def show(title, names, c, err):
    print(f"// {title}; max weighted error {err:.3e}")
    print(", ".join(f"{n} = {hexf(v)}" for n, v in zip(names, c)))


def powers(lo, hi):
    return [lambda x, k=k: x ** k for k in range(lo, hi + 1)]


def fit_log():
    # log(1+f) = 2 atanh(s), s = f/(2+f); with z = s^2:  2 atanh(s) = 2s + s R(z),
    # R(z) = 2 (z/3 + z^2/5 + z^3/7 + ...). |s| <= (sqrt2 - 1)/(sqrt2 + 1), so z <= 17 - 12 sqrt2.
    # log's error from R is s dR, against log ~ 2s: relative dR / 2, so unweighted.
    def R(z):
        if z == 0:
            return mp.mpf(0)
        s = mp.sqrt(z)
        return (2 * mp.atanh(s) - 2 * s) / s

    c, err = lawson_float(powers(1, 4), R, lambda z: 1, chebgrid(0.0, float(17 - 12 * mp.sqrt(2)), 400))
    show("log: R(z) = z (c0 + c1 z + c2 z^2 + c3 z^3), z in [0, 17 - 12 sqrt2]", ["c0", "c1", "c2", "c3"], c, err)


def fit_erf_small(b, deg):
    # erf(x) = x + x P(x^2) for |x| < b: P(t) = erf(sqrt t)/sqrt t - 1; erf's relative error ~ |dP| / 1.13.
    def P(t):
        if t == 0:
            return 2 / mp.sqrt(mp.pi) - 1
        r = mp.sqrt(t)
        return mp.erf(r) / r - 1

    c, err = lawson_float(powers(0, deg), P, lambda t: 1, chebgrid(0.0, b * b, 400))
    show(f"erf: P(t), t = x^2 in [0, {b}^2]", [f"p{k}" for k in range(deg + 1)], c, err)


def fit_erf_large(a, b, deg):
    # erf(x) = 1 - e^(-x^2) Q(x - a) for a <= x < b, Q ~ erfcx = e^(x^2) erfc(x). erf's absolute
    # error is e^(-x^2) |dQ|: that is the weight.
    def Q(u):
        x = u + a
        return mp.exp(x * x) * mp.erfc(x)

    c, err = lawson_float(powers(0, deg), Q, lambda u: mp.exp(-((u + a) ** 2)), chebgrid(0.0, b - a, 600))
    show(f"erf: Q(u), u = x - {a} in [0, {b - a}]", [f"q{k}" for k in range(deg + 1)], c, err)


if __name__ == "__main__":
    fit_log()
    fit_erf_small(0.90625, 6)
    fit_erf_large(0.90625, 4.0, 9)
