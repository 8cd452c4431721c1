# SPDX-License-Identifier: Apache-2.0
"""
Guides for the KVAE's ``a`` site (paper eq. 5).

:class:`SmoothingGuide` (the default, ``KVAE.guide``): observed frames are
encoded, ``q(a_t | x_t) = N(loc_t, scale_t^2)``; missing ``a_t`` are drawn
from the exact conditional of the LGSSM given the observed ones,
``p_gamma_hat(a_un | a_obs)``, with ``gamma_hat`` estimated recursively as in
paper section 4 (predicted means fed to the dynamics network).

Any callable ``guide(x, u=None, mask=None)`` that samples a site ``"a"`` of
shape ``(batch, T, dim_a)`` inside ``pyro.plate("sequences", batch)`` can
replace it, e.g. ``pyro.infer.autoguide.AutoNormal(kvae.model)``.
"""

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import TorchDistribution, constraints

from ..ops.checks import cholesky
from ..ops.kalman import backward_sample
from ..ops.precision import full_precision


class EncoderSmootherPosterior(TorchDistribution):
    """
    ``q(a | x) = prod_{t obs} N(a_t; loc_t, scale_t^2) * p_gamma_hat(a_un | a_obs)``.

    :param torch.Tensor loc: ``(batch, T, dim_a)`` encoder means.
    :param torch.Tensor scale: ``(batch, T, dim_a)`` encoder standard deviations.
    :param torch.Tensor mask: bool ``(batch, T)``, True where the frame is observed.
    :param KalmanPrior prior: the model's prior (gives ``gamma_hat`` and the LGSSM).
    :param torch.Tensor u: optional ``(batch, T, dim_u)`` controls.

    ``gamma_hat`` is a deterministic function of ``a_obs``, so ``log_prob`` is
    exact: ``log p_gamma_hat(a_un | a_obs) = log p_gamma_hat(a) - log p_gamma_hat(a_obs)``.

    One recursive filter pass (:meth:`KalmanPrior.filter`) gives ``gamma_hat``,
    ``log p_gamma_hat(a_obs)``, the filtered moments from which :meth:`rsample`
    draws ``z ~ p_gamma_hat(z | a_obs)`` by backward sampling, and in the same
    operations the covariances of the filter that observes every step; it is kept for
    the :meth:`log_prob` of the value just sampled, whose ``log p_gamma_hat(a)`` then
    needs only the means (:meth:`KalmanPrior.observed_log_prob`).

    Several samples (``rsample(sample_shape)``, or vectorised particles, which
    :meth:`expand` the batch shape) are independent draws of the whole chain: each
    has its own encoder noise, its own ``gamma_hat`` and its own conditional sample.
    """

    arg_constraints = {}
    support = constraints.independent(constraints.real, 2)
    has_rsample = True

    def __init__(self, loc, scale, mask, prior, u=None, validate_args=None):
        self.loc, self.scale, self.mask, self.prior, self.u = loc, scale, mask, prior, u
        self._cache = None
        super().__init__(loc.shape[:-2], loc.shape[-2:], validate_args=validate_args)

    def _filter(self, a):
        """The recursive filter on the observed part of ``a`` (kept from :meth:`rsample` for its sample)."""
        if self._cache is not None and self._cache[0] is a:
            return self._cache[1]
        return self.prior.filter(a, self.mask, self.u)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        u = None if self.u is None else self.u.expand(batch_shape + self.u.shape[-2:])
        return EncoderSmootherPosterior(
            self.loc.expand(batch_shape + self.event_shape),
            self.scale.expand(batch_shape + self.event_shape),
            self.mask.expand(batch_shape + self.mask.shape[-1:]),
            self.prior,
            u,
            validate_args=False,
        )

    @full_precision
    def rsample(self, sample_shape=torch.Size()):
        """``sample_shape + (batch, T, dim_a)``"""
        if sample_shape != torch.Size():
            return self.expand(torch.Size(sample_shape) + self.batch_shape).rsample()
        encoded = dist.Normal(self.loc, self.scale).rsample()
        r = self.prior.filter(encoded, self.mask, self.u, observed_covariances=True)
        A, _, C = self.prior.mix(r.alpha)
        z = backward_sample(r.filtered, A, torch.randn_like(r.filtered.filt_mean))  # (batch, T, dim_z), float64
        noise = torch.randn_like(encoded).unsqueeze(-1)
        a_un = (C @ z.to(C.dtype).unsqueeze(-1) + cholesky(self.prior.R, "R") @ noise).squeeze(-1)
        a = torch.where(self.mask.unsqueeze(-1), encoded, a_un)
        self._cache = (a, r)
        return a

    @full_precision
    def log_prob(self, value):
        encoder = dist.Normal(self.loc, self.scale).log_prob(value).sum(-1)
        encoder = torch.where(self.mask, encoder, encoder.new_zeros(())).sum(-1)
        return encoder + self.missing_log_prob(value)

    @full_precision
    def missing_log_prob(self, value):
        """``log p_gamma_hat(a_un | a_obs)`` of ``value (..., batch, T, dim_a)``, shape ``(..., batch)``."""
        if value.shape[:-2] != self.batch_shape:  # e.g. particles
            return self.expand(value.shape[:-2]).missing_log_prob(value)
        r = self._filter(value)
        if r.observed is not None:  # the value rsample drew: its covariance pass is done
            full = self.prior.observed_log_prob(r, value, self.u)
        else:
            full = self.prior.lgssm(r.alpha, self.u).log_prob(value.to(torch.float64))  # float64 in, float64 out
        return (full - r.filtered.log_prob).to(value.dtype)


class SmoothingGuide:
    """
    The default KVAE guide: encoder for observed frames, exact conditional
    smoothing for missing ones (see :class:`EncoderSmootherPosterior`).
    Without a mask it is the plain encoder ``prod_t q(a_t | x_t)``.

    :param KVAE kvae: the model whose ``encoder`` and ``prior`` it uses.
    """

    def __init__(self, kvae):
        self.kvae = kvae

    def __call__(self, x, u=None, mask=None):
        x, u, mask = self.kvae.check_inputs(x, u, mask)
        loc, scale = (t.to(x.dtype) for t in self.kvae.encoder(x))  # float32 also under mixed precision
        if mask is None:
            q = dist.Normal(loc, scale).to_event(2)
        else:
            q = EncoderSmootherPosterior(loc, scale, mask, self.kvae.prior, u)
        with pyro.plate("sequences", x.shape[0]):
            return pyro.sample("a", q)


class EncoderMeanGuide:
    """
    A point-mass guide ``q(a | x) = delta(a - loc(x))`` at the encoder's means (missing
    frames are not supported). The ELBO it gives is deterministic, ``log p(x, a = loc)``,
    which makes it the guide for comparing one computation with another: devices, numbers
    of processes, precisions. Not a variational posterior to train with for results.

    :param KVAE kvae: the model whose ``encoder`` it uses.
    """

    def __init__(self, kvae):
        self.kvae = kvae

    def __call__(self, x, u=None, mask=None):
        if mask is not None:
            raise ValueError("EncoderMeanGuide does not support missing frames (mask must be None)")
        x, u, mask = self.kvae.check_inputs(x, u, mask)
        loc, _ = self.kvae.encoder(x)
        with pyro.plate("sequences", x.shape[0]):
            return pyro.sample("a", dist.Delta(loc.to(x.dtype), event_dim=2))
