# SPDX-License-Identifier: Apache-2.0
"""Sequential Kalman filter / RTS smoother against independent float64 references."""

import pytest
import torch
from conftest import MASK_KINDS, make_mask
from lgssm_reference import dense_filtered, dense_posterior, textbook_kalman
from test_lgssm import paper_problem, per_seq, problem

from pyro_kvae.ops.kalman import condition, kalman_filter, kalman_predict, kalman_smoother, kalman_update, rts_smoother
from pyro_kvae.ops.lgssm import lgssm_log_prob


@pytest.mark.parametrize("kind", MASK_KINDS)
@pytest.mark.parametrize("T", [1, 4, 7])
def test_filter_matches_dense(kind, T):
    a, mask, p = problem(T=T, kind=kind)
    f = kalman_filter(a, mask=mask, **p)
    assert f.filt_mean.shape == (4, T, 3) and f.filt_cov.shape == (4, T, 3, 3)
    assert (f.log_prob - lgssm_log_prob(a, mask=mask, **p)).abs().max() < 1e-8
    for i in range(a.shape[0]):
        mean, cov = dense_filtered(a[i], mask[i], **per_seq(p, i))
        assert (f.filt_mean[i] - mean).abs().max() < 1e-8
        assert (f.filt_cov[i] - cov).abs().max() < 1e-8
        _, pm, pP, *_ = textbook_kalman(a[i].nan_to_num(), mask[i], **per_seq(p, i))
        assert (f.pred_mean[i] - pm).abs().max() < 1e-8
        assert (f.pred_cov[i] - pP).abs().max() < 1e-8


@pytest.mark.parametrize("kind", MASK_KINDS)
@pytest.mark.parametrize("T", [1, 4, 7])
def test_smoother_matches_dense(kind, T):
    a, mask, p = problem(T=T, kind=kind)
    mean, cov = kalman_smoother(a, mask=mask, **p)
    for i in range(a.shape[0]):
        m, S = dense_posterior(a[i], mask[i], **per_seq(p, i))
        blocks = torch.stack([S[t * 3 : (t + 1) * 3, t * 3 : (t + 1) * 3] for t in range(T)])
        assert (mean[i] - m).abs().max() < 1e-8
        assert (cov[i] - blocks).abs().max() < 1e-8
        *_, sm, sP = textbook_kalman(a[i].nan_to_num(), mask[i], **per_seq(p, i))
        assert (mean[i] - sm).abs().max() < 1e-8 and (cov[i] - sP).abs().max() < 1e-8


def test_step_interface_reproduces_filter():
    a, mask, p = problem(T=5, kind="stretch")
    f = kalman_filter(a, mask=mask, **p)
    mean, cov, total = p["mu0"], p["Sigma0"], 0
    a0 = a.nan_to_num(nan=12345.0)  # placeholders of any value are ignored
    for t in range(5):
        if t:
            mean, cov = kalman_predict(mean, cov, p["A"][:, t], p["Q"], p["b"][:, t])
        mean, cov, lp = kalman_update(mean, cov, a0[:, t], p["C"][:, t], p["R"], mask[:, t])
        total = total + lp
        assert (mean - f.filt_mean[:, t]).abs().max() < 1e-12
        assert (cov - f.filt_cov[:, t]).abs().max() < 1e-12
    assert (total - f.log_prob).abs().max() < 1e-12


def test_gradcheck_smoother():
    a, mask, p = problem(T=4, dz=2, batch=2, kind="stretch")
    a = a.nan_to_num().requires_grad_()
    A, C = p["A"].clone().requires_grad_(), p["C"].clone().requires_grad_()

    def fn(a, A, C):
        return kalman_smoother(a, A, C, p["Q"], p["R"], p["mu0"], p["Sigma0"], p["b"], mask)

    assert torch.autograd.gradcheck(fn, (a, A, C))


def test_condition_and_its_hand_written_backward():
    """condition(M, D, S) = M - D^T S^{-1} D: value against an explicit inverse, gradients by gradcheck and
    against autograd through torch.linalg.inv, with broadcasting batch dims."""
    g = torch.Generator().manual_seed(0)
    B, k, d = 3, 2, 5
    M = torch.randn(B, d, d, generator=g, dtype=torch.float64)
    M = (M + M.mT).requires_grad_()
    D = torch.randn(B, k, d, generator=g, dtype=torch.float64, requires_grad=True)
    F = torch.randn(k, k, generator=g, dtype=torch.float64, requires_grad=True)
    S = F @ F.mT + torch.eye(k, dtype=torch.float64)  # shared by the batch
    reference = M - D.mT @ torch.linalg.inv(S) @ D
    assert (condition(M, D, S) - reference).abs().max() < 1e-12
    # S only through symmetric perturbations (the Cholesky factorisation reads one triangle)
    assert torch.autograd.gradcheck(lambda M, D, F: condition(M, D, F @ F.mT + torch.eye(k, dtype=F.dtype)), (M, D, F))
    W = torch.randn(B, d, d, generator=g, dtype=torch.float64)  # a non-symmetric upstream gradient
    ours = torch.autograd.grad((condition(M, D, S) * W).sum(), (M, D, F), retain_graph=True)
    theirs = torch.autograd.grad((reference * W).sum(), (M, D, F))
    for x, y in zip(ours, theirs):
        assert x.shape == y.shape and (x - y).abs().max() < 1e-10 * (1 + y.abs().max())
    dD = torch.autograd.grad(condition(M, D, S).pow(2).sum(), D, create_graph=True)[0]
    with pytest.raises(RuntimeError, match="once_differentiable"):  # no silent second derivative
        dD.sum().backward()


def test_gradcheck_filter_log_prob():
    a, mask, p = problem(T=4, dz=2, batch=2, kind="random")
    a = a.nan_to_num().requires_grad_()
    A, b = p["A"].clone().requires_grad_(), p["b"].clone().requires_grad_()

    def fn(a, A, b):
        f = kalman_filter(a, A, p["C"], p["Q"], p["R"], p["mu0"], p["Sigma0"], b, mask)
        return f.log_prob, f.filt_mean, f.filt_cov

    assert torch.autograd.gradcheck(fn, (a, A, b))


def test_float32_long_sequence():
    """Sequential float32 filter/smoother at T=1000, paper defaults, against float64."""
    a, p = paper_problem(1000)
    p64 = {k: v.double() for k, v in p.items()}
    f32 = kalman_filter(a, **p)
    f64 = kalman_filter(a.double(), **p64)
    m32, c32 = rts_smoother(f32, p["A"])
    m64, c64 = rts_smoother(f64, p64["A"])
    for x in (f32.log_prob, m32, c32):
        assert torch.isfinite(x).all()
    assert ((f32.log_prob.double() - f64.log_prob).abs() / f64.log_prob.abs()).max() < 1e-3
    assert (m32.double() - m64).abs().max() / m64.abs().max() < 1e-3
    assert (c32.double() - c64).abs().max() / c64.abs().max() < 1e-3


def test_masked_update_keeps_prediction():
    a, mask, p = problem(T=3, kind="none")
    mask = make_mask("none", 4, 3)
    mask[:, 1] = False
    f = kalman_filter(a, mask=mask, **p)
    assert torch.equal(f.filt_mean[:, 1], f.pred_mean[:, 1])
    assert torch.equal(f.filt_cov[:, 1], f.pred_cov[:, 1])
    assert (f.step_log_prob[:, 1] == 0).all()


def test_backward_conditionals_give_exact_joint_posterior():
    """log N(z_T; m_T, F_T) + sum_t log p(z_t | z_{t+1}, a_<=t) equals the dense log p(z | a_obs)."""
    from pyro_kvae.ops.kalman import backward_conditional

    T, dz = 5, 3
    a, mask, p = problem(T=T, dz=dz, kind="stretch")
    f = kalman_filter(a, mask=mask, **p)
    z = torch.randn(4, T, dz, dtype=torch.float64)
    MVN = torch.distributions.MultivariateNormal
    lp = MVN(f.filt_mean[:, -1], f.filt_cov[:, -1]).log_prob(z[:, -1])
    for t in range(T - 1):
        mean, cov = backward_conditional(
            f.filt_mean[:, t],
            f.filt_cov[:, t],
            f.pred_mean[:, t + 1],
            f.pred_cov[:, t + 1],
            p["A"][:, t + 1],
            z[:, t + 1],
        )
        lp = lp + MVN(mean, cov).log_prob(z[:, t])
    for i in range(4):
        m, S = dense_posterior(a[i], mask[i], **per_seq(p, i))
        assert abs(lp[i] - MVN(m.reshape(-1), S).log_prob(z[i].reshape(-1))) < 1e-8


@pytest.mark.parametrize("kind", MASK_KINDS)
def test_backward_sample_is_the_exact_joint_posterior(kind):
    """z = m + M noise: zero noise gives the dense posterior mean and M M^T its covariance."""
    from pyro_kvae.ops.kalman import backward_sample

    T, dz = 4, 3
    a, mask, p = problem(T=T, dz=dz, kind=kind)
    f = kalman_filter(a, mask=mask, **p)
    zero = torch.zeros(4, T, dz, dtype=torch.float64)
    mean = backward_sample(f, p["A"], zero)
    M = torch.autograd.functional.jacobian(lambda e: backward_sample(f, p["A"], e), zero)
    for i in range(4):
        m, S = dense_posterior(a[i], mask[i], **per_seq(p, i))
        Mi = M[i, :, :, i].reshape(T * dz, T * dz)
        assert (mean[i] - m).abs().max() < 1e-8
        assert (Mi @ Mi.T - S).abs().max() < 1e-8
    with pytest.raises(ValueError, match="noise must have shape"):
        backward_sample(f, p["A"], torch.zeros(4, T + 1, dz, dtype=torch.float64))


def test_shared_parameters_are_not_expanded():
    """One time-invariant model for many sequences: covariances keep the parameters' batch shape
    and the filter, smoother and sampler agree with the same model given per sequence and step."""
    from pyro_kvae.ops.kalman import backward_sample, filter_steps

    T, dz = 6, 3
    a, mask, p = problem(T=T, dz=dz, kind="none")
    shared = {k: v[0] for k, v in p.items()}
    shared["A"], shared["C"], shared["b"] = p["A"][0, :1], p["C"][0, :1], None  # time dim 1
    a = a.nan_to_num()
    f = filter_steps(a, **shared)
    assert f.pred_cov.shape == (T, dz, dz) and f.filt_mean.shape == (4, T, dz)
    full = {k: v.expand((4,) + v.shape) for k, v in shared.items() if v is not None}
    full["A"], full["C"] = full["A"].expand(4, T, dz, dz), full["C"].expand(4, T, 2, dz)
    ref = kalman_filter(a, **full)
    assert (f.log_prob - ref.log_prob).abs().max() < 1e-10
    assert (f.filt_cov - ref.filt_cov).abs().max() < 1e-10
    mean, cov = rts_smoother(f, shared["A"])
    ref_mean, ref_cov = rts_smoother(ref, full["A"])
    assert cov.shape == (T, dz, dz)
    assert (mean - ref_mean).abs().max() < 1e-10 and (cov - ref_cov).abs().max() < 1e-10
    noise = torch.randn(4, T, dz, dtype=torch.float64)
    assert (backward_sample(f, shared["A"], noise) - backward_sample(ref, full["A"], noise)).abs().max() < 1e-10


@pytest.mark.parametrize("outputs", ["all", "P and S"])
@pytest.mark.parametrize("layout", ["time-invariant", "time-varying", "batched"])
@pytest.mark.parametrize("T", [1, 2, 6])
def test_covariance_pass_adjoint_matches_autograd(T, layout, outputs):
    """The covariance pass as one autograd node (its hand-written adjoint recursion) gives the same values,
    and the same gradients for every parameter as autograd through its plain operations, with non-symmetric
    upstream gradients and broadcast batch and time dims; gradcheck on a small problem."""
    from pyro_kvae.ops.kalman import _covariance_recursion, covariance_steps

    g = torch.Generator().manual_seed(T)
    dz, da, f64 = 3, 2, torch.float64

    def rnd(*shape):
        return torch.randn(*shape, generator=g, dtype=f64)

    def spd(X):
        return X @ X.mT + 0.5 * torch.eye(X.size(-1), dtype=f64)

    batch, tA, tC = {"time-invariant": ((), 1, 1), "time-varying": ((), T, T), "batched": ((3,), T, 1)}[layout]
    A = torch.eye(dz, dtype=f64) + 0.3 * rnd(*batch, tA, dz, dz)
    params = [A, rnd(*batch, tC, da, dz), spd(rnd(dz, dz)), spd(rnd(*batch, da, da)), spd(rnd(dz, dz))]
    params = [x.requires_grad_() for x in params]
    up = rnd(*batch, T, dz, dz), rnd(*batch, T, dz, dz), rnd(*batch, T, da, da)

    def loss(P, F, S):
        value = (P * up[0]).sum() + (S * up[2]).sum()
        return value + (F * up[1]).sum() if outputs == "all" else value

    ours, ref = covariance_steps(*params, T), _covariance_recursion(*params, T)[:3]
    for x, y in zip(ours, ref):
        assert x.shape == y.shape and (x - y).abs().max() < 1e-12 * (1 + y.abs().max())
    grads, ref_grads = (torch.autograd.grad(loss(*out), params, materialize_grads=True) for out in (ours, ref))
    for x, y in zip(grads, ref_grads):
        assert x.shape == y.shape and (x - y).abs().max() < 1e-10 * (1 + y.abs().max())
    # noise covariances through symmetric perturbations only (a Cholesky factorisation reads one triangle)
    leaves = [x.detach()[..., :2, :, :].clone().requires_grad_() if x.dim() > 3 else x.detach().clone().requires_grad_()
              for x in params[:2]] + [rnd(dz, dz).requires_grad_(), rnd(*batch, da, da).requires_grad_()]  # fmt: skip
    T_small = min(T, 2)
    leaves[:2] = [x[..., :T_small, :, :].detach().clone().requires_grad_() for x in params[:2]]
    assert torch.autograd.gradcheck(
        lambda A, C, XQ, XR: covariance_steps(A, C, spd(XQ), spd(XR), params[4].detach(), T_small), leaves
    )


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("layout", ["shared", "time-invariant", "per-sequence", "sample dims"])
@pytest.mark.parametrize("steps", [1, 5])
def test_affine_steps_adjoint_matches_autograd(steps, layout, reverse):
    """The mean recursion as one autograd node (its hand-written adjoint) gives the values and the gradients of
    ``F``, ``g`` and ``m0`` that autograd gives through the plain loop, with shared, time-invariant and
    per-sequence maps, a broadcast ``m0`` and sample dims; gradcheck on a small problem."""
    from pyro_kvae.ops.kalman import _affine_loop, affine_steps

    g = torch.Generator().manual_seed(steps)
    n, f64 = 3, torch.float64

    def rnd(*shape):
        return torch.randn(*shape, generator=g, dtype=f64)

    F_shape, g_batch, m_batch = {
        "shared": ((steps, n, n), (4,), (4,)),
        "time-invariant": ((1, n, n), (4,), ()),
        "per-sequence": ((4, steps, n, n), (4,), (4,)),
        "sample dims": ((4, steps, n, n), (2, 4), (2, 4)),
    }[layout]
    F, gs, m0 = (x.requires_grad_() for x in (0.7 * rnd(*F_shape), rnd(*g_batch, steps, n), rnd(*m_batch, n)))
    up = rnd(*g_batch, steps + 1, n)
    ours = affine_steps(F, gs, m0, reverse)
    batch = torch.broadcast_shapes(F.shape[:-3], gs.shape[:-2], m0.shape[:-1])
    ref = _affine_loop(F, gs.expand(batch + gs.shape[-2:]), m0.expand(batch + (n,)), reverse)
    assert ours.shape == ref.shape == g_batch + (steps + 1, n)
    assert (ours - ref).abs().max() < 1e-13
    if reverse:  # m_k = F_k m_{k+1} + g_k, from m0 at the end
        assert torch.allclose(ours[..., -1, :], m0.expand(batch + (n,)))
        expected = gs[..., 0, :] + (F[..., 0, :, :] @ ours[..., 1, :].unsqueeze(-1)).squeeze(-1)
        assert torch.allclose(ours[..., 0, :], expected)
    else:
        assert torch.allclose(ours[..., 0, :], m0.expand(batch + (n,)))
    grads, ref_grads = (torch.autograd.grad((out * up).sum(), (F, gs, m0)) for out in (ours, ref))
    for x, y in zip(grads, ref_grads):
        assert x.shape == y.shape and (x - y).abs().max() < 1e-12 * (1 + y.abs().max())
    leaves = [x.detach()[..., :2, :] if x is gs else x.detach() for x in (F, gs, m0)]
    leaves[0] = leaves[0][..., : min(steps, 2), :, :] if layout != "time-invariant" else leaves[0]
    leaves[1] = gs.detach()[..., : min(steps, 2), :]
    leaves = [x.clone().requires_grad_() for x in leaves]
    assert torch.autograd.gradcheck(lambda *xs: affine_steps(*xs, reverse), leaves)
