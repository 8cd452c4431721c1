# SPDX-License-Identifier: Apache-2.0
"""
The paper's imputation experiments (section 5.1, figure 3) and their figures.

    python -m pyro_kvae.experiments box --run-dir runs/experiment_box [--quick] [--cuda]

Trains the KVAE and the AE-RNN and VAE-RNN baselines on the same data and
architecture, then measures the fraction of wrong pixels on unobserved frames:

* missing at random (:func:`pyro_kvae.train.random_mask`): the first 4 frames
  observed, each later frame dropped with probability p = 0.1 ... 1.0
  (fig. 3a; p = 1 is pure generation);
* missing in the middle: a consecutive gap of growing length (fig. 3b);

for KVAE smoothing, KVAE filtering, VAE-RNN, AE-RNN and blank frames, and
writes ``results.csv``, ``results.json``, ``fig3a.png``, ``fig3b.png``,
``fig3c.png`` (a-space trajectories), ``fig4.png`` (alpha along the encoded
trajectories), ``fig5.png`` (sequences as one image, colour for time),
``generation.gif`` and ``imputation.gif``.

``python -m pyro_kvae.experiments pendulum`` instead writes table 1: the test
ELBO of the KVAE (CNN and MLP) and of a deep Markov model on the pendulum.
"""

import argparse
import csv
import os
import time

import numpy as np
import torch

from .baselines import DMM, RNNBaseline, train_rnn_baseline
from .cli import positive_int
from .config import KVAEConfig, build_kvae
from .data import VideoDataset
from .files import write_json
from .imputation import generate, impute, pixel_error
from .nn import MLPDynamics
from .nn.vae import LIKELIHOODS
from .train import Trainer, random_mask

DROP_PROBS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
GAPS = (2, 4, 6, 8, 10, 12, 14)
T_INIT = 4


def gap_mask(shape, gap):
    """Missing in the middle: a consecutive gap of ``gap`` frames centred in the sequence."""
    mask = torch.ones(shape, dtype=torch.bool)
    start = (shape[1] - gap) // 2
    mask[:, start : start + gap] = False
    return mask


def imputation_table(methods, x, seed=0, probs=DROP_PROBS, gaps=GAPS):
    """
    Rows ``{"experiment", "setting", "method", "pixel_error"}`` for every method
    ``name -> fn(x, mask) -> frames`` on both mask families (same masks for all methods).
    """
    g = torch.Generator().manual_seed(seed)
    settings = [("missing_at_random", p, random_mask(x.shape[:2], p, T_INIT, g)) for p in probs]
    settings += [("missing_in_middle", k, gap_mask(x.shape[:2], k)) for k in gaps if k < x.shape[1]]
    rows = []
    for experiment, setting, mask in settings:
        mask = mask.to(x.device)
        for name, fn in methods.items():
            err = pixel_error(fn(x, mask), x, mask).item()
            rows.append({"experiment": experiment, "setting": setting, "method": name, "pixel_error": err})
    return rows


def plot_curves(rows, experiment, xlabel, path):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for method in dict.fromkeys(r["method"] for r in rows):
        pts = [
            (r["setting"], r["pixel_error"]) for r in rows if r["experiment"] == experiment and r["method"] == method
        ]
        ax.plot(*zip(*pts), "o-", ms=3, label=method)
    ax.set(xlabel=xlabel, ylabel="fraction of incorrect pixels")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def time_colour_image(frames):
    """``(T, H, W)`` frames as one RGB image, colour for time (paper fig. 5)."""
    import matplotlib.pyplot as plt

    frames = frames.detach().cpu().numpy()
    T = frames.shape[0]
    img = np.zeros(frames.shape[1:] + (3,))
    for t in range(T):
        img = np.maximum(img, frames[t][..., None] * np.array(plt.cm.viridis(t / max(T - 1, 1))[:3]))
    return img


def figures(kvae, x, run_dir):
    import matplotlib.pyplot as plt

    from .plotting import plot_trajectories, save_gif

    gap = gap_mask(x[:1].shape[:2], x.shape[1] - 2 * T_INIT).to(x.device)
    encoded = impute(kvae, x[:1]).a[0]
    gen = generate(kvae, x[:1, :T_INIT], x.shape[1])
    smoothed = impute(kvae, x[:1], gap)
    plot_trajectories([encoded, gen.a[0], smoothed.a[0]], gap[0], os.path.join(run_dir, "fig3c.png"),
                      ["encoded", "generated", "smoothed"])  # fmt: skip
    # alpha along the encoded trajectories of a few test sequences (fig. 4 for an LSTM network)
    out = impute(kvae, x[:20])
    a, alpha = out.a.cpu().numpy(), out.alpha.cpu().numpy()
    K = alpha.shape[-1]
    fig, axes = plt.subplots(1, K, figsize=(3.2 * K, 3))
    grid = None
    if isinstance(kvae.prior.dynamics, MLPDynamics):  # alpha_t = f(a_{t-1}): draw it over a grid (paper fig. 4)
        lo, hi = a.reshape(-1, 2).min(0) - 0.5, a.reshape(-1, 2).max(0) + 0.5
        g0, g1 = np.meshgrid(np.linspace(lo[0], hi[0], 100), np.linspace(lo[1], hi[1], 100))
        pts = torch.tensor(np.stack([g0, g1], -1), dtype=x.dtype, device=x.device)
        with torch.no_grad():
            grid = kvae.prior.dynamics.weights(pts).cpu().numpy()
    for k, ax in enumerate(np.atleast_1d(axes)):
        if grid is not None:
            ax.imshow(grid[..., k], origin="lower", extent=(lo[0], hi[0], lo[1], hi[1]), cmap="gray", vmin=0, vmax=1)
            ax.plot(a[..., 0].ravel(), a[..., 1].ravel(), "r.", ms=2)
            ax.set_title(f"alpha^({k + 1}) as a function of a_(t-1)", fontsize=8)
            continue
        sc = ax.scatter(
            a[..., 0].ravel(), a[..., 1].ravel(), c=alpha[..., k].ravel(), cmap="gray_r", vmin=0, vmax=1, s=8
        )
        ax.set_title(f"alpha_t^({k + 1}) at a_t")
    if grid is None:
        fig.colorbar(sc, ax=axes)
    fig.savefig(os.path.join(run_dir, "fig4.png"), dpi=110)
    plt.close(fig)
    # fig. 5: test sequences and generated ones as single images
    long = generate(kvae, x[:4, :T_INIT], 40)
    if len(kvae.frame_shape) == 3:  # fig. 5 colours single-channel frames by time
        fig = None
    else:
        fig, axes = plt.subplots(2, 4, figsize=(8, 4))
    for i in range(4 if fig is not None else 0):
        axes[0, i].imshow(time_colour_image(x[i]))
        axes[1, i].imshow(time_colour_image(long.x[i]))
        axes[0, i].axis("off")
        axes[1, i].axis("off")
    if fig is not None:
        axes[0, 0].set_title("data", loc="left")
        axes[1, 0].set_title("generated (40 frames from 4)", loc="left")
        fig.savefig(os.path.join(run_dir, "fig5.png"), dpi=110)
        plt.close(fig)
    save_gif(list(long.x), os.path.join(run_dir, "generation.gif"), [f"seq {k}" for k in range(4)], fps=8)
    mask = random_mask(x[:1].shape[:2], 0.5, T_INIT, torch.Generator().manual_seed(0), x.device)
    rows = [
        x[0],
        x[0] * kvae.frame_mask(mask)[0],
        impute(kvae, x[:1], mask, smooth=False).x[0],
        impute(kvae, x[:1], mask).x[0],
    ]
    save_gif(rows, os.path.join(run_dir, "imputation.gif"), ["truth", "observed", "filtered", "smoothed"])


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m pyro_kvae.experiments", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("env", choices=["box", "box_gravity", "polygon", "pong", "pendulum"])
    parser.add_argument(
        "--data",
        help="dataset file (default data/<env>.npz, generated if missing), or your own "
        "videos (a folder of .npy/.npz/.gif/.mp4, a .gif/.mp4, or a .npy (N, T, H, W[, C]))",
    )
    parser.add_argument("--likelihood", default="bernoulli", choices=LIKELIHOODS, help="frame likelihood")
    parser.add_argument("--iwae-particles", type=positive_int, default=10,
                        help="particles of the importance-weighted bound reported beside the test ELBO")  # fmt: skip
    parser.add_argument("--run-dir", help="default runs/experiment_<env>")
    parser.add_argument("--epochs", type=positive_int, default=20, help="KVAE epochs (paper: 80)")
    parser.add_argument("--baseline-epochs", type=positive_int, default=10, help="epochs for each baseline stage")
    parser.add_argument("--n-train", type=positive_int, help="training sequences (default: all)")
    parser.add_argument("--n-test", type=positive_int, default=1000)
    parser.add_argument("--filters", type=positive_int, nargs="+", default=[16, 16, 16],
                        help="conv filters (paper: 32 32 32)")  # fmt: skip
    parser.add_argument("--dynamics", default="lstm", choices=["lstm", "mlp"], help="alpha network (mlp: fig. 4 grid)")
    parser.add_argument("--cuda", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.cuda and not torch.cuda.is_available():
        parser.error("--cuda given but torch.cuda.is_available() is False")
    if args.env == "pendulum":
        return pendulum_table(args)
    device = "cuda" if args.cuda else "cpu"
    run_dir = args.run_dir or f"runs/experiment_{args.env}"
    os.makedirs(run_dir, exist_ok=True)
    data = args.data or f"data/{args.env}.npz"
    train = VideoDataset(data, "train", env=args.env, seed=args.seed)
    test = VideoDataset(data, "test", seed=args.seed).take(args.n_test)
    if args.n_train:
        train = train.take(args.n_train)
    start = time.perf_counter()

    config = KVAEConfig(epochs=args.epochs, conv_filters=tuple(args.filters), seed=args.seed, device=device,
                        kf_update_epochs=min(10, args.epochs // 4), dynamics=args.dynamics,
                        likelihood=args.likelihood, **KVAEConfig.frame_fields(train.frame_shape))  # fmt: skip
    trainer = Trainer(config, run_dir=os.path.join(run_dir, "kvae"), overwrite=True)  # the runner always retrains
    trainer.fit(train)
    kvae_time = time.perf_counter() - start

    baselines = {}
    for name, variational in (("VAE-RNN", True), ("AE-RNN", False)):
        torch.manual_seed(args.seed)
        ref = build_kvae(config)  # same encoder/decoder architecture as the KVAE
        model = RNNBaseline(ref.encoder, ref.decoder, variational, config.dim_a, likelihood=config.likelihood)
        train_rnn_baseline(model, train.x, args.baseline_epochs, args.baseline_epochs, seed=args.seed, device=device)
        baselines[name] = model.eval()
    total_time = time.perf_counter() - start

    kvae = trainer.model
    x = test.x.to(device)
    methods = {
        "KVAE smoothing": lambda x, m: impute(kvae, x, m, smooth=True).x,
        "KVAE filtering": lambda x, m: impute(kvae, x, m, smooth=False).x,
        **{name: (lambda x, m, b=b: b.impute(x, m)) for name, b in baselines.items()},
        "blank frames": lambda x, m: torch.zeros_like(x),
    }
    rows = imputation_table(methods, x, seed=args.seed)
    summary = {
        "env": args.env,
        "n_train": len(train),
        "n_test": len(test),
        "kvae_epochs": trainer.epoch,
        "kvae_test_elbo": trainer.evaluate(test),
        "iwae_particles": args.iwae_particles,
        "kvae_test_iwae_bound": trainer.evaluate(test, num_particles=args.iwae_particles),
        "kvae_train_seconds": round(kvae_time, 1),
        "total_train_seconds": round(total_time, 1),
        "device": device,
        "rows": rows,
    }
    write_json(os.path.join(run_dir, "results.json"), summary)
    with open(os.path.join(run_dir, "results.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot_curves(rows, "missing_at_random", "drop probability", os.path.join(run_dir, "fig3a.png"))
    plot_curves(rows, "missing_in_middle", "number of missing frames in the middle", os.path.join(run_dir, "fig3b.png"))
    figures(kvae, x, run_dir)

    print(f"KVAE test ELBO {summary['kvae_test_elbo']:.1f}, importance-weighted bound (K={args.iwae_particles}) "
          f"{summary['kvae_test_iwae_bound']:.1f}; training took {total_time:.0f} s")  # fmt: skip
    for experiment in ("missing_at_random", "missing_in_middle"):
        print(experiment)
        names = list(methods)
        print("  setting  " + "  ".join(f"{n:>14s}" for n in names))
        for setting in dict.fromkeys(r["setting"] for r in rows if r["experiment"] == experiment):
            vals = {
                r["method"]: r["pixel_error"] for r in rows if r["experiment"] == experiment and r["setting"] == setting
            }
            print(f"  {setting:<7}  " + "  ".join(f"{vals[n]:14.4f}" for n in names))
    print(f"outputs in {os.path.abspath(run_dir)}")


def train_dmm(dmm, train, epochs, batch_size=32, lr=1e-3, seed=0, device="cpu"):
    """Trains the :class:`~pyro_kvae.baselines.DMM` with SVI (``Trace_ELBO``, ClippedAdam)."""
    import pyro
    from pyro.infer import SVI, Trace_ELBO

    pyro.set_rng_seed(seed)
    dmm.to(device)
    svi = SVI(dmm.model, dmm.guide, pyro.optim.ClippedAdam({"lr": lr, "clip_norm": 10.0}), Trace_ELBO())
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(train), generator=g).split(batch_size):
            svi.step(train.x[idx].to(device), train.u[idx].to(device))
    return dmm


@torch.no_grad()
def elbo_per_sequence(model, guide, data, device="cpu", particles=4):
    """Mean ELBO per sequence (``particles`` single-sample estimates averaged)."""
    from pyro.infer import Trace_ELBO

    x, u = data.x.to(device), data.u.to(device)
    u = u if u.size(-1) else None
    return -sum(Trace_ELBO().loss(model, guide, x, u) for _ in range(particles)) / particles / len(data)


def pendulum_table(args):
    """Table 1: test ELBO of the KVAE (CNN and MLP) and of a DMM on the torque-controlled pendulum."""
    device = "cuda" if args.cuda else "cpu"
    run_dir = args.run_dir or "runs/experiment_pendulum"
    os.makedirs(run_dir, exist_ok=True)
    data = args.data or "data/pendulum.npz"
    train = VideoDataset(data, "train", env="pendulum", seed=args.seed)
    test = VideoDataset(data, "test")
    start = time.perf_counter()
    results, bounds = {}, {}
    for vae in ("conv", "mlp"):
        config = KVAEConfig(frame_size=16, dim_z=3, dim_u=1, K=2, vae=vae, conv_filters=tuple(args.filters),
                            epochs=args.epochs, kf_update_epochs=min(10, args.epochs // 4), seed=args.seed,
                            device=device)  # fmt: skip
        trainer = Trainer(config, run_dir=os.path.join(run_dir, f"kvae_{vae}"), overwrite=True)
        trainer.fit(train)
        name = f"KVAE ({'CNN' if vae == 'conv' else 'MLP'})"
        results[name] = elbo_per_sequence(trainer.model.model, trainer.model.guide, test, device)
        bounds[name] = trainer.evaluate(test, num_particles=args.iwae_particles)
    torch.manual_seed(args.seed)
    dmm = train_dmm(DMM(16, 3, 1), train, args.epochs, seed=args.seed, device=device)
    results["DMM"] = elbo_per_sequence(dmm.model, dmm.guide, test, device)
    summary = {"env": "pendulum", "epochs": args.epochs, "seconds": round(time.perf_counter() - start, 1),
               "test_elbo": results, "iwae_particles": args.iwae_particles, "test_iwae_bound": bounds}  # fmt: skip
    write_json(os.path.join(run_dir, "results.json"), summary)
    print(f"model        test ELBO  IW bound (K={args.iwae_particles})")
    for name, elbo in results.items():
        print(f"{name:12s} {elbo:9.2f}  " + (f"{bounds[name]:9.2f}" if name in bounds else "      n/a"))
    print(f"outputs in {os.path.abspath(run_dir)}")
    return summary


if __name__ == "__main__":
    main()
