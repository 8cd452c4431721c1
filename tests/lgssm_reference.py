# SPDX-License-Identifier: Apache-2.0
"""
Independent float64 references for LGSSM inference, written without any
pyro_kvae code: a dense joint Gaussian over all z and a (small T) and a
textbook sequential Kalman filter / RTS smoother using explicit inverses.
All work on a single sequence (no batch dims); tests loop over the batch.
"""

import math

import torch


def random_lgssm(batch=(3,), T=6, dz=3, da=2, seed=0, dtype=torch.float64, stable=True):
    """Random well-posed time-varying problem; returns a dict of tensors."""
    g = torch.Generator().manual_seed(seed)

    def rn(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype)

    def spd(*shape, n, scale=1.0):
        M = rn(*shape, n, n)
        return scale * (M @ M.mT / n + 0.5 * torch.eye(n, dtype=dtype))

    A = torch.eye(dz, dtype=dtype) + (0.3 if stable else 0.5) * rn(*batch, T, dz, dz) / math.sqrt(dz)
    return dict(
        A=A,
        C=rn(*batch, T, da, dz),
        Q=spd(*batch, n=dz, scale=0.3),
        R=spd(*batch, n=da, scale=0.2),
        mu0=rn(*batch, dz),
        Sigma0=spd(*batch, n=dz, scale=2.0),
        b=0.3 * rn(*batch, T, dz),
        a=rn(*batch, T, da),
    )


def dense_joint(A, C, Q, R, mu0, Sigma0, b):
    """Mean and covariance of z (T*dz) and of a (T*da), plus Cov(a, z), for one sequence."""
    T, dz = A.shape[0], A.shape[-1]
    da = C.shape[-2]
    mz = torch.zeros(T, dz, dtype=A.dtype)
    Szz = torch.zeros(T * dz, T * dz, dtype=A.dtype)
    mz[0] = mu0
    Szz[:dz, :dz] = Sigma0
    for t in range(1, T):
        mz[t] = A[t] @ mz[t - 1] + b[t]
        sl, prev = slice(t * dz, (t + 1) * dz), slice((t - 1) * dz, t * dz)
        # Cov(z_t, z_s) = A_t Cov(z_{t-1}, z_s) for s < t
        Szz[sl, : t * dz] = A[t] @ Szz[prev, : t * dz]
        Szz[: t * dz, sl] = Szz[sl, : t * dz].T
        Szz[sl, sl] = A[t] @ Szz[prev, prev] @ A[t].T + Q
    Cbig = torch.block_diag(*C)
    ma = (Cbig @ mz.reshape(-1)).reshape(T, da)
    Saa = Cbig @ Szz @ Cbig.T + torch.block_diag(*([R] * T))
    Saz = Cbig @ Szz
    return mz.reshape(-1), Szz, ma.reshape(-1), Saa, Saz


def dense_log_prob(a, mask, **p):
    """log p(a_obs) for one sequence; mask (T,) bool."""
    _, _, ma, Saa, _ = dense_joint(**p)
    da = a.shape[-1]
    idx = mask.repeat_interleave(da)
    if not idx.any():
        return torch.zeros((), dtype=a.dtype)
    d = torch.distributions.MultivariateNormal(ma[idx], Saa[idx][:, idx])
    return d.log_prob(a.reshape(-1)[idx])


def dense_posterior(a, mask, **p):
    """Mean (T, dz) and full covariance (T*dz, T*dz) of z | a_obs for one sequence."""
    mz, Szz, ma, Saa, Saz = dense_joint(**p)
    T, da = a.shape
    dz = mz.numel() // T
    idx = mask.repeat_interleave(da)
    if not idx.any():
        return mz.reshape(T, dz), Szz
    K = Saz[idx].T @ torch.linalg.inv(Saa[idx][:, idx])
    mean = mz + K @ (a.reshape(-1)[idx] - ma[idx])
    cov = Szz - K @ Saz[idx]
    return mean.reshape(T, dz), cov


def dense_filtered(a, mask, **p):
    """Filtered means (T, dz) and covariances (T, dz, dz) by conditioning on a prefix."""
    T, dz = a.shape[0], p["A"].shape[-1]
    means, covs = [], []
    for t in range(T):
        m = mask.clone()
        m[t + 1 :] = False
        mean, cov = dense_posterior(a, m, **p)
        means.append(mean[t])
        covs.append(cov[t * dz : (t + 1) * dz, t * dz : (t + 1) * dz])
    return torch.stack(means), torch.stack(covs)


def textbook_kalman(a, mask, A, C, Q, R, mu0, Sigma0, b):
    """Plain sequential KF + RTS for one sequence with explicit inverses.

    Returns (log_prob, pred_means, pred_covs, filt_means, filt_covs, smooth_means, smooth_covs).
    """
    T, dz = A.shape[0], A.shape[-1]
    I = torch.eye(dz, dtype=A.dtype)
    m, P = mu0, Sigma0
    ll = torch.zeros((), dtype=A.dtype)
    pm, pP, fm, fP = [], [], [], []
    for t in range(T):
        if t > 0:
            m = A[t] @ m + b[t]
            P = A[t] @ P @ A[t].T + Q
        pm.append(m)
        pP.append(P)
        if mask[t]:
            S = C[t] @ P @ C[t].T + R
            K = P @ C[t].T @ torch.linalg.inv(S)
            r = a[t] - C[t] @ m
            ll = ll + torch.distributions.MultivariateNormal(torch.zeros_like(r), S).log_prob(r)
            m = m + K @ r
            P = (I - K @ C[t]) @ P
        fm.append(m)
        fP.append(P)
    sm, sP = [fm[-1]], [fP[-1]]
    for t in range(T - 2, -1, -1):
        J = fP[t] @ A[t + 1].T @ torch.linalg.inv(pP[t + 1])
        sm.insert(0, fm[t] + J @ (sm[0] - pm[t + 1]))
        sP.insert(0, fP[t] + J @ (sP[0] - pP[t + 1]) @ J.T)
    st = torch.stack
    return ll, st(pm), st(pP), st(fm), st(fP), st(sm), st(sP)


def exact_log_prob(a, A, C, Q, R, mu0, Sigma0, digits=50):
    """log p(a) for one fully observed sequence by a textbook Kalman filter in ``digits``-digit
    arithmetic (mpmath): the reference for ill-conditioned problems, where even float64
    loses digits. Inputs are converted exactly from their float values."""
    import mpmath

    mp = mpmath.mp.clone() if hasattr(mpmath.mp, "clone") else mpmath.mp
    mp.dps = digits

    def M(x):
        return mp.matrix(x.double().tolist()) if x.dim() else mp.mpf(float(x))

    m, P, Qm, Rm = M(mu0.unsqueeze(-1)), M(Sigma0), M(Q), M(R)
    ll = mp.mpf(0)
    for t in range(a.shape[0]):
        if t > 0:
            At = M(A[t])
            m, P = At * m, At * P * At.T + Qm
        Ct = M(C[t])
        S = Ct * P * Ct.T + Rm
        r = M(a[t].unsqueeze(-1)) - Ct * m
        Si = S**-1
        ll += -(r.T * Si * r)[0] / 2 - mp.log(mp.det(S)) / 2 - a.shape[1] * mp.log(2 * mp.pi) / 2
        K = P * Ct.T * Si
        m, P = m + K * r, P - K * S * K.T
    return float(ll)
