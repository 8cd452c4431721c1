# SPDX-License-Identifier: Apache-2.0
"""
Times LGSSM inference: log-prob + backward, smoothing, and posterior sampling.

Compares pyro_kvae's parallel scan (float64 inside, and float32 inside), its
sequential covariance-form filter/smoother, its square-root filter/smoother in
float32 (what ``LinearGaussianSSM(compute_dtype=None)`` runs on float32 inputs),
and pyro.distributions.GaussianHMM (float32), at (batch, T, dim_z, dim_a) =
(64,20,4,2), (64,100,8,4), (256,500,16,8). Inputs are float32 throughout. Run by hand:

    python benchmarks/bench_kalman.py [--repeat 5] [--threads 2] [--device cpu] [--sizes 2]

Operator calls (each a kernel launch on a GPU) and time of log-prob + backward, float64 inside,
the sequential filter against the parallel scan, at (batch, dim_z, dim_a) = (32, 4, 2) for
several ``T``: where ``LinearGaussianSSM`` switches from the one to the other::

    python benchmarks/bench_kalman.py --ops [--device cuda]
"""

import argparse
import importlib.util
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pyro_kvae.distributions import LinearGaussianSSM  # noqa: E402
from pyro_kvae.ops.kalman import backward_conditional, kalman_filter, kalman_smoother
from pyro_kvae.ops.lgssm import lgssm_log_prob, lgssm_posterior_rsample
from pyro_kvae.ops.sqrt_kalman import sqrt_kalman_filter, sqrt_posterior_rsample, sqrt_rts_smoother

SIZES = [(64, 20, 4, 2), (64, 100, 8, 4), (256, 500, 16, 8)]


def problem(batch, T, dz, da, device):
    g = torch.Generator().manual_seed(0)
    A = torch.eye(dz) + 0.05 * torch.randn(batch, T, dz, dz, generator=g) / dz**0.5
    p = dict(
        A=A,
        C=torch.randn(batch, T, da, dz, generator=g) / dz**0.5,
        Q=0.08 * torch.eye(dz),
        R=0.03 * torch.eye(da),
        mu0=torch.zeros(dz),
        Sigma0=20 * torch.eye(dz),
    )
    a = torch.randn(batch, T, da, generator=g)
    return a.to(device), {k: v.to(device) for k, v in p.items()}


def gaussian_hmm(A, C, Q, R, mu0, Sigma0):
    """The exact GaussianHMM for the LGSSM."""
    return LinearGaussianSSM(mu0, Sigma0, A, Q, C, R).to_gaussian_hmm()


def sequential_ffbs(a, p):
    """Plain sequential forward-filter backward-sample (one joint draw)."""
    f = kalman_filter(a, **p)
    z = torch.distributions.MultivariateNormal(f.filt_mean[:, -1], f.filt_cov[:, -1]).rsample()
    out = [z]
    for t in range(a.shape[1] - 2, -1, -1):
        mean, cov = backward_conditional(
            f.filt_mean[:, t], f.filt_cov[:, t], f.pred_mean[:, t + 1], f.pred_cov[:, t + 1], p["A"][:, t + 1], z
        )
        z = torch.distributions.MultivariateNormal(mean, cov).rsample()
        out.append(z)
    return torch.stack(out[::-1], 1)


def timeit(fn, repeat, device):
    fn()  # warm up
    times = []
    for _ in range(repeat):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return 1e3 * sorted(times)[len(times) // 2]


def log_prob_backward(method, a, p):
    q = {k: v.clone().requires_grad_() if k in ("A", "C") else v for k, v in p.items()}
    a = a.clone().requires_grad_()

    def fn():
        if method == "parallel f64":
            lp = lgssm_log_prob(a, **q)
        elif method == "parallel f32":
            lp = lgssm_log_prob(a, compute_dtype=torch.float32, **q)
        elif method == "sequential":
            lp = kalman_filter(a, **q).log_prob
        elif method == "sequential f64":  # as LinearGaussianSSM runs it: cast up, filter, cast back
            lp = kalman_filter(a.double(), **{k: v.double() for k, v in q.items()}).log_prob.float()
        elif method == "sqrt f32":
            lp = sqrt_kalman_filter(a, **q).log_prob
        else:
            lp = gaussian_hmm(**q).log_prob(a)
        lp.sum().backward()

    return fn


def smoothing(method, a, p):
    def fn():
        with torch.no_grad():
            if method == "sequential":
                kalman_smoother(a, **p)
            elif method == "sqrt f32":
                sqrt_rts_smoother(sqrt_kalman_filter(a, **p), p["A"], p["Q"])
            elif method == "parallel f64":  # means only, via zero noise
                lgssm_posterior_rsample(a, noise=torch.zeros(a.shape[:2] + (p["A"].shape[-1],), device=a.device), **p)
            else:
                return None

    return None if method not in ("sequential", "parallel f64", "sqrt f32") else fn


def sampling(method, a, p):
    def fn():
        with torch.no_grad():
            if method == "parallel f64":
                lgssm_posterior_rsample(a, **p)
            elif method == "parallel f32":
                lgssm_posterior_rsample(a, compute_dtype=torch.float32, **p)
            elif method == "sequential":
                sequential_ffbs(a, p)
            elif method == "sqrt f32":
                f = sqrt_kalman_filter(a, **p)
                sqrt_posterior_rsample(f, sqrt_rts_smoother(f, p["A"], p["Q"]), torch.randn_like(f.filt_mean))
            else:
                gaussian_hmm(**p).rsample_posterior(a)

    return fn


METHODS = ["parallel f64", "parallel f32", "sequential", "sqrt f32", "GaussianHMM f32"]


def ops(args):
    from bench_training import count_ops

    def calls(fn):
        fn()  # warm up, as timeit does
        return count_ops(fn)[0]

    print(f"torch {torch.__version__}, device {args.device}, log_prob + backward, (batch, dim_z, dim_a) = (32, 4, 2)")
    print("| T | sequential: operator calls | parallel scan: operator calls | sequential: ms | parallel scan: ms |")
    print("|---|---|---|---|---|")
    for T in (10, 20, 24, 28, 40, 80, 160):
        a, p = problem(32, T, 4, 2, args.device)
        fns = [log_prob_backward(m, a, p) for m in ("sequential f64", "parallel f64")]
        counts = [calls(fn) for fn in fns]
        times = [timeit(fn, args.repeat, args.device) for fn in fns]
        print(f"| {T} | {counts[0]} | {counts[1]} | {times[0]:.1f} | {times[1]:.1f} |", flush=True)


def main(args):
    torch.set_num_threads(args.threads)
    if args.ops:
        return ops(args)
    print(
        f"torch {torch.__version__}, device {args.device}, threads {torch.get_num_threads()}, median of {args.repeat}"
    )
    print("| task | (batch, T, dim_z, dim_a) | " + " | ".join(METHODS) + " |")
    print("|---|---|" + "---|" * len(METHODS))
    for size in SIZES[: args.sizes]:
        a, p = problem(*size, args.device)
        for task, make in (
            ("log_prob + backward", log_prob_backward),
            ("smoothing", smoothing),
            ("posterior sample", sampling),
        ):
            cells = []
            for m in METHODS:
                fn = make(m, a, p)
                cells.append("n/a" if fn is None else f"{timeit(fn, args.repeat, args.device):.1f} ms")
            print(f"| {task} | {size} | " + " | ".join(cells) + " |", flush=True)
    if importlib.util.find_spec("dynamax") is None:  # the compiled anchor, when the optional bench extra is installed
        print('\ndynamax is not installed (pip install -e ".[bench]"): no comparison with a compiled library')
        return
    import bench_dynamax

    print("\nagainst dynamax (benchmarks/bench_dynamax.py):")
    bench_dynamax.main(args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", type=int, default=len(SIZES), help="run only the first N sizes")
    parser.add_argument("--ops", action="store_true", help="operator calls: sequential filter against parallel scan")
    main(parser.parse_args())
