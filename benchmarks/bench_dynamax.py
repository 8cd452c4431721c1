# SPDX-License-Identifier: Apache-2.0
"""
pyro_kvae's Kalman core beside dynamax (JAX, jit-compiled sequential filter and
smoother), on the same data, with the log-likelihoods checked to agree.

Two workloads, each at (batch, T, dim_z, dim_a) = (64, 20, 4, 2) and (64, 100, 8, 4):

* time-varying ``A_t``, ``C_t`` per sequence (the KVAE's case);
* time-invariant ``A``, ``C`` shared by all sequences (a time dim of 1 here).

Tasks: ``log p(a)`` + gradient (w.r.t. ``A``, ``C``, ``a``) and smoothed means. Ours is
``LinearGaussianSSM`` as the package uses it (float64 inside, float32 in and out);
dynamax runs in float32, in a process of its own. The two are timed in alternating blocks of
calls and the ratio is the median of the rounds' ratios (this machine's load drifts). On the
time-varying workload, also the KVAE's recursive filter with its dynamics network in the loop
(``KalmanPrior.filter``: an LSTM of 50 units gives ``alpha_t`` from ``a_{t-1}``, ``K = 3``
modes, 30 % of steps missing, no gradient, as ``impute`` runs it) against dynamax's smoother.
Needs the optional ``bench`` extra (jax, dynamax)::

    pip install -e ".[bench]"
    python benchmarks/bench_dynamax.py [--repeat 7] [--threads 2]
"""

import argparse
import time

import numpy as np
import torch

from pyro_kvae.distributions import LinearGaussianSSM

SIZES = [(64, 20, 4, 2), (64, 100, 8, 4)]


def problem(batch, T, dz, da, varying, seed=0):
    torch.manual_seed(seed)  # (the sample below; the same data in dynamax's process)
    g = torch.Generator().manual_seed(seed)
    shape = (batch, T) if varying else (1,)
    A = torch.eye(dz) + 0.05 * torch.randn(*shape, dz, dz, generator=g) / dz**0.5
    C = torch.randn(*shape, da, dz, generator=g) / dz**0.5
    p = dict(A=A, C=C, Q=0.08 * torch.eye(dz), R=0.03 * torch.eye(da), mu0=torch.zeros(dz), Sigma0=20 * torch.eye(dz))
    a = LinearGaussianSSM(p["mu0"], p["Sigma0"], A.expand(batch, T, dz, dz) if not varying else A, p["Q"],
                          C.expand(batch, T, da, dz) if not varying else C, p["R"]).sample()  # fmt: skip
    return a, p


def timeit_pair(mine, theirs, repeat, block=5):
    """Median milliseconds per call of ``mine()`` and of dynamax's task, and the median of their per-round
    ratios. ``theirs(n)`` runs a block of ``n`` calls of dynamax's task in its own process and returns the
    seconds per call. Each round times a block of ``block`` calls of one, then of the other: the rounds
    alternate so that both see the same load, and the calls within a block run back to back, because the
    first call after one of the other runtime runs slower (here a 2 ms smoothing call took 3-4 ms right
    after a dynamax call, with or without a 50 ms pause between them)."""
    mine(), theirs(1)  # warm up (and compile)
    rounds = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(block):
            mine()
        rounds.append(((time.perf_counter() - t0) / block, theirs(block)))
    ours, theirs = np.array(rounds).T
    return 1e3 * float(np.median(ours)), 1e3 * float(np.median(theirs)), float(np.median(ours / theirs))


def ours(a, p, varying):
    def dist(A, C):
        return LinearGaussianSSM(p["mu0"], p["Sigma0"], A, p["Q"], C, p["R"], duration=a.shape[-2])

    def log_prob_grad():
        A, C, x = (t.clone().requires_grad_() for t in (p["A"], p["C"], a))
        lp = dist(A, C).log_prob(x)
        lp.sum().backward()
        return lp.detach()

    def smooth():
        with torch.no_grad():
            return dist(p["A"], p["C"]).smooth(a).mean

    return log_prob_grad, smooth


def recursive_filter(a, dz):
    """``KalmanPrior.filter`` on ``a (batch, T, dim_a)`` with 30 % of steps missing."""
    from pyro_kvae.models import KalmanPrior
    from pyro_kvae.nn import LSTMDynamics

    torch.manual_seed(0)
    prior = KalmanPrior(LSTMDynamics(a.size(-1), K=3), dim_z=dz)
    mask = torch.rand(a.shape[:2], generator=torch.Generator().manual_seed(1)) >= 0.3

    def run():
        with torch.no_grad():
            return prior.filter(a, mask).filtered.filt_mean

    return run


def theirs(a, p, varying):
    import jax
    import jax.numpy as jnp
    from dynamax.linear_gaussian_ssm import lgssm_filter, lgssm_smoother
    from dynamax.linear_gaussian_ssm.inference import (
        ParamsLGSSM,
        ParamsLGSSMDynamics,
        ParamsLGSSMEmissions,
        ParamsLGSSMInitial,
    )

    dz, da = p["A"].shape[-1], p["C"].shape[-2]
    j = lambda t: jnp.asarray(t.numpy())  # noqa: E731
    Q, R, mu0, S0, y = j(p["Q"]), j(p["R"]), j(p["mu0"]), j(p["Sigma0"]), j(a)

    def params(F, H):
        return ParamsLGSSM(
            initial=ParamsLGSSMInitial(mean=mu0, cov=S0),
            dynamics=ParamsLGSSMDynamics(weights=F, bias=jnp.zeros(dz), input_weights=jnp.zeros((dz, 0)), cov=Q),
            emissions=ParamsLGSSMEmissions(weights=H, bias=jnp.zeros(da), input_weights=jnp.zeros((da, 0)), cov=R),
        )

    axes = 0 if varying else None  # time-varying: per sequence (batch, T, ...); else one shared matrix

    def loglik(F, H, y):
        return jax.vmap(lambda F, H, y: lgssm_filter(params(F, H), y).marginal_loglik, in_axes=(axes, axes, 0))(F, H, y)

    F, H = (j(p["A"]), j(p["C"])) if varying else (j(p["A"][0]), j(p["C"][0]))
    value_and_grad = jax.jit(jax.value_and_grad(lambda F, H, y: loglik(F, H, y).sum(), argnums=(0, 1, 2)))
    lls = jax.jit(loglik)
    smooth = jax.jit(
        lambda F, H, y: jax.vmap(
            lambda F, H, y: lgssm_smoother(params(F, H), y).smoothed_means, in_axes=(axes, axes, 0)
        )(F, H, y)
    )
    sync = lambda out: jax.block_until_ready(out)  # noqa: E731
    return (lambda: value_and_grad(F, H, y)), (lambda: smooth(F, H, y)), (lambda: np.asarray(lls(F, H, y))), sync


def _dynamax_worker(conn, threads):
    """dynamax in a process of its own, so that JAX is never loaded into the process that times ours (in one
    test here, with JAX loaded and run in it, our recursive filter took 53-86 ms against 48-52 ms without;
    alternating with dynamax in another process still slows both). It builds each
    problem from the same seed as ours and answers: ``("setup", size, varying)`` with the log-likelihoods,
    ``("time", task, n)`` with the seconds per call of a block of ``n`` calls, ``None`` to stop."""
    torch.set_num_threads(threads)  # (torch only makes the data here)
    import jax

    conn.send(f"jax {jax.__version__} ({jax.devices()[0]})")
    tasks = sync = None
    while (msg := conn.recv()) is not None:
        if msg[0] == "setup":
            a, p = problem(*msg[1], msg[2])
            grad, smooth, loglik, sync = theirs(a, p, msg[2])
            tasks = {"grad": grad, "smooth": smooth}
            conn.send(loglik())
        else:
            fn, n = tasks[msg[1]], msg[2]
            t0 = time.perf_counter()
            for _ in range(n):
                sync(fn())
            conn.send((time.perf_counter() - t0) / n)


def main(args):
    import multiprocessing

    torch.set_num_threads(args.threads)
    ctx = multiprocessing.get_context("spawn")
    conn, child = ctx.Pipe()
    worker = ctx.Process(target=_dynamax_worker, args=(child, args.threads), daemon=True)
    worker.start()
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), {conn.recv()} in its own process, "
          f"median of {args.repeat} rounds of 5 calls, milliseconds per call")  # fmt: skip
    print("| workload (batch, T, dim_z, dim_a) | task | ours | dynamax | ratio | max rel. diff. of log p |")
    print("|---|---|---|---|---|---|")

    def dynamax_block(task):
        def run(n):
            conn.send(("time", task, n))
            return conn.recv()

        return run

    for varying in (True, False):
        for size in SIZES:
            a, p = problem(*size, varying)
            lp_grad, smooth = ours(a, p, varying)
            conn.send(("setup", size, varying))
            j_ll = conn.recv()
            diff = float(np.max(np.abs(lp_grad().numpy() - j_ll) / np.abs(j_ll)))
            kind = "time-varying" if varying else "time-invariant"
            tasks = [("log p(a) + gradient", lp_grad, "grad"), ("smoothed means", smooth, "smooth")]
            if varying:
                tasks.append(("recursive filter (vs smoother)", recursive_filter(a, size[2]), "smooth"))
            for task, mine, other in tasks:
                t_ours, t_jax, ratio = timeit_pair(mine, dynamax_block(other), args.repeat)
                row = f"| {kind} {size} | {task} | {t_ours:.1f} | {t_jax:.1f} | {ratio:.1f}x | {diff:.1e} |"
                print(row, flush=True)
    conn.send(None)
    worker.join()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    main(parser.parse_args())
