# SPDX-License-Identifier: Apache-2.0
"""The tables and figures of the experiments: Markdown tables, fig. 3a/3b curves, figs. 3c, 4, 5."""

import os

import numpy as np
import torch

from ..evaluation import PAPER_FIG3, PAPER_TABLE1, T_INIT, gap_mask, plot_a_space
from ..imputation import generate, impute
from ..nn import MLPDynamics
from ..train import random_mask


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
    if "pixel_error_held_out" in rows[0]:
        out += ["", held_out_table(summary)]
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


def held_out_table(summary) -> str:
    """The errors of an imputation ``summary`` at :data:`SUMMARY_SETTINGS` on the test videos that
    were not also the validation split (``pixel_error_held_out``), in Markdown."""
    rows, first = summary["rows"], summary["held_out_from"]
    head = f"Test videos {first}.. alone (the first {first} are also the validation split):"
    lines = [head, "", "| method | " + " | ".join(label for *_, label in SUMMARY_SETTINGS) + " |",
             "|---" * (1 + len(SUMMARY_SETTINGS)) + "|"]  # fmt: skip
    for method in dict.fromkeys(r["method"] for r in rows):
        cells = [next((f"{r['pixel_error_held_out']:.4f}" for r in rows
                       if (r["experiment"], r["setting"], r["method"]) == (experiment, setting, method)), "n/a")
                 for experiment, setting, _ in SUMMARY_SETTINGS]  # fmt: skip
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
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


def imputation_heading(summary) -> str:
    """One line on what an imputation ``summary`` was trained on, for how long, and its test ELBO."""
    s = summary
    planned = s.get("kvae_epochs_planned", s["kvae_epochs"])
    epochs = f"{s['kvae_epochs']} of {planned}" if s["kvae_epochs"] < planned else f"{s['kvae_epochs']}"
    text = (f"{s['n_train']} training sequences, {s['settings']['filters'][0]} filters, KVAE {epochs} epochs "
            f"({s['kvae_train_seconds']:.0f} s)")  # fmt: skip
    if s["baselines"]:
        text += ", " + ", ".join(f"{name} {b['autoencoder_epochs']} epochs (auto-encoder) and {b['lstm_epochs']} (LSTM)"
                                 if b.get("autoencoder", "own") == "own" else
                                 f"{name} the KVAE's auto-encoder and {b['lstm_epochs']} LSTM epochs"
                                 for name, b in s["baselines"].items())  # fmt: skip
    return text + f"; test ELBO {s['kvae_test_elbo']:.1f}"


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


def figures(kvae, x, run_dir, position=None, position_names=("true x", "true y")):
    """Figs. 3c, 4 and 5 and the GIFs of a trained ``kvae`` on test frames ``x (batch, T, H, W)``, into
    ``run_dir``. With the positions ``position (batch, T, 2)`` (named ``position_names`` in the
    plot) fig. 3c is the a-space (:func:`~pyro_kvae.evaluation.plot_a_space`) and its affine R^2
    is returned."""
    import matplotlib.pyplot as plt

    from ..plotting import plot_trajectories, save_gif

    r2 = None
    if position is not None and kvae.prior.dim_a >= 2:
        r2 = plot_a_space(kvae, x, position, os.path.join(run_dir, "fig3c.png"),
                          position_names=position_names).tolist()  # fmt: skip
    else:
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
    return r2
