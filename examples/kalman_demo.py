# SPDX-License-Identifier: Apache-2.0
"""
Exact Kalman inference with missing observations, using
:class:`pyro_kvae.distributions.LinearGaussianSSM`.

A ball moves with constant velocity in 2-D (state z = position, velocity);
we observe its noisy position a_t, except for a gap in the middle. Filtering
uses only the past; smoothing fills the gap with the future as well.

    python examples/kalman_demo.py --out runs/kalman_demo
"""

import argparse
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from pyro_kvae.distributions import LinearGaussianSSM  # noqa: E402


def main(args):
    torch.manual_seed(args.seed)
    T, dt = args.T, 0.2
    A = torch.eye(4)
    A[0, 2] = A[1, 3] = dt
    C = torch.eye(2, 4)
    d = LinearGaussianSSM(
        mu0=torch.tensor([0.0, 0.0, 1.0, 0.5]),
        Sigma0=torch.eye(4),
        A=A.expand(T, 4, 4),
        Q=0.01 * torch.eye(4),
        C=C.expand(T, 2, 4),
        R=0.05 * torch.eye(2),
    )
    a = d.sample()  # (T, 2)
    mask = torch.ones(T, dtype=torch.bool)
    mask[T // 3 : T // 3 + args.gap] = False
    observed = LinearGaussianSSM(d.mu0, d.Sigma0, d.A, d.Q, d.C, d.R, mask=mask)
    a_obs = a.masked_fill(~mask.unsqueeze(-1), float("nan"))

    filt, smooth = observed.filter(a_obs), observed.smooth(a_obs)
    gap = ~mask
    err_f = (filt.mean[gap, :2] - a[gap]).norm(dim=-1).mean()
    err_s = (smooth.mean[gap, :2] - a[gap]).norm(dim=-1).mean()
    print(f"log p(a_obs) = {observed.log_prob(a_obs):.3f} over {int(mask.sum())} observed of {T} steps")
    print(f"mean distance to the true a_t in the gap of {args.gap}: filter {err_f:.3f}, smoother {err_s:.3f}")

    os.makedirs(args.out, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot(*a.T, "k.", ms=3, label="a_t (true)")
    ax.plot(*a[mask].T, "ko", mfc="none", ms=5, label="observed")
    ax.plot(*filt.mean[:, :2].T, "C0-", label="filtered")
    ax.plot(*smooth.mean[:, :2].T, "C1-", label="smoothed")
    ax.legend()
    ax.set_title("Kalman filtering and smoothing through a gap")
    path = os.path.join(args.out, "kalman_demo.png")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    print(f"figure written to {path}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--T", type=int, default=60)
    parser.add_argument("--gap", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/kalman_demo")
    main(parser.parse_args())
