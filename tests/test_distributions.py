# SPDX-License-Identifier: Apache-2.0
"""pyro_kvae.distributions.LinearGaussianSSM."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from lgssm_reference import dense_log_prob, dense_posterior, textbook_kalman
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam
from test_lgssm import gaussian_hmm, per_seq, problem

from pyro_kvae.distributions import LinearGaussianSSM


def make(p, mask=None, **kw):
    return LinearGaussianSSM(p["mu0"], p["Sigma0"], p["A"], p["Q"], p["C"], p["R"], mask=mask, **kw)


def test_shapes_and_log_prob():
    a, mask, p = problem(T=6, kind="stretch")
    d = make(p, mask)
    assert d.batch_shape == (4,) and d.event_shape == (6, 2)
    lp = d.log_prob(a)
    for i in range(4):
        q = dict(per_seq(p, i), b=torch.zeros(6, 3, dtype=a.dtype))
        assert abs(lp[i] - dense_log_prob(a[i], mask[i], **q)) < 1e-8
    # extra sample dims in the value
    assert d.log_prob(torch.stack([a, a, a])).shape == (3, 4)


def test_controls():
    a, mask, p = problem(T=5, kind="random")
    B = torch.randn(4, 5, 3, 2, dtype=a.dtype)
    u = torch.randn(4, 5, 2, dtype=a.dtype)
    d = make(p, mask, B=B, u=u)
    b = (B @ u.unsqueeze(-1)).squeeze(-1)
    for i in range(4):
        q = dict(per_seq(p, i), b=b[i])
        assert abs(d.log_prob(a)[i] - dense_log_prob(a[i], mask[i], **q)) < 1e-8


def test_equals_gaussian_hmm_unmasked():
    a, _, p = problem(T=8, kind="none")
    p["b"] = torch.zeros_like(p["b"])
    expected = gaussian_hmm(**p).log_prob(a)
    assert (make(p).log_prob(a) - expected).abs().max() < 1e-9


def test_filter_smooth_posterior():
    a, mask, p = problem(T=6, kind="stretch")
    p["b"] = torch.zeros_like(p["b"])
    d = make(p, mask)
    f, s = d.filter(a), d.smooth(a)
    assert isinstance(s, dist.MultivariateNormal)
    assert s.batch_shape == (4, 6) and s.event_shape == (3,)
    for i in range(4):
        _, _, _, fm, fP, sm, sP = textbook_kalman(a[i].nan_to_num(), mask[i], **per_seq(p, i))
        assert (f.mean[i] - fm).abs().max() < 1e-8 and (f.covariance_matrix[i] - fP).abs().max() < 1e-8
        assert (s.mean[i] - sm).abs().max() < 1e-8 and (s.covariance_matrix[i] - sP).abs().max() < 1e-8
    z = d.rsample_posterior(a, torch.Size([2]))
    assert z.shape == (2, 4, 6, 3)
    zero = d.rsample_posterior(a, noise=torch.zeros(4, 6, 3, dtype=a.dtype))
    assert (zero - s.mean).abs().max() < 1e-8


def test_rsample_and_expand():
    _, _, p = problem(T=4, kind="none")
    d = make(p)
    x = d.rsample(torch.Size([5]))
    assert x.shape == (5, 4, 4, 2) and x.requires_grad is False
    e = d.expand(torch.Size([2, 4]))
    assert e.batch_shape == (2, 4) and e.rsample().shape == (2, 4, 4, 2)
    assert torch.allclose(e.log_prob(x[:2]), d.log_prob(x[:2]))


def test_time_homogeneous_with_duration():
    _, _, p = problem(T=1, kind="none")
    d = make({k: v for k, v in p.items()}, duration=9)
    assert d.event_shape == (9, 2)
    assert d.sample().shape == (4, 9, 2)


def test_float32_params_float32_results():
    a, mask, p = problem(T=5, kind="random")
    p32 = {k: v.float() for k, v in p.items()}
    d = make(p32, mask)
    assert d.log_prob(a.float()).dtype == torch.float32
    assert d.smooth(a.float()).mean.dtype == torch.float32
    assert torch.allclose(d.log_prob(a.float()).double(), make(p, mask).log_prob(a), rtol=1e-5)


def test_in_pyro_model_with_svi():
    """A learnable LGSSM (mu0) fit by SVI with the distribution as the likelihood."""
    a, mask, p = problem(T=6, kind="random")

    def model(a):
        mu0 = pyro.param("mu0", torch.zeros(3, dtype=a.dtype))
        with pyro.plate("seq", a.shape[0]):
            pyro.sample("a", make(dict(p, mu0=mu0), mask), obs=a)

    def guide(a):
        pass

    svi = SVI(model, guide, Adam({"lr": 0.1}), Trace_ELBO())
    losses = [svi.step(a) for _ in range(200)]
    assert losses[-1] < losses[0]
    # the MLE of mu0 maximises the exact likelihood: gradient ~ 0 there
    mu = pyro.param("mu0").detach().requires_grad_()
    (g,) = torch.autograd.grad(make(dict(p, mu0=mu), mask).log_prob(a).sum(), mu)
    assert g.abs().max() < 1e-2


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_posterior_from_dense(dtype):
    a, mask, p = problem(T=4, kind="stretch")
    p["b"] = torch.zeros_like(p["b"])
    d = make({k: v.to(dtype) for k, v in p.items()}, mask)
    mean = d.rsample_posterior(a.to(dtype), noise=torch.zeros(4, 4, 3, dtype=dtype))
    tol = 1e-8 if dtype == torch.float64 else 1e-4
    for i in range(4):
        m, _ = dense_posterior(a[i], mask[i], **per_seq(p, i))
        assert (mean[i].double() - m).abs().max() < tol


@pytest.mark.parametrize("masked", [False, True])
def test_shared_parameters_use_the_sequential_filter_exactly(masked):
    """A model (and mask) shared by all sequences: batch 1, time dim 1; against the dense reference, with gradients."""
    T = 5
    a, _, p = problem(T=T, kind="none")
    mask = torch.tensor([[True, False, True, False, True]]) if masked else None
    mu0, Sigma0, A, Q, C, R = p["mu0"][:1], p["Sigma0"][:1], p["A"][:1, :1], p["Q"][:1], p["C"][:1, :1], p["R"][:1]
    d = LinearGaussianSSM(mu0, Sigma0, A, Q, C, R, mask=mask, duration=T)
    assert d._shared_parameters(a)
    lp = d.log_prob(a)
    per_step = dict(A=A[0].expand(T, 3, 3), C=C[0].expand(T, 2, 3), Q=Q[0], R=R[0], mu0=mu0[0], Sigma0=Sigma0[0],
                    b=torch.zeros(T, 3, dtype=torch.float64))  # fmt: skip
    observed = torch.ones(T, dtype=torch.bool) if mask is None else mask[0]
    for i in range(4):
        assert abs(lp[i] - dense_log_prob(a[i], observed, **per_step)) < 1e-8
        m, _ = dense_posterior(a[i], observed, **per_step)
        assert (d.smooth(a).mean[i] - m).abs().max() < 1e-8
    z = d.rsample_posterior(a, noise=torch.zeros(4, T, 3, dtype=torch.float64))
    assert (z - d.smooth(a).mean).abs().max() < 1e-8
    A = A.clone().requires_grad_()
    x = a[:2].clone().requires_grad_()

    def fn(A, x):
        return LinearGaussianSSM(mu0, Sigma0, A, Q, C, R, mask=mask, duration=T).log_prob(x)

    assert torch.autograd.gradcheck(fn, (A, x))
