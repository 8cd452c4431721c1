# SPDX-License-Identifier: Apache-2.0
"""
Missing-frame imputation and generation with a trained KVAE (paper section 4).

Observed frames are encoded (encoder means); the dynamics network runs inside
the Kalman filter, fed the estimate ``a_hat_t = C_t E[z_t | a_<t]`` where a
frame is missing (eqs. 11-12); then either the filtered or the RTS-smoothed
state gives ``a_t = C_t E[z_t | .]`` for every missing step, and the decoder
turns it into a frame.
"""

from typing import NamedTuple

import torch

from .ops.kalman import rts_smoother


class Imputation(NamedTuple):
    """
    ``a (batch, T, dim_a)``: observed encodings where ``mask`` is True, estimates elsewhere;
    ``x (batch, T, H, W)``: decoded frames (Bernoulli or Gaussian means);
    ``alpha (batch, T, K)``: the mixture weights used;
    ``z_mean (batch, T, dim_z)``, ``z_cov (batch, T, dim_z, dim_z)``: filtered or smoothed states.
    """

    a: torch.Tensor
    x: torch.Tensor
    alpha: torch.Tensor
    z_mean: torch.Tensor
    z_cov: torch.Tensor


@torch.no_grad()
def impute(kvae, x, mask=None, u=None, smooth: bool = True, sample: bool = False) -> Imputation:
    """
    Imputes the frames of ``x (batch, T, H, W)`` where ``mask (batch, T)`` is False
    (``mask=None``: nothing missing; returns the encodings and reconstructions).

    :param bool smooth: use the RTS-smoothed states (past and future frames) rather than
        the filtered ones (past frames only).
    :param bool sample: feed the dynamics network sampled estimates ``a_hat_t`` (eq. 12)
        instead of predicted means.
    """
    x, u, mask = kvae.check_inputs(x, u, mask)
    if mask is None:
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    a_obs, _ = kvae.encoder(x)
    prior = kvae.prior
    r = prior.filter(a_obs, mask, u, sample=sample)
    A, _, C = prior.mix(r.alpha)
    if smooth:
        z_mean, z_cov = rts_smoother(r.filtered, A)
    else:
        z_mean, z_cov = r.filtered.filt_mean, r.filtered.filt_cov
    z_mean, z_cov = z_mean.to(x.dtype), z_cov.to(x.dtype)  # the filter computes in float64
    a_est = (C @ z_mean.unsqueeze(-1)).squeeze(-1)
    a = torch.where(mask.unsqueeze(-1), a_obs, a_est)
    x_hat = kvae.frame_distribution(kvae.decoder(a)).mean
    return Imputation(a, x_hat, r.alpha, z_mean, z_cov)


def generate(kvae, x_init, T: int, u=None) -> Imputation:
    """
    Observes the frames ``x_init (batch, T0, H, W)`` and rolls the model forward in
    latent space to ``T`` frames in all (``u (batch, T, dim_u)`` if the model has controls).
    """
    frames = ", ".join(str(n) for n in kvae.frame_shape)
    if not isinstance(x_init, torch.Tensor) or x_init.shape[2:] != kvae.frame_shape or x_init.dim() < 3:
        got = tuple(x_init.shape) if isinstance(x_init, torch.Tensor) else type(x_init).__name__
        raise ValueError(f"x_init must be a tensor of frames (batch, T0, {frames}), got {got}")
    if isinstance(T, bool) or not isinstance(T, int):
        raise TypeError(f"T must be an int (frames in all), got {type(T).__name__}")
    N, T0 = x_init.shape[:2]
    if T < T0:
        raise ValueError(f"T must be at least the {T0} observed frames, got {T}")
    x = torch.cat([x_init, x_init.new_zeros((N, T - T0) + x_init.shape[2:])], 1)
    mask = torch.zeros(N, T, dtype=torch.bool, device=x.device)
    mask[:, :T0] = True
    return impute(kvae, x, mask, u, smooth=False)


def pixel_error(x_hat, x, mask) -> torch.Tensor:
    """
    Fraction of incorrectly guessed pixels on unobserved frames: ``x_hat (batch, T, H, W)``
    thresholded at 0.5 against binary ``x``; averaged over the frames where ``mask`` is False.
    Returns a scalar tensor (NaN if no frame is missing).
    """
    wrong = ((x_hat > 0.5) != (x > 0.5)).float().flatten(2).mean(-1)  # (batch, T)
    missing = ~mask
    return wrong[missing].mean()
