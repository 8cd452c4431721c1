# SPDX-License-Identifier: Apache-2.0
"""
float32 log-likelihoods on the ill-conditioned problems of tests/test_sqrt_kalman.py,
against a 50-digit (mpmath) Kalman filter: the parallel scan computed in float32
(``lgssm_log_prob(compute_dtype=None)``) beside what ``LinearGaussianSSM(compute_dtype=None)``
computes (the square-root filter). Prints the README's table. Run by hand:

    python benchmarks/float32_accuracy.py
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

from lgssm_reference import exact_log_prob  # noqa: E402
from test_sqrt_kalman import ILL_CONDITIONED, ill_conditioned  # noqa: E402

from pyro_kvae.distributions import LinearGaussianSSM  # noqa: E402
from pyro_kvae.ops.lgssm import lgssm_log_prob  # noqa: E402


def main():
    print("| problem (T=50 unless stated) | exact | float32 parallel scan | float32 square-root (rel. err.) |")
    print("|---|---|---|---|")
    for name, kw in ILL_CONDITIONED.items():
        a, p = ill_conditioned(**kw)
        exact = exact_log_prob(a, **p)
        scan = lgssm_log_prob(a.float(), compute_dtype=None, **p).item()
        sqrt = LinearGaussianSSM(**p, compute_dtype=None).log_prob(a.float()).item()
        print(f"| {name} | {exact:.3f} | {scan:.1f} | {sqrt:.3f} ({abs(sqrt - exact) / abs(exact):.0e}) |")


if __name__ == "__main__":
    main()
