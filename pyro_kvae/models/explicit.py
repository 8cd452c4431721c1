# SPDX-License-Identifier: Apache-2.0
"""
The paper's eq. (7) formulation with ``z`` sampled explicitly.

:class:`ExplicitStateModel` writes the KVAE's generative story step by step
(per-step sites ``z_t``, ``a_t`` under :func:`pyro.markov`, ``alpha_t`` fed by
the sampled ``a_{t-1}``), and :class:`ExplicitStateGuide` draws
``a_t ~ q(a_t | x_t)`` from the encoder and ``z ~ p_gamma(z | a)`` by
forward-filter backward-sample, registering the backward conditionals
``p(z_t | z_{t+1}, a_{<=t})`` as the ``z_t`` sites. Together they give the
ELBO estimator of eq. (7)::

    log p(x|a) + log p(a, z|u) - log q(a|x) - log p(z|a, u)

Since ``p(a, z) / p(z | a) = p(a)`` for every ``z``, each sample of this
estimator equals the one of ``KVAE.model`` + ``KVAE.guide`` given the same ``a``
(``tests/test_models.py`` checks this). Both support vectorised particles
(``Trace_ELBO(num_particles=K, vectorize_particles=True)``). Fully observed
sequences only: with missing frames the missing ``a_t`` would need per-step guide
sites drawn after ``z``, which this formulation does not have yet.
"""

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine

from ..ops.kalman import backward_conditional, kalman_filter


def _mv(M, v):
    return (M @ v.unsqueeze(-1)).squeeze(-1)


class ExplicitStateModel:
    """The KVAE model with explicit per-step ``z_t`` and ``a_t`` sites; ``kvae`` supplies the networks."""

    def __init__(self, kvae):
        self.kvae = kvae

    def __call__(self, x, u=None, mask=None):
        if mask is not None:
            raise ValueError("ExplicitStateModel supports fully observed sequences only (mask=None)")
        kvae, prior = self.kvae, self.kvae.prior
        x, u, _ = kvae.check_inputs(x, u)
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
            with poutine.scale(scale=kvae.scale_reconstruction):
                pyro.sample("x", px.to_event(1 + len(kvae.frame_shape)), obs=x)
        return a


class ExplicitStateGuide:
    """Encoder for ``a_t``, exact joint FFBS for ``z`` (sequential backward sites ``z_{T-1} .. z_0``)."""

    def __init__(self, kvae):
        self.kvae = kvae

    def __call__(self, x, u=None, mask=None):
        if mask is not None:
            raise ValueError("ExplicitStateGuide supports fully observed sequences only (mask=None)")
        kvae, prior = self.kvae, self.kvae.prior
        x, u, _ = kvae.check_inputs(x, u)
        N, T = x.shape[:2]
        loc, scale = kvae.encoder(x)
        with pyro.plate("sequences", N):
            a = [pyro.sample(f"a_{t}", dist.Normal(loc[:, t], scale[:, t]).to_event(1)) for t in range(T)]
            a = torch.stack(a, -2)  # (batch, T, dim_a), or (particles, batch, T, dim_a)
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
