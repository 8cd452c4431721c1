# SPDX-License-Identifier: Apache-2.0
"""KVAE prior, guides, model and the eq. (7) variant."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from lgssm_reference import dense_joint, textbook_kalman
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal

from pyro_kvae.config import KVAEConfig, build_kvae
from pyro_kvae.models import EncoderSmootherPosterior, ExplicitStateGuide, ExplicitStateModel, KalmanPrior
from pyro_kvae.nn import FixedDynamics, LSTMDynamics, MLPDynamics


def tiny_kvae(dynamics="lstm", dim_u=0, K=3, frame_size=4, double=True, **kw):
    c = KVAEConfig(frame_size=frame_size, vae="mlp", mlp_hidden=(8,), dynamics=dynamics, K=K, dim_u=dim_u, **kw)
    torch.manual_seed(0)
    kvae = build_kvae(c)
    # move the modes away from their init so that every term matters
    with torch.no_grad():
        kvae.prior.A.add_(0.1 * torch.randn_like(kvae.prior.A))
        kvae.prior.C.mul_(20.0)
        if dim_u:
            kvae.prior.B.mul_(20.0)
    return kvae.double() if double else kvae


def frames(N=3, T=5, size=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(N, T, size, size, generator=g) > 0.7).double()


@pytest.mark.parametrize("dynamics", ["lstm", "gru", "mlp", "fixed", "lstm, full noise"])
@pytest.mark.parametrize("dim_u", [0, 1])
def test_prior_log_prob_equals_hand_computed(dynamics, dim_u):
    full = dynamics.endswith("full noise")
    kvae = tiny_kvae(dynamics.split(",")[0], dim_u, learn_noise=full, full_noise=full)
    prior = kvae.prior
    if full:  # learned full covariances: move the factors away from their isotropic start
        with torch.no_grad():
            for name in ("Q_tril", "R_tril", "Sigma0_tril"):
                getattr(prior, name).add_(0.3 * torch.randn_like(getattr(prior, name)))
    N, T = 3, 6
    a = torch.randn(N, T, 2, dtype=torch.float64)
    u = torch.randn(N, T, dim_u, dtype=torch.float64) if dim_u else None
    actual = prior.distribution((N,), T, u).log_prob(a)
    # by hand: alpha step by step from a_0, the mixture summed explicitly, a textbook Kalman filter
    state = prior.dynamics.init_state((N,))
    a_prev = prior.dynamics.a0.expand(N, 2)
    alphas = []
    for t in range(T):
        alpha, state = prior.dynamics.step(a_prev, state)
        alphas.append(alpha)
        a_prev = a[:, t]
    alpha = torch.stack(alphas, 1)  # (N, T, K)
    assert torch.allclose(alpha.sum(-1), torch.ones(N, T, dtype=torch.float64))
    if full:
        for M in (prior.Q, prior.R, prior.Sigma0):
            assert (M - torch.diag(M.diagonal())).abs().max() > 1e-3  # not diagonal
            assert torch.allclose(M, M.mT) and (torch.linalg.eigvalsh(M) > 0).all()
    else:
        assert torch.allclose(prior.Q, 0.08 * torch.eye(4, dtype=torch.float64))
        assert torch.allclose(prior.Sigma0, 20 * torch.eye(4, dtype=torch.float64))
    for i in range(N):
        A = sum(alpha[i, :, k, None, None] * prior.A[k] for k in range(prior.K))
        C = sum(alpha[i, :, k, None, None] * prior.C[k] for k in range(prior.K))
        b = torch.zeros(T, 4, dtype=torch.float64)
        if dim_u:
            B = sum(alpha[i, :, k, None, None] * prior.B[k] for k in range(prior.K))
            b = (B @ u[i].unsqueeze(-1)).squeeze(-1)
        ones = torch.ones(T, dtype=torch.bool)
        ll = textbook_kalman(a[i], ones, A, C, prior.Q, prior.R, prior.mu0, prior.Sigma0, b)[0]
        assert abs(actual[i] - ll) < 1e-8


def test_prior_sample_feeds_alpha_with_generated_a():
    prior = tiny_kvae("lstm").prior
    z, a, alpha = prior.sample((7,), 9)
    assert z.shape == (7, 9, 4) and a.shape == (7, 9, 2) and alpha.shape == (7, 9, 3)
    assert torch.allclose(alpha, prior.dynamics(a), atol=1e-12)
    d = prior.distribution((7,), 9)
    assert d.rsample((2,)).shape == (2, 7, 9, 2)


def test_recursive_filter_without_missing_is_teacher_forced():
    prior = tiny_kvae("lstm").prior
    a = torch.randn(4, 6, 2, dtype=torch.float64)
    r = prior.filter(a)
    assert torch.allclose(r.alpha, prior.dynamics(a), atol=1e-12)
    assert torch.allclose(r.filtered.log_prob, prior(a).log_prob(a), atol=1e-8)
    assert torch.equal(r.a, a)


def test_recursive_filter_with_missing_feeds_predicted_means():
    prior = tiny_kvae("mlp").prior
    a = torch.randn(2, 6, 2, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0, 0, 1, 0], [1, 0, 1, 1, 0, 0]], dtype=torch.bool)
    r = prior.filter(a.masked_fill(~mask.unsqueeze(-1), float("nan")), mask)
    A, B, C = prior.mix(r.alpha)
    a_hat = (C @ r.filtered.pred_mean.unsqueeze(-1)).squeeze(-1)
    assert torch.equal(r.a[mask], a[mask])
    assert torch.allclose(r.a[~mask], a_hat[~mask])
    # the network saw exactly r.a: alpha is the teacher-forced alpha of the completed sequence
    assert torch.allclose(r.alpha, prior.dynamics(r.a), atol=1e-12)
    # and the moments are those of a plain masked Kalman filter with that alpha
    for i in range(2):
        ref = textbook_kalman(
            a[i], mask[i], A[i], C[i], prior.Q, prior.R, prior.mu0, prior.Sigma0, torch.zeros(6, 4, dtype=a.dtype)
        )
        assert abs(r.filtered.log_prob[i] - ref[0]) < 1e-8
        assert (r.filtered.filt_mean[i] - ref[3]).abs().max() < 1e-8


@pytest.mark.parametrize("observed_covariances", [False, True])
def test_recursive_filter_gradients_match_a_plain_loop(observed_covariances):
    """KalmanPrior.filter with missing steps against a plain step-by-step loop written here (torch.lstm_cell
    with the LSTM's weights, textbook predict and update with explicit inverses, a_hat_t = C_t m_t fed to the
    network where a_t is missing): log p(a_obs), the filtered means, the completed a and alpha, and the
    gradients of a loss of all of them with respect to a and every parameter of the prior."""
    prior = tiny_kvae("lstm").prior
    T, N, f64 = 6, 3, torch.float64
    g = torch.Generator().manual_seed(3)
    a = torch.randn(N, T, 2, generator=g, dtype=f64, requires_grad=True)
    mask = torch.tensor([[1, 1, 0, 0, 1, 0], [1, 0, 1, 1, 0, 1], [0, 1, 1, 0, 0, 1]], dtype=torch.bool)
    loss_weights = [torch.randn(N, T, k, generator=g, dtype=f64) for k in (4, 2, 3)]

    def loss(log_prob, filt_mean, a_completed, alpha):
        parts = (filt_mean, a_completed, alpha)
        return log_prob.sum() + sum((x * w).sum() for x, w in zip(parts, loss_weights))

    def reference():
        rnn = prior.dynamics.rnn
        cell_weights = (rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0)
        Q, R, eye = prior.Q, prior.R, torch.eye(prior.dim_z, dtype=f64)
        lps, means, completed, alphas = [], [], [], []
        for i in range(N):
            h = c = torch.zeros(1, rnn.hidden_size, dtype=f64)
            a_prev, m, P, lp = prior.dynamics.a0, prior.mu0, prior.Sigma0, 0.0
            for t in range(T):
                h, c = torch.lstm_cell(a_prev.unsqueeze(0), (h, c), *cell_weights)
                alpha = torch.softmax(prior.dynamics.out(h)[0], -1)
                A, _, C = prior.mix(alpha)
                if t > 0:
                    m, P = A @ m, A @ P @ A.T + Q
                if mask[i, t]:
                    S = C @ P @ C.T + R
                    r = a[i, t] - C @ m
                    lp = lp + dist.MultivariateNormal(torch.zeros(2, dtype=f64), S).log_prob(r)
                    K = P @ C.T @ torch.linalg.inv(S)
                    a_prev, m, P = a[i, t], m + K @ r, (eye - K @ C) @ P
                else:
                    a_prev = C @ m
                means.append(m)
                completed.append(a_prev)
                alphas.append(alpha)
            lps.append(lp)
        return torch.stack(lps), *(torch.stack(x).reshape(N, T, -1) for x in (means, completed, alphas))

    params = [a] + list(prior.parameters())
    r = prior.filter(a, mask, observed_covariances=observed_covariances)
    ours = (r.filtered.log_prob, r.filtered.filt_mean, r.a, r.alpha)
    ref = reference()
    for x, y in zip(ours, ref):
        assert x.shape == y.shape and (x - y).abs().max() < 1e-9 * (1 + y.abs().max())
    grads = torch.autograd.grad(loss(*ours), params, allow_unused=True)
    ref_grads = torch.autograd.grad(loss(*ref), params, allow_unused=True)
    assert ref_grads[0] is not None and ref_grads[0][~mask].abs().max() == 0  # missing a_t: never read
    for x, y in zip(grads, ref_grads):
        if y is None:
            assert x is None or x.abs().max() == 0
        else:
            assert x is not None and (x - y).abs().max() < 1e-8 * (1 + y.abs().max())


def test_encoder_smoother_posterior_density_is_exact_conditional():
    kvae = tiny_kvae("fixed", K=1)
    prior = kvae.prior
    N, T = 2, 5
    loc = torch.randn(N, T, 2, dtype=torch.float64)
    scale = 0.1 + torch.rand(N, T, 2, dtype=torch.float64)
    mask = torch.tensor([[1, 0, 0, 1, 0], [1, 1, 0, 1, 1]], dtype=torch.bool)
    q = EncoderSmootherPosterior(loc, scale, mask, prior)
    a = q.rsample()
    assert torch.isfinite(a).all()
    # the value rsample drew reuses its filter's covariance pass; any other value is filtered afresh
    assert (q.log_prob(a) - q.log_prob(a.clone())).abs().max() < 1e-10
    # dense reference: encoder density on observed steps + Gaussian conditional of a_un given a_obs
    A, _, C = prior.mix(torch.ones(T, 1, dtype=torch.float64))
    b = torch.zeros(T, 4, dtype=torch.float64)
    _, _, ma, Saa, _ = dense_joint(A, C, prior.Q, prior.R, prior.mu0, prior.Sigma0, b)
    for i in range(N):
        o = mask[i].repeat_interleave(2)
        flat = a[i].reshape(-1)
        K = Saa[~o][:, o] @ torch.linalg.inv(Saa[o][:, o])
        cond = dist.MultivariateNormal(ma[~o] + K @ (flat[o] - ma[o]), Saa[~o][:, ~o] - K @ Saa[o][:, ~o])
        enc = dist.Normal(loc[i][mask[i]], scale[i][mask[i]]).log_prob(a[i][mask[i]]).sum()
        assert abs(q.log_prob(a)[i] - (enc + cond.log_prob(flat[~o]))) < 1e-8


@pytest.mark.parametrize("dim_u", [0, 2])
@pytest.mark.parametrize("batch_shape", [(3,), (2, 3)])
def test_observed_covariances_give_the_plain_filter_and_its_gradients(dim_u, batch_shape):
    """The second stream of KalmanPrior.filter (every step observed, the recursive alpha held fixed)
    and observed_log_prob against LinearGaussianSSM.log_prob of the same alpha: values and gradients
    with respect to a and every parameter; the first stream is unchanged by the second."""
    kvae = tiny_kvae("lstm", dim_u=dim_u, learn_noise=True)
    prior = kvae.prior
    T = 7
    g = torch.Generator().manual_seed(1)
    a = torch.randn(batch_shape + (T, 2), generator=g, dtype=torch.float64, requires_grad=True)
    u = torch.randn(batch_shape + (T, dim_u), generator=g, dtype=torch.float64) if dim_u else None
    mask = torch.rand(batch_shape + (T,), generator=g) > 0.4
    mask[..., 0] = True
    alone = prior.filter(a, mask, u)
    r = prior.filter(a, mask, u, observed_covariances=True)
    assert alone.observed is None
    pairs = [(alone.alpha, r.alpha)] + [(x, y) for x, y in zip(alone.filtered, r.filtered)]
    for x, y in pairs:
        assert (x - y).abs().max() < 1e-12 * (1 + y.abs().max())
    completed = torch.where(mask.unsqueeze(-1), a, 2.0 * a)  # any completion of the missing steps
    params = [a] + list(prior.parameters())

    def grads(log_prob):
        return torch.autograd.grad(log_prob.sum(), params, allow_unused=True, retain_graph=True)

    ours = prior.observed_log_prob(r, completed, u)
    reference = prior.lgssm(r.alpha, u).log_prob(completed)
    assert ours.shape == batch_shape and (ours - reference).abs().max() < 1e-9
    for x, y in zip(grads(ours), grads(reference)):
        if y is None:
            assert x is None or x.abs().max() == 0
        else:
            assert (x - y).abs().max() < 1e-8 * (1 + y.abs().max())
    with pytest.raises(ValueError, match="observed_covariances=True"):
        prior.observed_log_prob(alone, completed, u)


def test_encoder_smoother_posterior_samples_missing_steps_from_conditional():
    kvae = tiny_kvae("fixed", K=1)
    prior = kvae.prior
    T, S = 4, 20000
    loc = torch.randn(1, T, 2, dtype=torch.float64).expand(S, T, 2)
    scale = torch.full((S, T, 2), 1e-4, dtype=torch.float64)  # observed steps nearly fixed
    mask = torch.tensor([1, 0, 0, 1], dtype=torch.bool).expand(S, T)
    a = EncoderSmootherPosterior(loc, scale, mask, prior).rsample()
    A, _, C = prior.mix(torch.ones(T, 1, dtype=torch.float64))
    _, _, ma, Saa, _ = dense_joint(A, C, prior.Q, prior.R, prior.mu0, prior.Sigma0, torch.zeros(T, 4, dtype=a.dtype))
    o = mask[0].repeat_interleave(2)
    K = Saa[~o][:, o] @ torch.linalg.inv(Saa[o][:, o])
    mean = ma[~o] + K @ (loc[0].reshape(-1)[o] - ma[o])
    cov = Saa[~o][:, ~o] - K @ Saa[o][:, ~o]
    emp = a[:, ~mask[0]].reshape(S, -1)
    se = (cov.diagonal() / S).sqrt()
    assert ((emp.mean(0) - mean).abs() < 5 * se).all()
    se_cov = ((cov.diagonal()[:, None] * cov.diagonal()[None, :] + cov**2) / S).sqrt()
    assert ((torch.cov(emp.T) - cov).abs() < 5 * se_cov + 1e-6).all()


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("dim_u", [0, 2])
def test_gradients_reach_every_parameter(masked, dim_u):
    kvae = tiny_kvae("lstm", dim_u=dim_u, learn_noise=True)
    x = frames(T=6)
    u = torch.randn(3, 6, dim_u, dtype=x.dtype) if dim_u else None
    mask = torch.tensor([[1, 1, 0, 1, 0, 1]] * 3, dtype=torch.bool) if masked else None
    loss = Trace_ELBO().differentiable_loss(kvae.model, kvae.guide, x, u, mask)
    loss.backward()
    for name, p in kvae.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def elbo_samples(model, guide, n, *args):
    """n independent single-sample ELBO estimates (log p(x, latents) - log q(latents))."""
    out = []
    for _ in range(n):
        g = poutine.trace(guide).get_trace(*args)
        m = poutine.trace(poutine.replay(model, trace=g)).get_trace(*args)
        out.append((m.log_prob_sum() - g.log_prob_sum()).item())
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("masked", [False, True])
def test_explicit_z_variant_estimates_the_same_elbo(masked):
    kvae = tiny_kvae("lstm")
    T = 6 if masked else 4
    x = frames(N=2, T=T)
    mask = None
    if masked:  # a gap, and a sequence missing its last frame
        mask = torch.ones(2, T, dtype=torch.bool)
        mask[:, 2:4] = False
        mask[1, -1] = False
    # sample by sample: given the same a, eq. (7) equals the collapsed estimator exactly
    g1 = poutine.trace(kvae.guide).get_trace(x, None, mask)
    a = g1.nodes["a"]["value"]
    m1 = poutine.trace(poutine.replay(kvae.model, trace=g1)).get_trace(x, None, mask)
    elbo1 = m1.log_prob_sum() - g1.log_prob_sum()
    fixed_a = poutine.trace(ExplicitStateGuide(kvae)).get_trace(x, None, mask)
    for t in range(T):
        fixed_a.nodes[f"a_{t}"]["value"] = a[:, t]
        fixed_a.remove_node(f"z_{t}")
    explicit_guide = poutine.replay(ExplicitStateGuide(kvae), trace=fixed_a)
    for _ in range(3):  # whatever z is drawn
        g2 = poutine.trace(explicit_guide).get_trace(x, None, mask)
        assert torch.equal(g2.nodes["a_1"]["value"], a[:, 1])
        m2 = poutine.trace(poutine.replay(ExplicitStateModel(kvae), trace=g2)).get_trace(x, None, mask)
        elbo2 = m2.log_prob_sum() - g2.log_prob_sum()
        assert abs(elbo1 - elbo2) < 1e-8
    # Monte Carlo: the same mean within error; report the variances
    n = 400
    s1 = elbo_samples(kvae.model, kvae.guide, n, x, None, mask)
    s2 = elbo_samples(ExplicitStateModel(kvae), ExplicitStateGuide(kvae), n, x, None, mask)
    se = ((s1.var() + s2.var()) / n).sqrt()
    print(f"ELBO collapsed {s1.mean():.3f} (var {s1.var():.3f}), explicit z {s2.mean():.3f} (var {s2.var():.3f})")
    assert abs(s1.mean() - s2.mean()) < 4 * se
    assert 0.5 < s1.var() / s2.var() < 2.0


def test_svi_with_default_autonormal_and_custom_guides():
    kvae = tiny_kvae("lstm", double=False)
    x = frames(T=5).float()
    for guide in (kvae.guide, AutoNormal(poutine.block(kvae.model, hide=["x"]))):
        pyro.clear_param_store()
        svi = SVI(kvae.model, guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())
        before = {k: v.detach().clone() for k, v in kvae.named_parameters()}
        assert torch.isfinite(torch.tensor(svi.step(x)))
        # SVI with a pyro.optim optimiser updates every parameter of the model (and of the default guide)
        skip = ("encoder",) if isinstance(guide, AutoNormal) else ()
        for k, v in kvae.named_parameters():
            if not k.startswith(skip) and "log_var" not in k:
                assert not torch.equal(before[k], v), k

    def my_guide(x, u=None, mask=None):
        """A user guide: a learned linear read-out of the frames, with a fixed scale."""
        readout = pyro.param("readout", torch.zeros(16, 2))
        with pyro.plate("sequences", x.shape[0]):
            return pyro.sample("a", dist.Normal(x.flatten(-2) @ readout, 0.1).to_event(2))

    pyro.clear_param_store()
    svi = SVI(kvae.model, my_guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    losses = [svi.step(x) for _ in range(30)]
    assert losses[-1] < losses[0]


def test_bad_inputs():
    kvae = tiny_kvae("lstm")
    x = frames(T=5)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, T, 4, 4\)"):
        kvae.model(x[..., :3])
    with pytest.raises(ValueError, match=r"x must have shape \(batch, T, 4, 4\)"):
        kvae.guide(x[0])
    with pytest.raises(ValueError, match=r"x must be binary \(0 or 1\) for the Bernoulli likelihood, found 2"):
        kvae.model(2 * x)
    with pytest.raises(ValueError, match=r"mask must be a bool tensor of shape \(3, 5\)"):
        kvae.model(x, mask=torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"mask must be a bool tensor"):
        kvae.guide(x, mask=torch.ones(3, 5))
    with pytest.raises(ValueError, match="dim_u=0"):
        kvae.model(x, u=torch.zeros(3, 5, 1, dtype=x.dtype))
    with pytest.raises(ValueError, match=r"u must be given, with shape \(batch, T, 1\)"):
        tiny_kvae("lstm", dim_u=1).model(x)
    with pytest.raises(ValueError, match="dynamics must be one of"):
        KVAEConfig(dynamics="transformer")
    with pytest.raises(TypeError, match="dynamics must be a DynamicsNetwork"):
        KalmanPrior(torch.nn.LSTM(2, 3))
    # missing frames may hold NaN
    xm = x.clone()
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[:, 2] = False
    xm[:, 2] = float("nan")
    loss = Trace_ELBO().differentiable_loss(kvae.model, kvae.guide, xm, None, mask)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in kvae.parameters() if p.grad is not None)


def test_dynamics_networks_only_look_back():
    for net in (LSTMDynamics(2, 3), MLPDynamics(2, 3), FixedDynamics(2, 3)):
        a = torch.randn(2, 6, 2)
        b = a.clone()
        b[:, 3:] += 1.0  # change the future from t=3 on
        assert torch.equal(net(a)[:, :4], net(b)[:, :4])  # alpha_t uses a_{<t} only
        assert torch.allclose(net(a).sum(-1), torch.ones(2, 6))


@pytest.mark.parametrize("noise", ["fixed", "isotropic", "full"])
def test_explicit_z_variant_trains_every_parameter_with_pyro_optim(noise):
    """Parameters used only in methods (mix, Q, R, Sigma0, FixedDynamics.step) reach Pyro's param store."""
    for dynamics in ("lstm", "gru", "fixed"):
        kvae = tiny_kvae(dynamics, double=False, learn_noise=noise != "fixed", full_noise=noise == "full")
        x = frames(T=5).float()
        pyro.clear_param_store()
        svi = SVI(ExplicitStateModel(kvae), ExplicitStateGuide(kvae), pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
        before = {k: v.detach().clone() for k, v in kvae.named_parameters()}
        svi.step(x)
        unchanged = [k for k, v in kvae.named_parameters() if torch.equal(before[k], v)]
        unused = ["prior.dynamics.a0"] if dynamics == "fixed" else []  # constant alpha never reads a_0
        assert unchanged == unused, (dynamics, unchanged)


@pytest.mark.parametrize("vae", ["conv", "mlp"])
def test_weight_init_schemes(vae):
    """ "he": Kaiming normal (variance 2 / fan_in); "glorot": Glorot uniform (2 / (fan_in + fan_out)),
    the encoder's heads included; biases zero; another name is refused naming weight_init."""
    from pyro_kvae.config import ConfigError

    torch.manual_seed(0)
    for scheme in ("he", "glorot"):
        kvae = build_kvae(KVAEConfig(vae=vae, mlp_hidden=(64, 64), weight_init=scheme))
        layers = [m for part in (kvae.encoder, kvae.decoder) for m in part.modules()
                  if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]  # fmt: skip
        heads = [kvae.encoder.head.loc, kvae.encoder.head.var]
        for m in layers:
            fan_in = m.weight[0].numel()
            fan_out = m.weight.shape[0] * (m.weight[0, 0].numel() if m.weight.dim() > 2 else 1)
            if scheme == "he" and any(m is h for h in heads):
                continue  # torch's default for the heads
            expected = 2 / fan_in if scheme == "he" else 2 / (fan_in + fan_out)
            if m.weight.numel() >= 500:  # enough weights to estimate their variance
                assert m.weight.var().item() == pytest.approx(expected, rel=0.15)
            assert (m.bias == 0).all()
    with pytest.raises(ConfigError, match="weight_init"):
        KVAEConfig(weight_init="xavier")
