# SPDX-License-Identifier: Apache-2.0
"""Figures and GIFs for KVAE runs (matplotlib, headless)."""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import animation  # noqa: E402


def _save(fig, path, **kwargs):
    """Writes ``fig`` to ``path`` (its folder made if missing) and closes it."""
    _make_folder(path)
    fig.savefig(path, dpi=100, **kwargs)
    plt.close(fig)


def _make_folder(path):
    folder = os.path.dirname(os.fspath(path))
    if folder:
        os.makedirs(folder, exist_ok=True)


def _np(x):
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def _image(frame):
    """A frame ``(H, W)`` or ``(C, H, W)`` as something ``imshow`` draws: grey, or RGB in [0, 1]."""
    frame = _np(frame)
    if frame.ndim == 3:
        frame = np.clip(np.moveaxis(frame, 0, -1), 0, 1)
        if frame.shape[-1] != 3:  # 2 or more than 3 channels: show the first
            frame = frame[..., 0]
    return frame


def plot_training(history, path):
    """Training loss and validation ELBO per epoch from ``Trainer.history``, and where the rows
    have them (:class:`~pyro_kvae.evaluation.ValidationMonitor`) the validation imputation
    error at p = 0.5 and the a-space R^2."""
    epochs = [h["epoch"] for h in history]
    monitored = [k for k in ("valid_p05_error", "valid_r2") if history and all(k in h for h in history)]
    fig, ax = plt.subplots(1, 2 + len(monitored), figsize=(4.5 * (2 + len(monitored)), 3))
    ax[0].plot(epochs, [h["train_loss"] for h in history])
    ax[0].set(xlabel="epoch", ylabel="training loss (-ELBO, scaled)", title="training")
    if all("valid_elbo" in h for h in history):
        ax[1].plot(epochs, [h["valid_elbo"] for h in history])
    ax[1].set(xlabel="epoch", ylabel="ELBO per sequence", title="validation")
    for a, key in zip(ax[2:], monitored):
        values = np.array([h[key] for h in history], dtype=float).reshape(len(history), -1)
        for k in range(values.shape[1]):
            a.plot(epochs, values[:, k], label=f"a[{k}]" if values.shape[1] > 1 else None)
        if key == "valid_r2":
            a.set(xlabel="epoch", ylabel="affine R^2 on the true position", title="a-space (validation)")
            a.legend(fontsize=7)
        else:
            a.set(xlabel="epoch", ylabel="wrong pixels, smoothing", title="imputation at p = 0.5 (validation)")
    fig.tight_layout()
    _save(fig, path)


def plot_imputation(rows, mask, path, titles):
    """
    One sequence per row block: ``rows`` is a list of ``(T, H, W)`` or ``(T, C, H, W)`` frame arrays
    (e.g. truth, filtered, smoothed) drawn one above the other; missing frames
    (``mask (T,)`` False) get a red border.
    """
    T = rows[0].shape[0]
    fig, axes = plt.subplots(len(rows), T, figsize=(T * 0.6, len(rows) * 0.7))
    for r, (frames, title) in enumerate(zip(rows, titles)):
        for t in range(T):
            ax = axes[r, t]
            ax.imshow(_image(frames[t]), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if not bool(mask[t]):
                for spine in ax.spines.values():
                    spine.set_edgecolor("red")
                    spine.set_linewidth(1.5)
        axes[r, 0].set_ylabel(title, rotation=0, ha="right", va="center", fontsize=8)
    _save(fig, path, bbox_inches="tight")


def plot_trajectories(trajectories, mask, path, labels):
    """Paths in ``a``-space (fig. 3c): ``trajectories`` is a list of ``(T, 2)`` arrays."""
    fig, ax = plt.subplots(figsize=(4, 4))
    for a, label in zip(trajectories, labels):
        a = _np(a)
        ax.plot(a[:, 0], a[:, 1], ".-", label=label)
    a0 = _np(trajectories[0])
    m = _np(mask).astype(bool)
    ax.plot(a0[m, 0], a0[m, 1], "ks", mfc="none", ms=7, label="observed")
    ax.plot(a0[0, 0], a0[0, 1], "kh", ms=9, label="start")
    ax.legend(fontsize=7)
    ax.set(xlabel="a[0]", ylabel="a[1]")
    _save(fig, path, bbox_inches="tight")


def save_gif(rows, path, titles, fps=4):
    """Animated GIF with the ``(T, H, W)`` or ``(T, C, H, W)`` frame arrays of ``rows`` side by side."""
    rows = [_np(r) for r in rows]
    fig, axes = plt.subplots(1, len(rows), figsize=(1.6 * len(rows), 1.9))
    images = []
    for ax, frames, title in zip(np.atleast_1d(axes), rows, titles):
        images.append(ax.imshow(_image(frames[0]), cmap="gray", vmin=0, vmax=1))
        ax.set_title(title, fontsize=8)
        ax.axis("off")

    def update(t):
        for im, frames in zip(images, rows):
            im.set_data(_image(frames[t]))
        return images

    anim = animation.FuncAnimation(fig, update, frames=rows[0].shape[0])
    _make_folder(path)
    anim.save(path, writer=animation.PillowWriter(fps=fps))
    plt.close(fig)


def plot_a_space(a, position, trajectories, path, position_names=("true x", "true y")):
    """
    The a-space of a model (first two coordinates): ``a (n, dim_a)`` encodings of many frames
    drawn twice, coloured by each of the true coordinates ``position (n, 2)``, beside
    fig. 3c's trajectories: ``trajectories`` is a list of dicts with ``encoded``,
    ``filtered``, ``smoothed`` ``(T, dim_a)`` arrays and ``mask (T,)`` (True where observed).
    """
    a, position = _np(a), _np(position)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for ax, k in zip(axes[:2], range(2)):
        sc = ax.scatter(a[:, 0], a[:, 1], c=position[:, k], s=2, cmap="viridis")
        fig.colorbar(sc, ax=ax, label=position_names[k])
        ax.set(xlabel="a[0]", ylabel="a[1]", title=f"encodings coloured by the {position_names[k]}")
    ax = axes[2]
    ax.scatter(a[:, 0], a[:, 1], c="0.85", s=1)
    for i, trajectory in enumerate(trajectories):
        colour = f"C{i}"
        m = _np(trajectory["mask"]).astype(bool)
        enc, filt, smooth = (_np(trajectory[k]) for k in ("encoded", "filtered", "smoothed"))
        ax.plot(enc[:, 0], enc[:, 1], ".-", color=colour, lw=1, label="encoded" if i == 0 else None)
        ax.plot(filt[:, 0], filt[:, 1], "x:", color=colour, lw=1, label="filtered" if i == 0 else None)
        ax.plot(smooth[:, 0], smooth[:, 1], "+--", color=colour, lw=1, label="smoothed" if i == 0 else None)
        ax.plot(enc[m, 0], enc[m, 1], "ks", mfc="none", ms=6, label="observed" if i == 0 else None)
    ax.legend(fontsize=7)
    ax.set(xlabel="a[0]", ylabel="a[1]", title="trajectories with a gap (fig. 3c)")
    fig.tight_layout()
    _save(fig, path)
