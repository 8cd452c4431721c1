# SPDX-License-Identifier: Apache-2.0
"""
Square-root (Cholesky-factor) Kalman filtering, RTS smoothing and
forward-filter backward-sampling.

Same model and index convention as :mod:`pyro_kvae.ops.kalman`::

    z_1 ~ N(mu0, Sigma0)
    z_t = A_t z_{t-1} + b_t + w_t,   w_t ~ N(0, Q),   t >= 2
    a_t = C_t z_t + v_t,             v_t ~ N(0, R),   only where mask_t

Why a third implementation: the parallel scan of :mod:`pyro_kvae.ops.lgssm`
works in information form, whose precisions square the condition number of
the problem. In float32 it returns log-probabilities that are wrong by orders
of magnitude, without any warning, for ordinary learned models (``Q = 1e-8 I``:
-24947 instead of 6.51; spectral radius 1.05 over ``T = 200``: -7.5e6 instead
of -408). Here every covariance is carried as a lower-triangular factor
``P = S S^T`` and each step is one QR factorisation of a small "array"
(the Kailath-Sayed array algorithms): no covariance is ever formed or
subtracted, so a covariance can never lose definiteness, and float32 results
stay within about 1e-4 relative of an exact (50-digit) reference on those
cases. :class:`~pyro_kvae.distributions.LinearGaussianSSM` uses these routines
whenever it computes in a dtype other than float64. They cost about 2x the
covariance form (QR instead of Cholesky), which is why float64 keeps the latter.
"""

import math
from typing import NamedTuple

import torch

from .checks import broadcast_lgssm, cholesky


def tria(M: torch.Tensor) -> torch.Tensor:
    """
    Lower-triangular ``L (..., n, n)`` with ``L L^T = M M^T`` and a non-negative diagonal,
    for ``M (..., n, m)``, ``m >= n``, by QR of ``M^T`` (differentiable).
    """
    L = torch.linalg.qr(M.mT, mode="reduced").R.mT
    d = L.diagonal(dim1=-2, dim2=-1)
    sign = torch.where(d < 0, -torch.ones_like(d), torch.ones_like(d))
    return L * sign.unsqueeze(-2)


def _mv(M: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (M @ v.unsqueeze(-1)).squeeze(-1)


class SqrtFilterResult(NamedTuple):
    """
    Output of :func:`sqrt_kalman_filter`: predicted moments ``p(z_t | a_{<t})``
    and filtered moments ``p(z_t | a_{<=t})`` as means ``(batch, T, dim_z)`` and
    lower-triangular scale factors ``(batch, T, dim_z, dim_z)`` (``cov = S S^T``),
    ``log_prob (batch,)`` = ``log p(a_obs)`` and its terms ``step_log_prob (batch, T)``.
    """

    pred_mean: torch.Tensor
    pred_scale_tril: torch.Tensor
    filt_mean: torch.Tensor
    filt_scale_tril: torch.Tensor
    log_prob: torch.Tensor
    step_log_prob: torch.Tensor


def sqrt_kalman_filter(a, A, C, Q, R, mu0, Sigma0, b=None, mask=None) -> SqrtFilterResult:
    """
    Square-root Kalman filter; arguments and shapes as :func:`pyro_kvae.ops.kalman.kalman_filter`
    (``a (batch, T, dim_a)``, ``A (batch, T, dim_z, dim_z)``, ``C (batch, T, dim_a, dim_z)``,
    ``Q``, ``R``, ``Sigma0`` covariances, ``mu0 (batch, dim_z)``, ``b (batch, T, dim_z)``,
    ``mask (batch, T)`` bool). Computation is in the dtype of ``A``.

    Each update triangularises ``[[L_R, C S], [0, S]] = [[X, 0], [Y, Z]] Theta``: then
    ``X X^T`` is the innovation covariance, ``Y X^{-1}`` the Kalman gain and ``Z`` the
    filtered factor.
    """
    p = broadcast_lgssm(A, C, Q, R, mu0, Sigma0, b=b, mask=mask, a=a)
    dz, da = p.shape.dim_z, p.shape.dim_a
    L_Q, L_R = cholesky(p.Q, "Q"), cholesky(p.R, "R")
    mean, S = p.mu0, cholesky(p.Sigma0, "Sigma0")
    zeros = L_R.new_zeros(()).expand(p.shape.batch_shape + (dz, da))
    const = 0.5 * da * math.log(2 * math.pi)
    outs = []
    for t in range(p.shape.T):
        if t > 0:
            A_t = p.A[..., t, :, :]
            mean = _mv(A_t, mean) + p.b[..., t, :]
            S = tria(torch.cat([A_t @ S, L_Q], -1))
        C_t = p.C[..., t, :, :]
        post = tria(torch.cat([torch.cat([L_R, C_t @ S], -1), torch.cat([zeros, S], -1)], -2))
        X, Y, Z = post[..., :da, :da], post[..., da:, :da], post[..., da:, da:]
        white = torch.linalg.solve_triangular(X, (p.a[..., t, :] - _mv(C_t, mean)).unsqueeze(-1), upper=False)
        lp = -0.5 * white.pow(2).sum((-2, -1)) - X.diagonal(dim1=-2, dim2=-1).log().sum(-1) - const
        fmean = mean + (Y @ white).squeeze(-1)
        if p.mask is not None:
            m_t = p.mask[..., t]
            fmean = torch.where(m_t.unsqueeze(-1), fmean, mean)
            Z = torch.where(m_t[..., None, None], Z, S)
            lp = torch.where(m_t, lp, lp.new_zeros(()))
        outs.append((mean, S, fmean, Z, lp))
        mean, S = fmean, Z
    pm, ps, fm, fs, lp = zip(*outs)
    lp = torch.stack(lp, -1)
    return SqrtFilterResult(
        torch.stack(pm, -2), torch.stack(ps, -3), torch.stack(fm, -2), torch.stack(fs, -3), lp.sum(-1), lp
    )


class SqrtSmootherResult(NamedTuple):
    """
    Output of :func:`sqrt_rts_smoother`: smoothed ``mean (batch, T, dim_z)`` and
    ``scale_tril (batch, T, dim_z, dim_z)`` of ``p(z_t | a_obs)``, and the backward
    conditionals ``p(z_t | z_{t+1}, a_{<=t}) = N(filt_mean_t + gain_t (z_{t+1} - pred_mean_{t+1}),
    cond_scale_tril_t cond_scale_tril_t^T)`` for ``t < T`` (``gain`` and ``cond_scale_tril``
    ``(batch, T-1, dim_z, dim_z)``), used by :func:`sqrt_posterior_rsample`.
    """

    mean: torch.Tensor
    scale_tril: torch.Tensor
    gain: torch.Tensor
    cond_scale_tril: torch.Tensor


def sqrt_rts_smoother(filtered: SqrtFilterResult, A, Q) -> SqrtSmootherResult:
    """
    Square-root Rauch-Tung-Striebel pass over the output of :func:`sqrt_kalman_filter`.

    :param torch.Tensor A: ``(batch, T, dim_z, dim_z)`` as given to the filter (time dim may be 1).
    :param torch.Tensor Q: ``(batch, dim_z, dim_z)`` transition noise covariance.

    Each step triangularises ``[[A_{t+1} F_t, L_Q], [F_t, 0]] = [[X, 0], [Y, Z]] Theta``:
    ``X X^T`` is the prediction covariance ``P_{t+1}``, ``J_t = Y X^{-1}`` the smoother gain
    and ``Z Z^T = F_t F_t^T - J_t P_{t+1} J_t^T`` the backward conditional covariance.
    """
    fm, fs, pm = filtered.filt_mean, filtered.filt_scale_tril, filtered.pred_mean
    batch, T, dz = fm.shape[:-2], fm.size(-2), fm.size(-1)
    A = A.to(fm.dtype).expand(batch + (T, dz, dz))
    L_Q = cholesky(Q.to(fm.dtype), "Q").expand(batch + (dz, dz))
    zeros = L_Q.new_zeros(()).expand(batch + (dz, dz))
    mean, S = fm[..., -1, :], fs[..., -1, :, :]
    means, scales, gains, conds = [mean], [S], [], []
    for t in range(T - 2, -1, -1):
        F = fs[..., t, :, :]
        pre = torch.cat([torch.cat([A[..., t + 1, :, :] @ F, L_Q], -1), torch.cat([F, zeros], -1)], -2)
        post = tria(pre)
        X, Y, Z = post[..., :dz, :dz], post[..., dz:, :dz], post[..., dz:, dz:]
        J = torch.linalg.solve_triangular(X, Y, upper=False, left=False)  # Y X^{-1}
        mean = fm[..., t, :] + _mv(J, mean - pm[..., t + 1, :])
        S = tria(torch.cat([J @ S, Z], -1))
        means.append(mean)
        scales.append(S)
        gains.append(J)
        conds.append(Z)
    if T > 1:
        gain, cond = torch.stack(gains[::-1], -3), torch.stack(conds[::-1], -3)
    else:
        gain = cond = fm.new_zeros(batch + (0, dz, dz))
    return SqrtSmootherResult(torch.stack(means[::-1], -2), torch.stack(scales[::-1], -3), gain, cond)


def sqrt_posterior_rsample(filtered: SqrtFilterResult, smoothed: SqrtSmootherResult, noise) -> torch.Tensor:
    """
    Joint reparameterised sample ``z_{1:T} ~ p(z | a_obs)`` by backward sampling.

    :param noise: standard normal ``sample_shape + (batch, T, dim_z)`` (zeros give the smoothed mean).
    :returns: ``sample_shape + (batch, T, dim_z)``.
    """
    T = filtered.filt_mean.size(-2)
    z = filtered.filt_mean[..., -1, :] + _mv(filtered.filt_scale_tril[..., -1, :, :], noise[..., -1, :])
    zs = [z]
    for t in range(T - 2, -1, -1):
        mean = filtered.filt_mean[..., t, :] + _mv(smoothed.gain[..., t, :, :], z - filtered.pred_mean[..., t + 1, :])
        z = mean + _mv(smoothed.cond_scale_tril[..., t, :, :], noise[..., t, :])
        zs.append(z)
    return torch.stack(zs[::-1], -2)
