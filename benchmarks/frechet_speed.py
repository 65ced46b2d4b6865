#!/usr/bin/env python3
"""The Frechet distance's algebra (docs/evaluation.md, "The Frechet distance's algebra"): the nuclear norm of the
centred cross-Gram matrix (`scdpo.eval.frechet.frechet_distance`, since 2026-12-06) against the two D x D
eigendecompositions it replaced (`emojiworld_throughput.eigh_frechet`, kept as the throughput benchmark's
yardstick), on one BLAS thread, at the eval's sizes and others; then both against a 40-digit reference of the same
trace (mpmath: the singular values of the centred cross-Gram matrix, which the identity makes exact).

    python benchmarks/frechet_speed.py            # the 2-core CPU: about 30 s
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from emojiworld_throughput import eigh_frechet  # noqa: E402 (benchmarks/ is on sys.path)

from scdpo.eval.frechet import frechet_distance  # noqa: E402


def features(n: int, d: int, seed: int, shift: float) -> np.ndarray:
    rng = np.random.default_rng(seed)  # skewed, correlated, like pooled ReLU6 features
    return np.clip(rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * 0.05 + shift, 0, 6)


def best_of(fn, repeats: int = 3) -> tuple[float, float]:
    times, value = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
    return value, min(times)


def exact_fd(a: np.ndarray, b: np.ndarray, digits: int = 40) -> float:
    import mpmath

    mpmath.mp.dps = digits
    ma, mb = mpmath.matrix(a.tolist()), mpmath.matrix(b.tolist())

    def centred(m):
        mean = [mpmath.fsum(m[i, j] for i in range(m.rows)) / m.rows for j in range(m.cols)]
        return mpmath.matrix([[m[i, j] - mean[j] for j in range(m.cols)] for i in range(m.rows)]), mean

    ca, mu_a = centred(ma)
    cb, mu_b = centred(mb)
    cross = mpmath.fsum(mpmath.svd_r(ca * cb.T, compute_uv=False)) / mpmath.sqrt((ma.rows - 1) * (mb.rows - 1))
    tr = lambda c: mpmath.fsum(x ** 2 for x in c) / (c.rows - 1)  # noqa: E731
    return float(mpmath.fsum((x - y) ** 2 for x, y in zip(mu_a, mu_b)) + tr(ca) + tr(cb) - 2 * cross)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="*", default=["400,400,1280", "2000,400,1280", "3000,3000,1280"],
                   help="N_a,N_b,D per row (the eval's suite: about 400 images against 400 renders, D = 1280)")
    args = p.parse_args(argv)
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    print("| N_a | N_b | D | eigendecompositions s | nuclear norm s | x | relative difference |")
    print("|---|---|---|---|---|---|---|")
    with threadpool_limits(1):
        for spec in args.sizes:
            na, nb, d = (int(x) for x in spec.split(","))
            a, b = features(na, d, 0, 0.3), features(nb, d, 1, 0.35)
            old, t_old = best_of(lambda: eigh_frechet(a, b))
            new, t_new = best_of(lambda: frechet_distance(a, b))
            print(f"| {na} | {nb} | {d} | {t_old:.3f} | {t_new:.3f} | {t_old / t_new:.1f}x | {abs(new - old) / old:.1e} |")
    a, b = features(30, 300, 2, 0.3), features(25, 300, 3, 0.35)
    exact = exact_fd(a, b)
    print(f"\nagainst 40 digits (30 and 25 samples, D = 300; exact {exact:.12g}): nuclear norm "
          f"{abs(frechet_distance(a, b) - exact) / exact:.1e} relative, eigendecompositions "
          f"{abs(eigh_frechet(a, b) - exact) / exact:.1e}")


if __name__ == "__main__":
    main()
