# SPDX-License-Identifier: Apache-2.0
"""Square-root Kalman filter / smoother / FFBS against independent float64 and 50-digit references."""

import pytest
import torch
from conftest import MASK_KINDS
from lgssm_reference import dense_filtered, dense_posterior, exact_log_prob, textbook_kalman
from test_lgssm import per_seq, problem

from pyro_kvae.distributions import LinearGaussianSSM
from pyro_kvae.ops.sqrt_kalman import sqrt_kalman_filter, sqrt_posterior_rsample, sqrt_rts_smoother, tria

MVN = torch.distributions.MultivariateNormal


def cov(S):
    return S @ S.mT


def test_tria():
    M = torch.randn(5, 3, 7, dtype=torch.float64)
    L = tria(M)
    assert torch.equal(L, L.tril()) and (L.diagonal(dim1=-2, dim2=-1) >= 0).all()
    assert (L @ L.mT - M @ M.mT).abs().max() < 1e-12


@pytest.mark.parametrize("kind", MASK_KINDS)
@pytest.mark.parametrize("T", [1, 4, 7])
def test_filter_and_smoother_match_dense(kind, T):
    a, mask, p = problem(T=T, kind=kind)
    f = sqrt_kalman_filter(a, mask=mask, **p)
    s = sqrt_rts_smoother(f, p["A"], p["Q"])
    assert f.filt_scale_tril.shape == (4, T, 3, 3) and s.scale_tril.shape == (4, T, 3, 3)
    assert s.gain.shape == s.cond_scale_tril.shape == (4, T - 1, 3, 3)
    for i in range(a.shape[0]):
        q = per_seq(p, i)
        ll, pm, pP, *_ = textbook_kalman(a[i].nan_to_num(), mask[i], **q)
        assert abs(f.log_prob[i] - ll) < 1e-8
        assert (f.pred_mean[i] - pm).abs().max() < 1e-8 and (cov(f.pred_scale_tril[i]) - pP).abs().max() < 1e-8
        fm, fP = dense_filtered(a[i], mask[i], **q)
        assert (f.filt_mean[i] - fm).abs().max() < 1e-8 and (cov(f.filt_scale_tril[i]) - fP).abs().max() < 1e-8
        m, S = dense_posterior(a[i], mask[i], **q)
        blocks = torch.stack([S[t * 3 : (t + 1) * 3, t * 3 : (t + 1) * 3] for t in range(T)])
        assert (s.mean[i] - m).abs().max() < 1e-8 and (cov(s.scale_tril[i]) - blocks).abs().max() < 1e-8
    if kind == "stretch":
        assert f.log_prob[-1] == 0  # nothing observed


def test_backward_sampling_gives_exact_joint_posterior():
    """The sampler is z = g(noise), affine: its mean (zero noise) and its Jacobian L (so that
    cov = L L^T) give the dense joint posterior exactly, over all times."""
    T, dz = 5, 3
    a, mask, p = problem(T=T, dz=dz, kind="stretch")
    f = sqrt_kalman_filter(a, mask=mask, **p)
    s = sqrt_rts_smoother(f, p["A"], p["Q"])
    zero = torch.zeros(4, T, dz, dtype=torch.float64)
    mean = sqrt_posterior_rsample(f, s, zero)
    assert (mean - s.mean).abs().max() < 1e-10
    for i in range(4):

        def g(eps):
            noise = zero.clone()
            noise[i] = eps.reshape(T, dz)
            return sqrt_posterior_rsample(f, s, noise)[i].reshape(-1)

        L = torch.autograd.functional.jacobian(g, torch.zeros(T * dz, dtype=torch.float64))
        m, S = dense_posterior(a[i], mask[i], **per_seq(p, i))
        assert (mean[i] - m).abs().max() < 1e-8
        assert (L @ L.T - S).abs().max() < 1e-8


def test_gradcheck():
    a, mask, p = problem(T=4, dz=2, batch=2, kind="stretch")
    a = a.nan_to_num().requires_grad_()
    A, C = p["A"].clone().requires_grad_(), p["C"].clone().requires_grad_()
    L_Q = torch.linalg.cholesky(p["Q"]).requires_grad_()

    def fn(a, A, C, L_Q):
        Q = L_Q @ L_Q.mT
        f = sqrt_kalman_filter(a, A, C, Q, p["R"], p["mu0"], p["Sigma0"], p["b"], mask)
        s = sqrt_rts_smoother(f, A, Q)
        return f.log_prob, s.mean, cov(s.scale_tril)

    assert torch.autograd.gradcheck(fn, (a, A, C, L_Q))


# The ill-conditioned problems of issue 10, where the float32 parallel scan was wrong by 4 orders of magnitude.
ILL_CONDITIONED = {
    "Q=1e-8": dict(q=1e-8),
    "unstable A, T=200": dict(rho=1.05, T=200),
    "Sigma0=1e6": dict(s0=1e6),
    "R=1e-8": dict(r=1e-8),
    "Q=R=1e-8": dict(q=1e-8, r=1e-8),
}


def ill_conditioned(T=50, dz=4, da=2, q=0.08, r=0.03, s0=20.0, rho=None, seed=0):
    """A float32 problem and an observed sequence drawn from it in float64."""
    g = torch.Generator().manual_seed(seed)
    A = torch.eye(dz)
    if rho is not None:
        M = torch.randn(dz, dz, generator=g)
        A = M / torch.linalg.eigvals(M).abs().max() * rho
    p = dict(
        mu0=torch.zeros(dz),
        Sigma0=s0 * torch.eye(dz),
        A=A.expand(T, dz, dz),
        Q=q * torch.eye(dz),
        C=torch.randn(T, da, dz, generator=g),
        R=r * torch.eye(da),
    )
    torch.manual_seed(seed)
    a = LinearGaussianSSM(**{k: v.double() for k, v in p.items()}).sample()
    return a, p


@pytest.mark.parametrize("case", ILL_CONDITIONED)
def test_float32_stays_accurate_when_ill_conditioned(case):
    a, p = ill_conditioned(**ILL_CONDITIONED[case])
    exact = exact_log_prob(a, **p)
    lp32 = LinearGaussianSSM(**p, compute_dtype=None).log_prob(a.float())
    assert lp32.dtype == torch.float32
    assert abs(lp32.item() - exact) / abs(exact) < 1e-3
    lp64 = LinearGaussianSSM(**p).log_prob(a.float())  # float32 in, float64 inside
    assert abs(lp64.item() - exact) / abs(exact) < 1e-3
    # filter() and smooth() with float32 inputs return valid distributions (validation on)
    d64 = LinearGaussianSSM(**{k: v.double() for k, v in p.items()})
    for compute_dtype in (torch.float64, None):
        d32 = LinearGaussianSSM(**p, compute_dtype=compute_dtype)
        for method in ("filter", "smooth"):
            q32, q64 = getattr(d32, method)(a.float()), getattr(d64, method)(a)
            assert q32.mean.dtype == torch.float32 and torch.isfinite(q32.scale_tril).all()
            err = (q32.mean.double() - q64.mean).abs().max() / q64.mean.abs().max()
            assert err < 1e-3, (method, compute_dtype, err)
        z = d32.rsample_posterior(a.float(), (3,))
        assert z.shape == (3,) + a.shape[:-1] + (4,) and torch.isfinite(z).all()
