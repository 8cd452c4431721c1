# SPDX-License-Identifier: Apache-2.0
"""
Sequential Kalman filtering and RTS smoothing in covariance form.

Model (paper indexing, time index ``t = 0 .. T-1`` in tensors stands for
``t = 1 .. T`` in the paper)::

    z_1 ~ N(mu0, Sigma0)
    z_t = A_t z_{t-1} + b_t + w_t,   w_t ~ N(0, Q),   t >= 2   (b_t = B_t u_t)
    a_t = C_t z_t + v_t,             v_t ~ N(0, R)

``A[..., 0, :, :]`` and ``b[..., 0, :]`` are never used: slot ``t`` holds the
transition *into* ``z_t``.

These functions loop over time (``O(T)`` depth) and are used where the parallel
routines of :mod:`pyro_kvae.ops.lgssm` do not serve: per-step filtered and
smoothed marginals, and the step-by-step :func:`kalman_predict` /
:func:`kalman_update` interface needed for imputation with a dynamics network in
the loop (paper section 4). The update uses the Joseph form and symmetrises the
covariance, so float32 stays accurate on long sequences.
"""

import math
from typing import NamedTuple

import torch

from .checks import broadcast_lgssm


def _sym(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (x + x.mT)


def _mv(M: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (M @ v.unsqueeze(-1)).squeeze(-1)


def kalman_predict(mean, cov, A, Q, b=None):
    """
    One prediction step ``p(z_{t-1} | .) -> p(z_t | .)``.

    :param torch.Tensor mean: ``(..., dim_z)`` mean of ``z_{t-1}``.
    :param torch.Tensor cov: ``(..., dim_z, dim_z)`` covariance of ``z_{t-1}``.
    :param torch.Tensor A: ``(..., dim_z, dim_z)`` transition matrix ``A_t``.
    :param torch.Tensor Q: ``(..., dim_z, dim_z)`` transition noise covariance.
    :param torch.Tensor b: optional ``(..., dim_z)`` offset ``B_t u_t``.
    :returns: predicted ``(mean, cov)`` of ``z_t``, shapes as above.
    """
    mean = _mv(A, mean)
    if b is not None:
        mean = mean + b
    cov = _sym(A @ cov @ A.mT + Q)
    return mean, cov


def kalman_update(mean, cov, a, C, R, mask=None):
    """
    One measurement update ``p(z_t | a_{<t}) -> p(z_t | a_{<=t})``.

    :param torch.Tensor mean: ``(..., dim_z)`` predicted mean.
    :param torch.Tensor cov: ``(..., dim_z, dim_z)`` predicted covariance.
    :param torch.Tensor a: ``(..., dim_a)`` observation ``a_t`` (any value where masked).
    :param torch.Tensor C: ``(..., dim_a, dim_z)`` emission matrix ``C_t``.
    :param torch.Tensor R: ``(..., dim_a, dim_a)`` emission noise covariance.
    :param torch.Tensor mask: optional bool ``(...)``; where False the step is
        skipped: the prediction is returned and the log-likelihood term is 0.
    :returns: ``(mean, cov, log_prob)`` with the filtered moments and
        ``log p(a_t | a_{<t})`` of shape ``(...)``.
    """
    pred_a = _mv(C, mean)
    if mask is not None:
        a = torch.where(mask.unsqueeze(-1), a, pred_a.detach())
    S = _sym(C @ cov @ C.mT + R)
    L = torch.linalg.cholesky_ex(S).L
    r = a - pred_a
    CP = C @ cov  # (..., dim_a, dim_z)
    K = torch.cholesky_solve(CP, L).mT  # (..., dim_z, dim_a) = P C^T S^-1
    new_mean = mean + _mv(K, r)
    IKC = torch.eye(mean.size(-1), dtype=mean.dtype, device=mean.device) - K @ C
    new_cov = _sym(IKC @ cov @ IKC.mT + K @ R @ K.mT)
    white = torch.linalg.solve_triangular(L, r.unsqueeze(-1), upper=False).squeeze(-1)
    log_prob = (
        -0.5 * white.pow(2).sum(-1)
        - L.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        - 0.5 * a.size(-1) * math.log(2 * math.pi)
    )
    if mask is not None:
        new_mean = torch.where(mask.unsqueeze(-1), new_mean, mean)
        new_cov = torch.where(mask[..., None, None], new_cov, cov)
        log_prob = torch.where(mask, log_prob, log_prob.new_zeros(()))
    return new_mean, new_cov, log_prob


class KalmanFilterResult(NamedTuple):
    """
    Output of :func:`kalman_filter`. ``pred_*`` are the one-step predictions
    ``p(z_t | a_{<t})`` (for ``t = 1`` the prior ``N(mu0, Sigma0)``), ``filt_*``
    the filtered marginals ``p(z_t | a_{<=t})``; means ``(batch, T, dim_z)``,
    covariances ``(batch, T, dim_z, dim_z)``; ``log_prob (batch,)`` is
    ``log p(a_obs)`` and ``step_log_prob (batch, T)`` its per-step terms.
    """

    pred_mean: torch.Tensor
    pred_cov: torch.Tensor
    filt_mean: torch.Tensor
    filt_cov: torch.Tensor
    log_prob: torch.Tensor
    step_log_prob: torch.Tensor


def kalman_filter(a, A, C, Q, R, mu0, Sigma0, b=None, mask=None) -> KalmanFilterResult:
    """
    Sequential Kalman filter over a whole sequence.

    :param torch.Tensor a: ``(batch, T, dim_a)`` encodings; missing steps may hold NaN.
    :param torch.Tensor A: ``(batch, T, dim_z, dim_z)``; slot ``t`` maps ``z_{t-1}`` to ``z_t``, slot 0 unused.
    :param torch.Tensor C: ``(batch, T, dim_a, dim_z)``.
    :param torch.Tensor Q: ``(batch, dim_z, dim_z)``.
    :param torch.Tensor R: ``(batch, dim_a, dim_a)``.
    :param torch.Tensor mu0: ``(batch, dim_z)`` mean of ``z_1``.
    :param torch.Tensor Sigma0: ``(batch, dim_z, dim_z)`` covariance of ``z_1``.
    :param torch.Tensor b: optional ``(batch, T, dim_z)`` transition offsets ``B_t u_t``, slot 0 unused.
    :param torch.Tensor mask: optional bool ``(batch, T)``, True where ``a_t`` is observed.

    Time-varying arguments may have a time dim of 1, and all batch dims broadcast.
    Computation is in the dtype of ``A``.
    """
    p = broadcast_lgssm(A, C, Q, R, mu0, Sigma0, b=b, mask=mask, a=a)
    mean, cov = p.mu0, p.Sigma0
    outs = []
    for t in range(p.shape.T):
        if t > 0:
            mean, cov = kalman_predict(mean, cov, p.A[..., t, :, :], p.Q, p.b[..., t, :])
        m_t = None if p.mask is None else p.mask[..., t]
        fmean, fcov, lp = kalman_update(mean, cov, p.a[..., t, :], p.C[..., t, :, :], p.R, m_t)
        outs.append((mean, cov, fmean, fcov, lp))
        mean, cov = fmean, fcov
    pm, pc, fm, fc, lp = zip(*outs)
    lp = torch.stack(lp, -1)
    return KalmanFilterResult(
        torch.stack(pm, -2), torch.stack(pc, -3), torch.stack(fm, -2), torch.stack(fc, -3), lp.sum(-1), lp
    )


def smoother_gain(filt_cov, pred_cov_next, A_next):
    """
    ``J_t = F_t A_{t+1}^T P_{t+1}^{-1}`` from the filtered covariance ``F_t (..., dim_z, dim_z)``,
    the next prediction's covariance ``P_{t+1}`` and ``A_{t+1}``, all ``(..., dim_z, dim_z)``.
    """
    L = torch.linalg.cholesky_ex(pred_cov_next).L
    return torch.cholesky_solve(A_next @ filt_cov, L).mT


def backward_conditional(filt_mean, filt_cov, pred_mean_next, pred_cov_next, A_next, z_next):
    """
    ``p(z_t | z_{t+1}, a_{<=t}) = N(m_t + J (z_{t+1} - p_{t+1}), F_t - J P_{t+1} J^T)``, the
    backward step of forward-filter backward-sample; ``z_next (..., dim_z)``.

    :returns: ``(mean (..., dim_z), cov (..., dim_z, dim_z))``.
    """
    J = smoother_gain(filt_cov, pred_cov_next, A_next)
    mean = filt_mean + _mv(J, z_next - pred_mean_next)
    return mean, _sym(filt_cov - J @ pred_cov_next @ J.mT)


def rts_smoother(filtered: KalmanFilterResult, A):
    """
    Rauch-Tung-Striebel backward pass.

    :param KalmanFilterResult filtered: output of :func:`kalman_filter`.
    :param torch.Tensor A: transition matrices ``(batch, T, dim_z, dim_z)`` as given to the filter.
    :returns: smoothed ``(mean, cov)`` of ``p(z_t | a_obs)``, shapes
        ``(batch, T, dim_z)`` and ``(batch, T, dim_z, dim_z)``.
    """
    fm, fc, pm, pc = filtered.filt_mean, filtered.filt_cov, filtered.pred_mean, filtered.pred_cov
    T = fm.size(-2)
    A = A.to(fm.dtype).expand(fc.shape[:-3] + (T,) + fc.shape[-2:])
    mean, cov = fm[..., -1, :], fc[..., -1, :, :]
    means, covs = [mean], [cov]
    for t in range(T - 2, -1, -1):
        J = smoother_gain(fc[..., t, :, :], pc[..., t + 1, :, :], A[..., t + 1, :, :])
        mean = fm[..., t, :] + _mv(J, mean - pm[..., t + 1, :])
        cov = _sym(fc[..., t, :, :] + J @ (cov - pc[..., t + 1, :, :]) @ J.mT)
        means.append(mean)
        covs.append(cov)
    return torch.stack(means[::-1], -2), torch.stack(covs[::-1], -3)


def kalman_smoother(a, A, C, Q, R, mu0, Sigma0, b=None, mask=None):
    """
    Filter then smooth; arguments as :func:`kalman_filter`.

    :returns: ``(mean, cov)`` of ``p(z_t | a_obs)`` with shapes ``(batch, T, dim_z)``
        and ``(batch, T, dim_z, dim_z)``.
    """
    filtered = kalman_filter(a, A, C, Q, R, mu0, Sigma0, b=b, mask=mask)
    return rts_smoother(filtered, A)
