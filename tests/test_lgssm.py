# SPDX-License-Identifier: Apache-2.0
"""Parallel-scan LGSSM ops against independent float64 references."""

import math

import pytest
import torch
from conftest import MASK_KINDS, make_mask
from lgssm_reference import dense_log_prob, dense_posterior, random_lgssm, textbook_kalman

from pyro_kvae.distributions import LinearGaussianSSM
from pyro_kvae.ops.lgssm import lgssm_log_prob, lgssm_posterior_rsample, lgssm_prior_rsample

KEYS = ("A", "C", "Q", "R", "mu0", "Sigma0", "b")


def problem(T=6, dz=3, da=2, batch=4, kind="random", seed=0):
    p = random_lgssm(batch=(batch,), T=T, dz=dz, da=da, seed=seed)
    mask = make_mask(kind, batch, T, seed)
    a = p.pop("a").masked_fill(~mask.unsqueeze(-1), float("nan"))
    return a, mask, p


def per_seq(p, i):
    return {k: p[k][i] for k in KEYS}


@pytest.mark.parametrize("kind", MASK_KINDS)
@pytest.mark.parametrize("T", [1, 2, 5, 8])
def test_log_prob_matches_dense(kind, T):
    a, mask, p = problem(T=T, kind=kind)
    actual = lgssm_log_prob(a, mask=mask, **p)
    for i in range(a.shape[0]):
        expected = dense_log_prob(a[i], mask[i], **per_seq(p, i))
        assert abs(actual[i] - expected) < 1e-8
        ll = textbook_kalman(a[i].nan_to_num(), mask[i], **per_seq(p, i))[0]
        assert abs(actual[i] - ll) < 1e-8
    if kind == "stretch":
        assert abs(actual[-1]) < 1e-12  # nothing observed: log p = log 1


@pytest.mark.parametrize("kind", MASK_KINDS)
@pytest.mark.parametrize("T", [1, 3, 8])
def test_posterior_mean_matches_dense(kind, T):
    a, mask, p = problem(T=T, kind=kind)
    zero = torch.zeros(a.shape[0], T, 3, dtype=a.dtype)
    mean = lgssm_posterior_rsample(a, mask=mask, noise=zero, **p)
    for i in range(a.shape[0]):
        expected, _ = dense_posterior(a[i], mask[i], **per_seq(p, i))
        assert (mean[i] - expected).abs().max() < 1e-8


def test_posterior_samples_match_joint_moments():
    T, dz, N = 5, 2, 20000
    a, mask, p = problem(T=T, dz=dz, batch=2, kind="stretch", seed=3)
    z = lgssm_posterior_rsample(a, mask=mask, sample_shape=(N,), **p)
    assert z.shape == (N, 2, T, dz)
    for i in range(2):
        mean, cov = dense_posterior(a[i], mask[i], **per_seq(p, i))
        flat = z[:, i].reshape(N, -1)
        # sample mean: standard error sqrt(var / N); five standard errors
        se = (cov.diagonal() / N).sqrt()
        assert ((flat.mean(0) - mean.reshape(-1)).abs() < 5 * se).all()
        # full joint covariance (all times, all lags): se of a sample covariance
        emp = torch.cov(flat.T)
        se_cov = ((cov.diagonal()[:, None] * cov.diagonal()[None, :] + cov**2) / N).sqrt()
        assert ((emp - cov).abs() < 5 * se_cov).all()


def test_prior_rsample_moments():
    T, N = 4, 20000
    p = random_lgssm(batch=(1,), T=T, dz=2, da=2, seed=1)
    p.pop("a")
    z, a = lgssm_prior_rsample(sample_shape=(N,), **p)
    assert z.shape == (N, 1, T, 2) and a.shape == (N, 1, T, 2)
    from lgssm_reference import dense_joint

    mz, Szz, ma, Saa, _ = dense_joint(**per_seq(p, 0))
    flat = a[:, 0].reshape(N, -1)
    se = (Saa.diagonal() / N).sqrt()
    assert ((flat.mean(0) - ma).abs() < 5 * se).all()
    se_cov = ((Saa.diagonal()[:, None] * Saa.diagonal()[None, :] + Saa**2) / N).sqrt()
    assert ((torch.cov(flat.T) - Saa).abs() < 5 * se_cov).all()


def test_duration_for_homogeneous_prior():
    p = random_lgssm(batch=(), T=1, dz=2, da=2)
    p.pop("a")
    z, a = lgssm_prior_rsample(duration=7, sample_shape=(3,), **p)
    assert z.shape == (3, 7, 2) and a.shape == (3, 7, 2)


def test_gradcheck_log_prob():
    a, mask, p = problem(T=4, dz=2, batch=2, kind="stretch")
    a = a.nan_to_num().requires_grad_()
    A, C, b, mu0 = (p[k].clone().requires_grad_() for k in ("A", "C", "b", "mu0"))

    def fn(a, A, C, b, mu0):
        return lgssm_log_prob(a, A, C, p["Q"], p["R"], mu0, p["Sigma0"], b=b, mask=mask)

    assert torch.autograd.gradcheck(fn, (a, A, C, b, mu0))


def test_gradcheck_log_prob_covariances():
    a, mask, p = problem(T=3, dz=2, batch=1, kind="random")
    a = a.nan_to_num()
    Lq, Lr, Ls = (torch.linalg.cholesky(p[k]).requires_grad_() for k in ("Q", "R", "Sigma0"))

    def fn(Lq, Lr, Ls):
        return lgssm_log_prob(a, p["A"], p["C"], Lq @ Lq.mT, Lr @ Lr.mT, p["mu0"], Ls @ Ls.mT, b=p["b"], mask=mask)

    assert torch.autograd.gradcheck(fn, (Lq, Lr, Ls))


def test_gradcheck_posterior_sample_fixed_noise():
    a, mask, p = problem(T=4, dz=2, batch=2, kind="random")
    a = a.nan_to_num().requires_grad_()
    A, C = p["A"].clone().requires_grad_(), p["C"].clone().requires_grad_()
    noise = torch.randn(3, 2, 4, 2, dtype=torch.float64)

    def fn(a, A, C):
        return lgssm_posterior_rsample(
            a, A, C, p["Q"], p["R"], p["mu0"], p["Sigma0"], b=p["b"], mask=mask, sample_shape=(3,), noise=noise
        )

    assert torch.autograd.gradcheck(fn, (a, A, C))


def test_log_prob_gradient_matches_textbook():
    a, mask, p = problem(T=6, dz=3, batch=2, kind="stretch")
    a = a.nan_to_num()
    A = p["A"].clone().requires_grad_()
    (g,) = torch.autograd.grad(
        lgssm_log_prob(a, A, p["C"], p["Q"], p["R"], p["mu0"], p["Sigma0"], p["b"], mask).sum(), A
    )
    A2 = p["A"].clone().requires_grad_()
    q = dict(p, A=A2)
    ll = sum(textbook_kalman(a[i], mask[i], **per_seq(q, i))[0] for i in range(2))
    (g2,) = torch.autograd.grad(ll, A2)
    assert (g - g2).abs().max() < 1e-8


def test_nan_in_missing_steps_gives_finite_gradients():
    a, mask, p = problem(T=6, kind="stretch")
    a = a.clone().requires_grad_()
    A = p["A"].clone().requires_grad_()
    lp = lgssm_log_prob(a, A, p["C"], p["Q"], p["R"], p["mu0"], p["Sigma0"], p["b"], mask)
    lp.sum().backward()
    assert torch.isfinite(lp).all() and torch.isfinite(A.grad).all()
    assert torch.isfinite(a.grad).all() and (a.grad[~mask] == 0).all()


def test_broadcasting_and_time_homogeneous():
    a, mask, p = problem(T=5, batch=3)
    full = lgssm_log_prob(a, mask=mask, **p)
    # time-homogeneous C broadcast over T, shared Q across the batch, extra sample dim in a
    q = dict(p, C=p["C"][:, :1], Q=p["Q"][0])
    expanded = dict(q, C=q["C"].expand(-1, 5, -1, -1))
    assert torch.allclose(lgssm_log_prob(a, mask=mask, **q), lgssm_log_prob(a, mask=mask, **expanded))
    aa = torch.stack([a, a])
    assert torch.allclose(lgssm_log_prob(aa, mask=mask, **p), full.expand(2, 3))


def paper_problem(T, batch=4, dtype=torch.float32, seed=0):
    """Paper defaults: dim_z=4, dim_a=2, Q=0.08I, R=0.03I, Sigma0=20I, A near identity."""
    g = torch.Generator().manual_seed(seed)
    dz, da = 4, 2
    A = torch.eye(dz) + 0.01 * torch.randn(batch, T, dz, dz, generator=g)
    # keep the dynamics marginally stable: rescale to spectral radius <= 1
    rho = torch.linalg.eigvals(A).abs().amax(-1, keepdim=True).unsqueeze(-1).clamp(min=1.0)
    A = A / rho
    C = 0.05 * torch.randn(batch, T, da, dz, generator=g) + torch.eye(da, dz)
    p = dict(
        A=A,
        C=C,
        Q=0.08 * torch.eye(dz),
        R=0.03 * torch.eye(da),
        mu0=torch.zeros(dz),
        Sigma0=20.0 * torch.eye(dz),
    )
    _, a = lgssm_prior_rsample(**p)
    return a.to(dtype), {k: v.to(dtype) for k, v in p.items()}


def gaussian_hmm(A, C, Q, R, mu0, Sigma0, b=None):
    """The exact GaussianHMM for our LGSSM; offsets b enter as B_t = diag(b_t), u_t = 1."""
    return LinearGaussianSSM(mu0, Sigma0, A, Q, C, R, B=None if b is None else torch.diag_embed(b),
                             u=None if b is None else torch.ones_like(b)).to_gaussian_hmm()  # fmt: skip


def test_equals_gaussian_hmm():
    a, _, p = problem(T=7, kind="none")
    assert torch.allclose(lgssm_log_prob(a, **p), gaussian_hmm(**p).log_prob(a), atol=1e-9, rtol=0)


def test_to_gaussian_hmm_needs_no_mask():
    a, mask, p = problem(T=4)
    d = LinearGaussianSSM(p["mu0"], p["Sigma0"], p["A"], p["Q"], p["C"], p["R"], mask=mask)
    with pytest.raises(ValueError, match="needs mask=None"):
        d.to_gaussian_hmm()


def test_float32_long_sequence_accurate_and_beats_gaussian_hmm():
    T = 1000
    a, p = paper_problem(T)
    exact = lgssm_log_prob(a.double(), **{k: v.double() for k, v in p.items()})
    ours = lgssm_log_prob(a, **p)  # float32 in and out, float64 inside
    assert ours.dtype == torch.float32 and torch.isfinite(ours).all()
    ours_err = ((ours.double() - exact).abs() / exact.abs()).max().item()
    assert ours_err < 1e-3
    pyro_f32 = gaussian_hmm(**p).log_prob(a)
    pyro_err = ((pyro_f32.double() - exact).abs() / exact.abs()).max().item()
    print(f"T={T} float32 relative error: ours {ours_err:.2e}, GaussianHMM {pyro_err:.2e}")
    assert ours_err < pyro_err


def test_float32_compute_stays_finite():
    """Even with compute_dtype=float32 the scan stays finite at T=1000."""
    a, p = paper_problem(1000)
    lp = lgssm_log_prob(a, compute_dtype=torch.float32, **p)
    z = lgssm_posterior_rsample(a, compute_dtype=torch.float32, **p)
    assert torch.isfinite(lp).all() and torch.isfinite(z).all()
    assert not math.isnan(lp.sum().item())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("T", [20, 40])  # the sequential filter on the GPU, then the parallel scan
def test_cuda_log_prob_and_gradient_match_the_textbook(T):
    from pyro_kvae.distributions.lgssm import SEQUENTIAL_MAX_T

    assert (T <= SEQUENTIAL_MAX_T) == (T == 20)
    a, mask, p = problem(T=T, kind="random")
    A = p["A"].clone().requires_grad_()
    B, u = torch.diag_embed(p["b"]), torch.ones_like(p["b"])  # offsets b_t as B_t = diag(b_t), u_t = 1
    d = LinearGaussianSSM(p["mu0"], p["Sigma0"], A, p["Q"], p["C"], p["R"], B=B, u=u, mask=mask)
    cuda = {k: v.cuda() for k, v in p.items()}
    A_cuda = cuda["A"].clone().requires_grad_()
    d_cuda = LinearGaussianSSM(
        cuda["mu0"], cuda["Sigma0"], A_cuda, cuda["Q"], cuda["C"], cuda["R"], B=B.cuda(), u=u.cuda(), mask=mask.cuda()
    )
    lp, lp_cuda = d.log_prob(a), d_cuda.log_prob(a.cuda())
    for i in range(a.shape[0]):
        assert abs(lp_cuda[i].item() - textbook_kalman(a[i].nan_to_num(), mask[i], **per_seq(p, i))[0]) < 1e-8
    (grad,) = torch.autograd.grad(lp.sum(), A)
    (grad_cuda,) = torch.autograd.grad(lp_cuda.sum(), A_cuda)
    assert torch.allclose(grad_cuda.cpu(), grad, rtol=1e-8, atol=1e-10)
