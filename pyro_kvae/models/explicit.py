# SPDX-License-Identifier: Apache-2.0
"""
The paper's eq. (7) formulation with ``z`` sampled explicitly.

:class:`ExplicitStateModel` writes the KVAE's generative story step by step
(per-step sites ``z_t``, ``a_t`` under :func:`pyro.markov`, ``alpha_t`` fed by
the sampled ``a_{t-1}``), and :class:`ExplicitStateGuide` draws ``a`` as the
collapsed guide does (the encoder for observed frames and, with missing frames,
``p_gamma_hat(a_un | a_obs)``, registered as per-step sites ``a_t``) and then
``z ~ p_gamma(z | a)`` by forward-filter backward-sample, registering the
backward conditionals ``p(z_t | z_{t+1}, a_{<=t})`` as the ``z_t`` sites.
Together they give the ELBO estimator of eq. (7)::

    log p(x_obs | a) + log p(a, z | u) - log q(a | x) - log p(z | a, u)

Since ``p(a, z) / p(z | a) = p(a)`` for every ``z``, each sample of this
estimator equals the one of ``KVAE.model`` + ``KVAE.guide`` given the same ``a``,
with or without missing frames (``tests/test_models.py`` checks this). Both
support vectorised particles (``Trace_ELBO(num_particles=K, vectorize_particles=True)``).
"""

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions import TorchDistribution, constraints

from ..ops.kalman import backward_conditional, kalman_filter
from .guides import EncoderSmootherPosterior


def _mv(M, v):
    return (M @ v.unsqueeze(-1)).squeeze(-1)


class ExplicitStateModel:
    """The KVAE model with explicit per-step ``z_t`` and ``a_t`` sites; ``kvae`` supplies the networks."""

    def __init__(self, kvae):
        self.kvae = kvae

    def __call__(self, x, u=None, mask=None):
        """``x (batch, T, *frame_shape)``, ``u (batch, T, dim_u)``, ``mask (batch, T)`` (True where observed)."""
        kvae, prior = self.kvae, self.kvae.prior
        x, u, mask = kvae.check_inputs(x, u, mask)
        N, T = x.shape[:2]
        with pyro.plate("sequences", N):
            z, a, state = None, [], None
            for t in pyro.markov(range(T)):
                if t == 0:
                    z = pyro.sample("z_0", dist.MultivariateNormal(prior.mu0.expand(N, -1), prior.Sigma0))
                    # the samples' batch shape: (batch,), or (particles, batch) with vectorised particles
                    a_prev = prior.dynamics.a0.expand(z.shape[:-1] + (prior.dim_a,))
                    state = prior.dynamics.init_state(z.shape[:-1])
                alpha, state = prior.dynamics.step(a_prev, state)
                A, B, C = prior.mix(alpha)
                if t > 0:
                    loc = _mv(A, z) if u is None else _mv(A, z) + _mv(B, u[:, t])
                    z = pyro.sample(f"z_{t}", dist.MultivariateNormal(loc, prior.Q))
                a_prev = pyro.sample(f"a_{t}", dist.MultivariateNormal(_mv(C, z), prior.R))
                a.append(a_prev)
            a = torch.stack(a, -2)
            px = kvae.frame_distribution(kvae.decoder(a))
            if mask is not None:
                px = px.mask(kvae.frame_mask(mask))
            with poutine.scale(scale=kvae.scale_reconstruction):
                pyro.sample("x", px.to_event(1 + len(kvae.frame_shape)), obs=x)
        return a


class _StepOfJointDraw(TorchDistribution):
    """
    Site ``a_t`` of one joint draw ``a (batch, T, dim_a) ~ q`` (an
    :class:`~pyro_kvae.models.guides.EncoderSmootherPosterior`): ``rsample`` returns step ``t``
    of the draw (made once per batch shape, so vectorised particles get independent draws);
    ``log_prob`` is the encoder's term for the sequences observed at ``t`` and 0 for the others,
    whose density ``log p_gamma_hat(a_un | a_obs)`` the guide adds as one factor.
    """

    arg_constraints = {}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, q, t: int, draws: dict, batch_shape=None):
        self.q, self.t, self.draws = q, t, draws
        super().__init__(q.batch_shape if batch_shape is None else batch_shape, q.event_shape[-1:], validate_args=False)

    def expand(self, batch_shape, _instance=None):
        return _StepOfJointDraw(self.q, self.t, self.draws, torch.Size(batch_shape))

    def rsample(self, sample_shape=torch.Size()):
        shape = torch.Size(sample_shape) + self.batch_shape
        if shape not in self.draws:
            self.draws[shape] = self.q.expand(shape).rsample()
        return self.draws[shape][..., self.t, :]

    def log_prob(self, value):
        lp = dist.Normal(self.q.loc[..., self.t, :], self.q.scale[..., self.t, :]).log_prob(value).sum(-1)
        return torch.where(self.q.mask[..., self.t], lp, lp.new_zeros(()))


class ExplicitStateGuide:
    """
    ``a`` as the collapsed guide draws it (per-step sites ``a_t``), then exact joint FFBS for
    ``z`` given ``a`` (sequential backward sites ``z_{T-1} .. z_0``).
    """

    def __init__(self, kvae):
        self.kvae = kvae

    def __call__(self, x, u=None, mask=None):
        kvae, prior = self.kvae, self.kvae.prior
        x, u, mask = kvae.check_inputs(x, u, mask)
        N, T = x.shape[:2]
        loc, scale = (v.to(x.dtype) for v in kvae.encoder(x))
        with pyro.plate("sequences", N):
            if mask is None:
                a = [pyro.sample(f"a_{t}", dist.Normal(loc[:, t], scale[:, t]).to_event(1)) for t in range(T)]
                a = torch.stack(a, -2)  # (batch, T, dim_a), or (particles, batch, T, dim_a)
            else:
                q, draws = EncoderSmootherPosterior(loc, scale, mask, prior, u), {}
                a = torch.stack([pyro.sample(f"a_{t}", _StepOfJointDraw(q, t, draws)) for t in range(T)], -2)
                # the missing steps' joint density, from the site values (also when they are replayed)
                pyro.factor("a_missing_given_observed", q.missing_log_prob(a), has_rsample=True)
            A, B, C = prior.mix(prior.dynamics(a))
            b = None if u is None else _mv(B, u)
            f = kalman_filter(a, A, C, prior.Q, prior.R, prior.mu0, prior.Sigma0, b=b)
            z = pyro.sample(f"z_{T - 1}", dist.MultivariateNormal(f.filt_mean[..., -1, :], f.filt_cov[..., -1, :, :]))
            for t in range(T - 2, -1, -1):
                mean, cov = backward_conditional(
                    f.filt_mean[..., t, :],
                    f.filt_cov[..., t, :, :],
                    f.pred_mean[..., t + 1, :],
                    f.pred_cov[..., t + 1, :, :],
                    A[..., t + 1, :, :],
                    z,
                )
                z = pyro.sample(f"z_{t}", dist.MultivariateNormal(mean, cov))
        return a
