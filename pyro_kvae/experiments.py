# SPDX-License-Identifier: Apache-2.0
"""
The paper's experiments (section 5): imputation (figure 3) on the bouncing-ball
environments and the pendulum's test ELBO (table 1), with their figures.

    python -m pyro_kvae.experiments box [--paper] [--cuda]   # fig. 3a/3b tables, figs 3c, 4, 5
    python -m pyro_kvae.experiments pendulum                 # table 1, both likelihoods
    python -m pyro_kvae.experiments all                      # every table and figure of the README

An imputation experiment trains the KVAE and the AE-RNN and VAE-RNN baselines
(same data, same encoder/decoder architecture, at least as many epochs, best
epoch on the validation split) and measures the fraction of wrong pixels on
unobserved frames:

* missing at random (:func:`pyro_kvae.train.random_mask`): the first 4 frames
  observed, each later frame dropped with probability p = 0.1 ... 1.0
  (fig. 3a; p = 1 is pure generation);
* missing in the middle: a consecutive gap of 1, 3, ..., 15 frames (fig. 3b);

for KVAE smoothing, KVAE filtering, VAE-RNN, AE-RNN and blank frames, and
writes ``results.csv``, ``results.json``, ``training.png``, ``fig3a.png``, ``fig3b.png`` (the
paper's curves dashed beside ours for the box), ``fig3c.png`` (a-space
trajectories), ``fig4.png`` (alpha along the encoded trajectories),
``fig5.png`` (sequences as one image, colour for time), ``generation.gif`` and
``imputation.gif``.

Every model trains in its own sub-directory of ``--run-dir`` and checkpoints
after each epoch: running the same command again continues where it stopped
(``--overwrite`` starts afresh); ``--stage kvae`` or ``--stage baselines``
trains one part and stops, so long runs can be done in pieces. Each
``results.json`` records the settings, seed, library versions and wall times.
"""

import argparse
import csv
import datetime
import json
import os
import platform
import shutil
import sys
import time

if __name__ == "__main__":  # as examples/bouncing_ball.py: large CPU tensors on transparent huge pages
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from .baselines import DMM, DVBF, RNNBaseline, reconstruction_error, train_rnn_baseline, train_sequence_model  # noqa: E402
from .cli import positive_int  # noqa: E402
from .config import KVAEConfig, build_kvae  # noqa: E402
from .data import VideoDataset, save  # noqa: E402
from .data.datasets import from_authors  # noqa: E402
from .files import write_json  # noqa: E402
from .imputation import generate, impute, pixel_error  # noqa: E402
from .nn import MLPDynamics  # noqa: E402
from .nn.vae import LIKELIHOODS  # noqa: E402
from .plotting import plot_training  # noqa: E402
from .train import CHECKPOINT, Trainer, load_checkpoint, random_mask  # noqa: E402

IMPUTATION_ENVS = ("box", "box_gravity", "polygon", "pong")
DROP_PROBS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
GAPS = (1, 3, 5, 7, 9, 11, 13, 15)  # the paper's fig. 3b
T_INIT = 4
PAPER = dict(epochs=80, filters=[32, 32, 32])  # and every training sequence
#: the DVBF and the DMM train for this many times the KVAE's epochs (cheap; at 1x their
#: validation ELBO was still rising steeply)
SEQUENCE_MODEL_EPOCHS = 2

#: the paper's fig. 3 (bouncing ball), read off its plot (``shared/reference/paper_results.md``)
PAPER_FIG3 = {
    "missing_at_random": {
        "settings": (0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 1.0),
        "KVAE smoothing": (0.0057, 0.0062, 0.0075, 0.0095, 0.0129, 0.0189, 0.027),
        "KVAE filtering": (0.0076, 0.0082, 0.0103, 0.0125, 0.0158, 0.0214, 0.0266),
        "AE-RNN": (0.0066, 0.0076, 0.0096, 0.0133, 0.0172, 0.0222, 0.0273),
        "VAE-RNN": (0.0079, 0.0085, 0.0117, 0.0141, 0.0173, 0.0225, 0.0279),
    },
    "missing_in_middle": {
        "settings": (1, 3, 5, 7, 9, 11, 13, 15),
        "KVAE smoothing": (0.0061, 0.0077, 0.0098, 0.0122, 0.0148, 0.0173, 0.0201, 0.0227),
        "KVAE filtering": (0.0081, 0.0115, 0.0143, 0.0172, 0.0197, 0.0220, 0.0237, 0.0258),
        "AE-RNN": (0.0086, 0.0115, 0.0148, 0.0175, 0.020, 0.0224, 0.0244, 0.0262),
        "VAE-RNN": (0.0088, 0.0121, 0.0152, 0.0181, 0.0207, 0.0231, 0.0252, 0.0269),
    },
}
#: the paper's table 1 (test ELBO per frame, Gaussian frames with learned per-pixel variance)
PAPER_TABLE1 = {"KVAE (CNN)": 810.08, "KVAE (MLP)": 807.02, "DVBF": 798.56, "DMM": 784.70}


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


def run_info(args, started: float) -> dict:
    """What a results file records about its run: settings, seed, versions, machine, wall time."""
    import lightning
    import pyro

    settings = {k: v for k, v in vars(args).items() if k not in ("func",)}
    return {
        "settings": settings,
        "seed": args.seed,
        "command": "python -m pyro_kvae.experiments " + " ".join(sys.argv[1:]),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "pyro": pyro.__version__,
            "lightning": lightning.__version__,
            "numpy": np.__version__,
        },
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() and args.cuda else None,
        },
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds_this_invocation": round(time.perf_counter() - started, 1),
    }


def fit_kvae(config: KVAEConfig, run_dir: str, train, valid=None, meta=None, overwrite=False) -> Trainer:
    """Trains (or continues training) the KVAE of ``config`` in ``run_dir``; a run there with
    other settings than ``config`` (except the epochs and the hardware) is refused."""
    if not overwrite and os.path.exists(os.path.join(run_dir, CHECKPOINT)):
        trainer = Trainer.resume(run_dir, changes={**config.to_dict(), **(meta or {})})
        print(f"{run_dir}: resumed at epoch {trainer.epoch} of {config.epochs}")
    else:
        trainer = Trainer(config, run_dir=run_dir, meta=meta, overwrite=overwrite)
    trainer.fit(train, valid)
    return trainer


def training_seconds(history) -> float:
    """Wall time of the training epochs in ``history`` (rows with ``"seconds"``), over all pieces."""
    return round(sum(h.get("seconds", 0.0) for h in history), 1)


def fit_baselines(config, train, valid, run_dir, epochs, seed, device, overwrite=False, rnn_epochs=None,
                  only_finished=False, patience=None):  # fmt: skip
    """The AE-RNN and VAE-RNN with the KVAE's encoder/decoder architecture: ``epochs`` of the
    auto-encoder, ``rnn_epochs`` (default ``epochs``) of the LSTM, each model checkpointed in
    ``run_dir/<name>.pt`` and continued from it. With ``only_finished`` a baseline whose training
    has not finished is left out instead. Returns ``{name: (model, info)}``."""
    out = {}
    for name, variational in (("VAE-RNN", True), ("AE-RNN", False)):
        path = os.path.join(run_dir, f"{name.lower()}.pt")
        if overwrite and os.path.exists(path):
            os.remove(path)
        if only_finished and not (
            os.path.exists(path) and load_checkpoint(path, keys=("state",))["state"]["stage"] == "done"
        ):
            continue
        torch.manual_seed(seed)
        ref = build_kvae(config)  # same encoder/decoder architecture as the KVAE
        model = RNNBaseline(ref.encoder, ref.decoder, variational, config.dim_a, likelihood=config.likelihood)
        info = train_rnn_baseline(model, train.x, epochs, rnn_epochs or epochs, seed=seed, device=device,
                                  valid=valid.x if len(valid) else None, checkpoint=path, lr=config.lr,
                                  desc=name, patience=patience)  # fmt: skip
        out[name] = (model.eval(), info)
    return out


def add_common_args(parser):
    """The flags every experiment takes (run directory, epochs, filters, --paper, seed, device)."""
    parser.add_argument("--run-dir", help="default runs/experiments/<env>, where 'all' and --tables-only look "
                        "(with --authors: experiments/authors_<env>)")  # fmt: skip
    parser.add_argument("--epochs", type=positive_int, default=20, help="KVAE epochs (paper: 80)")
    parser.add_argument("--filters", type=positive_int, nargs="+", default=[16, 16, 16],
                        help="conv filters (paper: 32 32 32)")  # fmt: skip
    parser.add_argument("--paper", action="store_true", help="the paper's settings: 80 epochs, 32 filters, all data")
    parser.add_argument("--iwae-particles", type=positive_int, default=10,
                        help="particles of the importance-weighted bound reported beside the test ELBO")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="retrain every model from scratch")
    parser.add_argument("--cuda", action="store_true")
    parser.add_argument("--seed", type=int, default=0)


def imputation_experiment(args):
    """Fig. 3 for ``args.env``: trains what is not trained yet, then evaluates and draws."""
    started = time.perf_counter()
    device = "cuda" if args.cuda else "cpu"
    run_dir = args.run_dir or (f"experiments/authors_{args.env}" if args.authors else f"runs/experiments/{args.env}")
    os.makedirs(run_dir, exist_ok=True)
    data = os.path.abspath(args.data or (f"data/authors_{args.env}" if args.authors else f"data/{args.env}") + ".npz")
    if args.authors and not os.path.exists(data):  # built once from the authors' files (deterministic)
        try:
            save(data, from_authors(args.env, args.authors))
        except FileNotFoundError as e:
            raise SystemExit(f"error: --authors: {e}") from None
    train = VideoDataset(data, "train", env=args.env, seed=args.seed)
    valid = VideoDataset(data, "valid", seed=args.seed)
    test = VideoDataset(data, "test", seed=args.seed).take(args.n_test)
    if args.n_train:
        train = train.take(args.n_train)
    config = KVAEConfig(epochs=args.epochs, conv_filters=tuple(args.filters), seed=args.seed, device=device,
                        kf_update_epochs=min(10, args.epochs // 4), dynamics=args.dynamics,
                        likelihood=args.likelihood, **KVAEConfig.frame_fields(train.frame_shape))  # fmt: skip
    # the data path relative to the working directory, so that a run moves with a clone of the repository
    meta = {"data": os.path.relpath(data), "n_train": len(train)}
    if args.stage in ("kvae", "all"):
        trainer = fit_kvae(config, os.path.join(run_dir, "kvae"), train, valid, meta, args.overwrite)
    if args.stage in ("baselines", "all"):
        baselines = fit_baselines(config, train, valid, run_dir, args.baseline_epochs or args.epochs, args.seed,
                                  device, args.overwrite, args.rnn_epochs, patience=args.patience)  # fmt: skip
    if args.stage == "evaluate":  # what is trained now: the KVAE at its last finished epoch, finished baselines
        trainer = Trainer.resume(os.path.join(run_dir, "kvae"), changes={**config.to_dict(), **meta})
        print(f"{run_dir}: evaluating the KVAE at epoch {trainer.epoch} of {config.epochs}")
        baselines = fit_baselines(config, train, valid, run_dir, args.baseline_epochs or args.epochs, args.seed,
                                  device, rnn_epochs=args.rnn_epochs, only_finished=True,
                                  patience=args.patience)  # fmt: skip
    elif args.stage != "all":
        return None

    kvae = trainer.model
    x = test.x.to(device)
    methods = {
        "KVAE smoothing": lambda x, m: impute(kvae, x, m, smooth=True).x,
        "KVAE filtering": lambda x, m: impute(kvae, x, m, smooth=False).x,
        **{name: (lambda x, m, b=b: b.impute(x, m)) for name, (b, _) in baselines.items()},
        "blank frames": lambda x, m: torch.zeros_like(x),
    }
    rows = imputation_table(methods, x, seed=args.seed)
    summary = {
        "env": args.env,
        "data": data,
        "n_train": len(train),
        "n_valid": len(valid),
        "n_test": len(test),
        "kvae_epochs": trainer.epoch,
        "kvae_epochs_planned": config.epochs,
        "kvae_test_elbo": trainer.evaluate(test),
        "iwae_particles": args.iwae_particles,
        "kvae_test_iwae_bound": trainer.evaluate(test, num_particles=args.iwae_particles),
        "kvae_train_seconds": training_seconds(trainer.history),
        "baselines": {
            name: {
                "autoencoder_epochs": info["epochs"]["ae"] or args.baseline_epochs or args.epochs,
                "lstm_epochs": info["epochs"]["rnn"] or args.rnn_epochs,
                "reconstruction_error_test": reconstruction_error(b, test.x),
                "reconstruction_error_valid": info["reconstruction_error_valid"],
                "imputation_error_valid": info["imputation_error_valid"],
                "train_seconds": training_seconds(info["history"]),
            }
            for name, (b, info) in baselines.items()
        },
        "device": device,
        "rows": rows,
        **run_info(args, started),
    }
    write_json(os.path.join(run_dir, "results.json"), summary)
    with open(os.path.join(run_dir, "results.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    paper = PAPER_FIG3 if args.env == "box" else None
    plot_curves(rows, "missing_at_random", "drop probability", os.path.join(run_dir, "fig3a.png"), paper)
    plot_curves(rows, "missing_in_middle", "number of missing frames in the middle",
                os.path.join(run_dir, "fig3b.png"), paper)  # fmt: skip
    figures(kvae, x, run_dir)
    plot_training(trainer.history, os.path.join(run_dir, "training.png"))  # the KVAE's curves, all pieces
    print(f"KVAE test ELBO {summary['kvae_test_elbo']:.1f}, importance-weighted bound (K={args.iwae_particles}) "
          f"{summary['kvae_test_iwae_bound']:.1f}")  # fmt: skip
    print(markdown_tables(summary))
    print(f"outputs in {os.path.abspath(run_dir)}")
    return summary


def markdown_tables(summary) -> str:
    """The fig. 3a and 3b tables of an imputation ``summary`` (and the auto-encoders' floors) in Markdown."""
    rows = summary["rows"]
    names = list(dict.fromkeys(r["method"] for r in rows))
    out = []
    for experiment, label in (("missing_at_random", "drop prob."), ("missing_in_middle", "gap length")):
        out += ["", f"| {label} | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for setting in dict.fromkeys(r["setting"] for r in rows if r["experiment"] == experiment):
            vals = {r["method"]: r["pixel_error"] for r in rows
                    if r["experiment"] == experiment and r["setting"] == setting}  # fmt: skip
            out.append(f"| {setting} | " + " | ".join(f"{vals[n]:.4f}" for n in names) + " |")
    if summary["baselines"]:
        floors = ", ".join(f"{n} {b['reconstruction_error_test']:.4f}" for n, b in summary["baselines"].items())
        times = ", ".join(f"{n} {b['train_seconds']:.0f} s" for n, b in summary["baselines"].items())
        out += ["", f"Auto-encoders' reconstruction error, every frame observed (test): {floors}. "
                f"Baselines' training time: {times}.", "", blank_frames_check(summary)]  # fmt: skip
    return "\n".join(out)


#: the settings of the README's summary table: (experiment, setting, label)
SUMMARY_SETTINGS = (
    ("missing_at_random", 0.5, "p = 0.5"),
    ("missing_at_random", 0.8, "p = 0.8"),
    ("missing_in_middle", 5, "gap 5"),
    ("missing_in_middle", 9, "gap 9"),
)


def paper_summary(summaries: dict) -> str:
    """
    One Markdown table of imputation ``summaries`` (``{name: summary}``): each method's pixel error at
    :data:`SUMMARY_SETTINGS`, with the paper's figure 3 value beside ours (``ours / paper``) where the
    paper gives one (the bouncing ball in a box).
    """
    head = "| environment | method | " + " | ".join(label for *_, label in SUMMARY_SETTINGS) + " |"
    lines = [head, "|---" * (2 + len(SUMMARY_SETTINGS)) + "|"]
    for name, s in summaries.items():
        rows = s["rows"]
        paper = PAPER_FIG3 if s["env"] == "box" else None
        for method in dict.fromkeys(r["method"] for r in rows):
            cells = []
            for experiment, setting, _ in SUMMARY_SETTINGS:
                ours = [r["pixel_error"] for r in rows
                        if (r["experiment"], r["setting"], r["method"]) == (experiment, setting, method)]  # fmt: skip
                ref = paper[experiment] if paper is not None else {}
                theirs = ref[method][ref["settings"].index(setting)] if method in ref else None
                cell = f"{ours[0]:.4f}" if ours else "n/a"
                cells.append(cell + (f" / {theirs:.4f}" if theirs is not None else ""))
            lines.append(f"| {name} | {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def blank_frames_check(summary, max_prob=0.8, max_gap=8) -> str:
    """Where each baseline of an imputation ``summary`` is not below the blank-frame error, at drop
    probabilities up to ``max_prob`` and gaps up to ``max_gap`` (the issue's bar), as one sentence."""
    rows = summary["rows"]
    blank = {(r["experiment"], r["setting"]): r["pixel_error"] for r in rows if r["method"] == "blank frames"}
    limit = {"missing_at_random": max_prob, "missing_in_middle": max_gap}
    parts = []
    for name in summary["baselines"]:
        bad = [("p=" if r["experiment"] == "missing_at_random" else "gap ") + f"{r['setting']}" for r in rows
               if r["method"] == name and r["setting"] <= limit[r["experiment"]]
               and r["pixel_error"] >= blank[r["experiment"], r["setting"]]]  # fmt: skip
        everywhere = f"every drop probability <= {max_prob} and every gap <= {max_gap}"
        parts.append(f"{name}: not below blank frames at {', '.join(bad)}" if bad else
                     f"{name}: below blank frames at {everywhere}")  # fmt: skip
    return "Against blank frames: " + "; ".join(parts) + "."


def plot_curves(rows, experiment, xlabel, path, paper=None):
    """Fraction of wrong pixels against the setting, one line per method; ``paper``
    (like :data:`PAPER_FIG3`) adds the paper's curves, dashed, in the same colours."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for method in dict.fromkeys(r["method"] for r in rows):
        pts = [(r["setting"], r["pixel_error"]) for r in rows
               if r["experiment"] == experiment and r["method"] == method]  # fmt: skip
        (line,) = ax.plot(*zip(*pts), "o-", ms=3, label=method)
        if paper is not None and method in paper[experiment]:
            ax.plot(paper[experiment]["settings"], paper[experiment][method], "--", color=line.get_color(),
                    lw=1, label=f"{method} (paper)")  # fmt: skip
    ax.set(xlabel=xlabel, ylabel="fraction of incorrect pixels")
    ax.legend(fontsize=6, ncol=2 if paper is not None else 1)
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
    """Figs. 3c, 4 and 5 and the GIFs of a trained ``kvae`` on test frames ``x (batch, T, H, W)``, into ``run_dir``."""
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


@torch.no_grad()
def test_elbo(model, guide, data, device="cpu", particles=4, per_frame=False, batch_size=250):
    """Mean test ELBO per sequence (``per_frame``: divided by the ``T`` frames, as the paper's
    table 1), ``particles`` single-sample estimates averaged, reconstruction at full weight."""
    from pyro.infer import Trace_ELBO

    total = 0.0
    for idx in torch.arange(len(data)).split(batch_size):
        x, u = data.x[idx].to(device), data.u[idx].to(device)
        u = u if u.size(-1) else None
        total += sum(-Trace_ELBO().loss(model, guide, x, u) for _ in range(particles)) / particles
    return total / len(data) / (data.x.shape[1] if per_frame else 1)


def pendulum_table(args):
    """
    Table 1 on the torque-controlled pendulum: test ELBO of the KVAE (CNN and MLP), the
    locally linear DVBF and a deep Markov model, trained on the same data and controls.
    ``--likelihood`` picks the frame likelihood; ``gaussian_learned`` (learned per-pixel
    variance, floor 1e-4) reported per frame is the paper's scale, ``bernoulli`` per sequence
    our earlier one.
    """
    started = time.perf_counter()
    device = "cuda" if args.cuda else "cpu"
    likelihood = args.likelihood or "gaussian_learned"
    per_frame = likelihood == "gaussian_learned"
    run_dir = args.run_dir or f"runs/experiments/pendulum_{likelihood}"
    os.makedirs(run_dir, exist_ok=True)
    data = os.path.abspath(args.data or "data/pendulum.npz")
    train = VideoDataset(data, "train", env="pendulum", seed=args.seed)
    valid = VideoDataset(data, "valid")
    test = VideoDataset(data, "test")
    results, bounds, seconds = {}, {}, {}
    for vae in ("conv", "mlp"):
        config = KVAEConfig(frame_size=16, dim_z=3, dim_u=1, K=2, vae=vae, conv_filters=tuple(args.filters),
                            epochs=args.epochs, kf_update_epochs=min(10, args.epochs // 4), seed=args.seed,
                            device=device, likelihood=likelihood)  # fmt: skip
        trainer = fit_kvae(config, os.path.join(run_dir, f"kvae_{vae}"), train, valid, {"data": data}, args.overwrite)
        name = f"KVAE ({'CNN' if vae == 'conv' else 'MLP'})"
        results[name] = test_elbo(trainer.model.model, trainer.model.guide, test, device, per_frame=per_frame)
        scale = test.x.shape[1] if per_frame else 1
        bounds[name] = trainer.evaluate(test, num_particles=args.iwae_particles) / scale
        seconds[name] = training_seconds(trainer.history)
    for name, cls in (("DVBF", DVBF), ("DMM", DMM)):
        torch.manual_seed(args.seed)
        model = cls(16, 3, 1, likelihood=likelihood)
        path = os.path.join(run_dir, f"{name.lower()}.pt")
        if args.overwrite and os.path.exists(path):
            os.remove(path)
        history = train_sequence_model(model, train, SEQUENCE_MODEL_EPOCHS * args.epochs, lr=3e-3, seed=args.seed,
                                       device=device, checkpoint=path, valid=valid, desc=name)  # fmt: skip
        results[name] = test_elbo(model.model, model.guide, test, device, per_frame=per_frame)
        seconds[name] = training_seconds(history)
    summary = {
        "env": "pendulum",
        "likelihood": likelihood,
        "per_frame": per_frame,
        "epochs": args.epochs,
        "dvbf_dmm_epochs": SEQUENCE_MODEL_EPOCHS * args.epochs,
        "test_elbo": results,
        "iwae_particles": args.iwae_particles,
        "test_iwae_bound": bounds,
        "train_seconds": seconds,
        "paper_test_elbo_per_frame": PAPER_TABLE1,
        **run_info(args, started),
    }
    write_json(os.path.join(run_dir, "results.json"), summary)
    unit = "per frame" if per_frame else "per sequence"
    print(f"test ELBO {unit} ({likelihood})")
    print(f"model        test ELBO  IW bound (K={args.iwae_particles})  paper (per frame, Gaussian)")
    for name, elbo in results.items():
        bound = f"{bounds[name]:9.2f}" if name in bounds else "      n/a"
        print(f"{name:12s} {elbo:9.2f}  {bound}              {PAPER_TABLE1[name]:.2f}")
    print(f"outputs in {os.path.abspath(run_dir)}")
    return summary


def pendulum_markdown(summary) -> str:
    """Table 1 of a pendulum ``summary`` in Markdown; per frame (the paper's scale) with the paper's numbers beside."""
    per_frame = summary["per_frame"]
    k = summary["iwae_particles"]
    unit = "per frame" if per_frame else "per sequence"
    out = [f"| model | test ELBO ({unit}) | importance-weighted bound (K={k}) | train time (s) |"
           + (" paper |" if per_frame else ""), "|---" * (5 if per_frame else 4) + "|"]  # fmt: skip
    for name, elbo in summary["test_elbo"].items():
        bound = summary["test_iwae_bound"].get(name)
        paper = f" {PAPER_TABLE1[name]:.2f} |" if per_frame else ""
        out.append(f"| {name} | {elbo:.2f} | {'n/a' if bound is None else f'{bound:.2f}'} | "
                   f"{summary['train_seconds'][name]:.0f} |{paper}")  # fmt: skip
    return "\n".join(out)


def imputation_heading(summary) -> str:
    """One line on what an imputation ``summary`` was trained on, for how long, and its test ELBO."""
    s = summary
    planned = s.get("kvae_epochs_planned", s["kvae_epochs"])
    epochs = f"{s['kvae_epochs']} of {planned}" if s["kvae_epochs"] < planned else f"{s['kvae_epochs']}"
    text = (f"{s['n_train']} training sequences, {s['settings']['filters'][0]} filters, KVAE {epochs} epochs "
            f"({s['kvae_train_seconds']:.0f} s)")  # fmt: skip
    if s["baselines"]:
        b = next(iter(s["baselines"].values()))
        text += f", baselines {b['autoencoder_epochs']} epochs (auto-encoder) and {b['lstm_epochs']} (LSTM)"
    return text + f"; test ELBO {s['kvae_test_elbo']:.1f}"


def run_all(args):
    """Every experiment of the README; writes ``tables.md`` beside them and copies the figures to ``--docs``."""
    summaries = {}
    base = args.run_dir or "runs/experiments"
    folder = args.data or "data"
    if args.tables_only:  # the finished experiments' results files (an unfinished one is listed as such)
        for name in (*IMPUTATION_ENVS, "box_paper", "pendulum_gaussian_learned", "pendulum_bernoulli"):
            path = os.path.join(base, name, "results.json")
            summaries[name] = json.load(open(path)) if os.path.exists(path) else None
    for env in IMPUTATION_ENVS if not args.tables_only else ():
        sub = argparse.Namespace(**{**vars(args), "env": env, "run_dir": os.path.join(base, env),
                                    "data": os.path.join(folder, f"{env}.npz"), "likelihood": "bernoulli"})  # fmt: skip
        summaries[env] = imputation_experiment(sub)
    if not args.tables_only:  # the KVAE at the paper's settings on the box (its baselines are the box run's)
        paper = {"epochs": args.paper_epochs, "filters": PAPER["filters"], "n_train": None, "likelihood": "bernoulli"}
        sub = argparse.Namespace(**{**vars(args), "env": "box", "run_dir": os.path.join(base, "box_paper"),
                                    "data": os.path.join(folder, "box.npz"), **paper})  # fmt: skip
        imputation_experiment(argparse.Namespace(**{**vars(sub), "stage": "kvae"}))
        summaries["box_paper"] = imputation_experiment(argparse.Namespace(**{**vars(sub), "stage": "evaluate"}))
    for likelihood in ("gaussian_learned", "bernoulli") if not args.tables_only else ():
        sub = argparse.Namespace(**{**vars(args), "env": "pendulum", "likelihood": likelihood,
                                    "epochs": args.pendulum_epochs or args.epochs,
                                    "data": os.path.join(folder, "pendulum.npz"),
                                    "run_dir": os.path.join(base, f"pendulum_{likelihood}")})  # fmt: skip
        summaries[f"pendulum_{likelihood}"] = pendulum_table(sub)
    if args.stage != "all":
        return summaries
    text = [f"# Results of `python -m pyro_kvae.experiments {' '.join(sys.argv[1:])}`"]
    for env in (*IMPUTATION_ENVS, "box_paper"):
        s = summaries[env]
        if s is None:
            text += ["", f"## {env}: not finished"]
            continue
        text += ["", f"## {env}: {imputation_heading(s)}", markdown_tables(s)]
    for likelihood in ("gaussian_learned", "bernoulli"):
        s = summaries[f"pendulum_{likelihood}"]
        text += ["", f"## pendulum, {likelihood}", "", pendulum_markdown(s) if s is not None else "not finished"]
    with open(os.path.join(base, "tables.md"), "w") as f:
        f.write("\n".join(text) + "\n")
    if args.docs:
        os.makedirs(args.docs, exist_ok=True)
        for env in (env for env in (*IMPUTATION_ENVS, "box_paper") if summaries[env] is not None):
            for fig in ("fig3a", "fig3b", "fig5"):
                shutil.copy(os.path.join(base, env, f"{fig}.png"), os.path.join(args.docs, f"{fig}_{env}.png"))
    print(f"tables in {os.path.abspath(os.path.join(base, 'tables.md'))}")
    return summaries


def main(argv=None):
    """``python -m pyro_kvae.experiments``: parses ``argv`` and runs the experiment it names."""
    # subnormal floats appear as training goes on and make a CPU step about twice as slow (measured on a
    # box model after 9 epochs: 1.77 s against 0.89 s per step); flushing them to zero changes nothing else
    torch.set_flush_denormal(True)
    parser = argparse.ArgumentParser(prog="python -m pyro_kvae.experiments", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("env", choices=[*IMPUTATION_ENVS, "pendulum", "all"])
    parser.add_argument(
        "--data",
        help="dataset file (default data/<env>.npz, generated if missing), or your own "
        "videos (a folder of .npy/.npz/.gif/.mp4, a .gif/.mp4, or a .npy (N, T, H, W[, C])); "
        "with 'all': the folder of the <env>.npz files (default data)",
    )
    parser.add_argument(
        "--likelihood", choices=LIKELIHOODS,
        help="frame likelihood (default: bernoulli; pendulum: gaussian_learned, table 1's scale)",
    )  # fmt: skip
    parser.add_argument("--baseline-epochs", type=positive_int,
                        help="epochs of the baselines' auto-encoders (default: --epochs)")  # fmt: skip
    parser.add_argument("--rnn-epochs", type=positive_int, default=100,
                        help="epochs of the baselines' LSTMs (cheap: about 1/15 of a KVAE epoch each)")  # fmt: skip
    parser.add_argument("--authors", nargs="?", const="datasets/authors", metavar="FOLDER",
                        help="the KVAE authors' own data (FOLDER/<env>_{train,test}.npz, default datasets/authors): "
                        "data/authors_<env>.npz is built from it if missing, runs go to experiments/authors_<env>, "
                        "whose committed state a run continues from")  # fmt: skip
    parser.add_argument("--patience", type=positive_int,
                        help="a baseline's auto-encoder stops after this many epochs without a better validation "
                        "error (default: it trains every epoch and keeps the best; the LSTM always does)")  # fmt: skip
    parser.add_argument("--n-train", type=positive_int, help="training sequences (default: all)")
    parser.add_argument("--n-test", type=positive_int, default=1000)
    parser.add_argument("--dynamics", default="lstm", choices=["lstm", "mlp"], help="alpha network (mlp: fig. 4 grid)")
    parser.add_argument("--stage", default="all", choices=["kvae", "baselines", "all", "evaluate"],
                        help="train only the KVAE or only the baselines and stop (long runs in pieces); "
                        "evaluate: no training, the tables and figures of what is trained in --run-dir now "
                        "(the KVAE at its last finished epoch, the baselines whose training finished)")  # fmt: skip
    parser.add_argument("--docs", help="with 'all': copy the README's figures to this folder")
    parser.add_argument("--tables-only", action="store_true",
                        help="with 'all': only write tables.md and copy the figures of finished runs")  # fmt: skip
    parser.add_argument("--pendulum-epochs", type=positive_int,
                        help="with 'all': epochs of the pendulum models (default: --epochs; paper: 80)")  # fmt: skip
    parser.add_argument("--paper-epochs", type=positive_int, default=PAPER["epochs"],
                        help="with 'all': epochs of the paper-settings KVAE on the box (default 80)")  # fmt: skip
    add_common_args(parser)
    args = parser.parse_args(argv)
    if args.cuda and not torch.cuda.is_available():
        parser.error("--cuda given but torch.cuda.is_available() is False")
    if args.paper:
        args.epochs, args.filters, args.n_train = PAPER["epochs"], PAPER["filters"], None
    if args.env == "pendulum":
        if args.stage != "all":
            parser.error("--stage applies to the imputation experiments")
        return pendulum_table(args)
    if args.env == "all":
        return run_all(args)
    args.likelihood = args.likelihood or "bernoulli"
    return imputation_experiment(args)


if __name__ == "__main__":
    main()
