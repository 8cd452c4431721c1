# SPDX-License-Identifier: Apache-2.0
"""
The evaluation protocol of the paper's experiments and the diagnostics of a trained KVAE.

The protocol (section 5.1, appendix E, the authors' evaluation code):

* the first :data:`T_INIT` = 4 frames of a test sequence are observed; later frames are dropped
  at random with probability ``p`` in :data:`DROP_PROBS` (fig. 3a, :func:`~pyro_kvae.train.random_mask`;
  ``p = 1`` is pure generation) or in a gap of :data:`GAPS` frames right after them (fig. 3b,
  :func:`gap_mask`, the authors' ``mask_impute_planning`` placement);
* the metric is the fraction of wrong pixels on the unobserved frames
  (:func:`~pyro_kvae.imputation.pixel_error`), tabulated by :func:`imputation_table`;
* the paper's values: :data:`PAPER_FIG3` (read off its fig. 3) and :data:`PAPER_TABLE1`.

What a trained model has learned, measured on held-out videos:

* :func:`a_space_r2`: how well an affine function of the true object position explains
  each coordinate of the encodings ``a_t`` (1 for an a-space that is a linear image of
  the position, as in the paper's fig. 3c; a folded or torn a-space scores far lower).
* :func:`plot_a_space`: the encodings of many frames coloured by the true x and y, beside
  fig. 3c's encoded, filtered and smoothed trajectories of a few sequences with a gap.
* :class:`ValidationMonitor`: after every training epoch, the validation imputation error
  at drop probability 0.5 (needs no positions, so it works on your own videos) and, where
  positions are known, the R^2; :class:`~pyro_kvae.train.Trainer` logs what it returns.
"""

from typing import Dict, Optional

import torch

from .imputation import impute, pixel_error
from .train import random_mask

#: frames observed at the start of every test sequence
T_INIT = 4
DROP_PROBS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
GAPS = (1, 3, 5, 7, 9, 11, 13, 15)  # the paper's fig. 3b
#: the drop probability of the per-epoch check (:class:`ValidationMonitor`)
MONITOR_DROP_PROB = 0.5

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


def _check_positions(x: torch.Tensor, position, frame_dims: int) -> torch.Tensor:
    if position is None:
        raise ValueError(
            "position is None: these videos carry no true positions (the authors' files give them as 'state', "
            "generated datasets as 'position'); the a-space R^2 needs position (batch, T, 2)"
        )
    if not isinstance(position, torch.Tensor):
        raise TypeError(f"position must be a tensor (batch, T, dims), got {type(position).__name__}")
    batch = tuple(x.shape[: x.dim() - frame_dims])
    if position.dim() != 3 or tuple(position.shape[:2]) != batch or position.size(-1) < 1:
        raise ValueError(
            f"position must have shape (batch, T, dims) = {batch + ('dims',)} to match the videos x "
            f"{tuple(x.shape)}, got {tuple(position.shape)}"
        )
    return position


@torch.no_grad()
def encode_means(kvae, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """The encoder means ``a (batch, T, dim_a)`` of the frames ``x (batch, T, *frame_shape)``."""
    kvae.check_inputs(x)
    device = kvae.prior.A.device
    return torch.cat([kvae.encoder(xb.to(device))[0].cpu() for xb in x.split(batch_size)])


@torch.no_grad()
def affine_r2(a: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """
    ``R^2`` of the least-squares fit of each coordinate of ``a (..., dim_a)`` by an affine
    function of ``position (..., dims)``: ``(dim_a,)``, in float64. 1 means ``a`` is an
    affine image of the position; a coordinate that does not vary gets 0. Rows whose position
    is not finite (unknown: NaN) are left out.
    """
    a = a.reshape(-1, a.size(-1)).double().cpu()
    P = position.reshape(-1, position.size(-1)).double().cpu()
    known = torch.isfinite(P).all(-1)
    a, P = a[known], P[known]
    X = torch.cat([P, torch.ones(len(P), 1, dtype=P.dtype)], 1)
    residual = a - X @ torch.linalg.lstsq(X, a).solution
    var = a.var(0)
    return torch.where(var > 0, 1 - residual.var(0) / var.clamp(min=1e-300), torch.zeros_like(var))


def a_space_r2(kvae, x: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """
    Affine ``R^2`` of the encodings of the frames ``x (batch, T, *frame_shape)`` on the true
    object positions ``position (batch, T, dims)`` (NaN where unknown; :func:`affine_r2`): ``(dim_a,)`` float64.

    :raises ValueError: if ``position`` is None or does not match the videos' ``(batch, T)``.
    """
    position = _check_positions(x, position, len(kvae.frame_shape))
    return affine_r2(encode_means(kvae, x), position)


class ValidationMonitor:
    """
    Called with the model after each training epoch; returns ``{"valid_p05_error": e}``, the
    fraction of wrong pixels when the RTS smoother imputes the frames dropped at random with
    probability 0.5 after the first 4 (one fixed mask, seeded; absent for sequences too short
    to drop any), and with ``position`` also
    ``{"valid_r2": [r2_0, ...]}`` (:func:`a_space_r2`).

    A model whose a-space folds shows it here within a few epochs (on the authors' box:
    about 0.025 against 0.017 for one that does not), without positions.

    :param x: validation frames ``(batch, T, *frame_shape)`` (a few hundred sequences suffice).
    :param position: their true positions ``(batch, T, dims)``, or None.
    :param u: their controls ``(batch, T, dim_u)``, or None.
    :param int seed: seeds the mask.
    """

    def __init__(self, x: torch.Tensor, position: Optional[torch.Tensor] = None, u=None, seed: int = 5):
        if not isinstance(x, torch.Tensor) or x.dim() < 4:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be validation frames (batch, T, *frame_shape), got {got}")
        if position is not None:
            _check_positions(x, position, x.dim() - 2)
        self.x, self.position, self.u = x, position, u
        self.mask = random_mask(x.shape[:2], MONITOR_DROP_PROB, T_INIT, torch.Generator().manual_seed(seed))

    @classmethod
    def from_dataset(cls, data, n: int = 300) -> Optional["ValidationMonitor"]:
        """The monitor of the first ``n`` sequences of a :class:`~pyro_kvae.data.VideoDataset` (its
        ``position`` and controls where it has them); None for no data."""
        if data is None or len(data) == 0:
            return None
        data = data.take(n)
        return cls(data.x, data.tensors.get("position"), data.u if data.u.size(-1) else None)

    @torch.no_grad()
    def __call__(self, kvae) -> Dict[str, object]:
        was_training = kvae.training
        kvae.eval()
        device = kvae.prior.A.device
        try:
            x, mask = self.x.to(device), self.mask.to(device)
            u = None if self.u is None else self.u.to(device)
            out = {}
            if not mask.all():  # sequences of at most T_INIT frames have nothing to impute
                out["valid_p05_error"] = pixel_error(impute(kvae, x, mask, u).x, x, mask).item()
            if self.position is not None:
                out["valid_r2"] = [round(v, 4) for v in a_space_r2(kvae, self.x, self.position).tolist()]
        finally:
            kvae.train(was_training)
        return out


def gap_mask(shape, gap: int, start: int = T_INIT) -> torch.Tensor:
    """Bool mask ``shape = (batch, T)``: frames ``start .. start + gap - 1`` missing (the authors'
    fig. 3b placement, ``mask_impute_planning``: the gap starts after the first 4 frames)."""
    if isinstance(gap, bool) or not isinstance(gap, int) or not 0 <= gap or start + gap > shape[1]:
        raise ValueError(f"gap must be an int with start + gap <= T = {shape[1]} (start {start}), got {gap!r}")
    mask = torch.ones(shape, dtype=torch.bool)
    mask[:, start : start + gap] = False
    return mask


@torch.no_grad()
def plot_a_space(
    kvae,
    x: torch.Tensor,
    position: torch.Tensor,
    path: str,
    trajectories: int = 3,
    gap: int = 9,
    frames: int = 4000,
    u=None,
    position_names=("true x", "true y"),
) -> torch.Tensor:
    """
    Draws the a-space of ``kvae`` into ``path``: the encodings of up to ``frames`` frames of the
    videos ``x (batch, T, *frame_shape)`` coloured by the true x and by the true y of
    ``position (batch, T, 2)``, beside the encoded, filtered and smoothed trajectories of the
    first ``trajectories`` sequences with ``gap`` frames missing after the first 4 (fig. 3c);
    ``position_names`` label the two colourings (e.g. ``("estimated x", "estimated y")``).
    Returns the a-space's :func:`affine_r2` over those frames, ``(dim_a,)``.

    :raises ValueError: if ``position`` is None or does not match the videos' ``(batch, T)``.
    """
    from .plotting import plot_a_space as draw

    position = _check_positions(x, position, len(kvae.frame_shape))
    if position.size(-1) < 2 or kvae.prior.dim_a < 2:
        raise ValueError(
            f"plot_a_space draws 2-d positions and a; got position {tuple(position.shape)}, dim_a {kvae.prior.dim_a}"
        )
    n = max(1, min(len(x), frames // x.shape[1]))
    a = encode_means(kvae, x[:n], batch_size=500)
    device = kvae.prior.A.device
    xs = x[:trajectories].to(device)
    us = None if u is None else u[:trajectories].to(device)
    mask = gap_mask(xs.shape[:2], min(gap, x.shape[1] - T_INIT)).to(device)
    filtered = impute(kvae, xs, mask, us, smooth=False)
    smoothed = impute(kvae, xs, mask, us)
    paths = [
        {"encoded": a[i], "filtered": filtered.a[i], "smoothed": smoothed.a[i], "mask": mask[i]} for i in range(len(xs))
    ]
    a, known = a.flatten(0, 1), torch.isfinite(position[:n]).all(-1).flatten()
    draw(a[known], position[:n].flatten(0, 1)[known], paths, path, position_names)
    return affine_r2(a, position[:n].flatten(0, 1))


def imputation_table(methods, x, seed=0, probs=DROP_PROBS, gaps=GAPS, held_out=None):
    """
    Rows ``{"experiment", "setting", "method", "pixel_error"}`` for every method
    ``name -> fn(x, mask) -> frames`` on both mask families (same masks for all methods), over
    the videos ``x (batch, T, *frame_shape)``.

    :param int held_out: with an int ``n``, each row also has ``"pixel_error_held_out"``: the
        error on the videos ``x[n:]`` alone (e.g. the test videos that were not also the
        validation split, when that split is the first ``n`` test videos).
    """
    if held_out is not None and (isinstance(held_out, bool) or not isinstance(held_out, int)
                                 or not 0 <= held_out < len(x)):  # fmt: skip
        raise ValueError(f"held_out must be an int in [0, {len(x)}) (the first held-out video), got {held_out!r}")
    g = torch.Generator().manual_seed(seed)
    settings = [("missing_at_random", p, random_mask(x.shape[:2], p, T_INIT, g)) for p in probs]
    settings += [("missing_in_middle", k, gap_mask(x.shape[:2], k)) for k in gaps if T_INIT + k <= x.shape[1]]
    rows = []
    for experiment, setting, mask in settings:
        mask = mask.to(x.device)
        for name, fn in methods.items():
            x_hat = fn(x, mask)
            row = {"experiment": experiment, "setting": setting, "method": name,
                   "pixel_error": pixel_error(x_hat, x, mask).item()}  # fmt: skip
            if held_out is not None:
                n = held_out
                row["pixel_error_held_out"] = pixel_error(x_hat[n:], x[n:], mask[n:]).item()
            rows.append(row)
    return rows


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
