# SPDX-License-Identifier: Apache-2.0
"""Figures and GIFs for KVAE runs (matplotlib, headless)."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import animation  # noqa: E402


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
    """Training loss and validation ELBO per epoch from ``Trainer.history``."""
    fig, ax = plt.subplots(1, 2, figsize=(9, 3))
    epochs = [h["epoch"] for h in history]
    ax[0].plot(epochs, [h["train_loss"] for h in history])
    ax[0].set(xlabel="epoch", ylabel="training loss (-ELBO, scaled)", title="training")
    if all("valid_elbo" in h for h in history):
        ax[1].plot(epochs, [h["valid_elbo"] for h in history])
    ax[1].set(xlabel="epoch", ylabel="ELBO per sequence", title="validation")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


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
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


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
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


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
    anim.save(path, writer=animation.PillowWriter(fps=fps))
    plt.close(fig)
