# SPDX-License-Identifier: Apache-2.0
"""
The Kalman Variational Auto-Encoder as a Pyro model (paper section 3)::

    a ~ p_gamma(a | u)                   KalmanPrior: LGSSM with z marginalised
    x_t ~ p_theta(x_t | a_t)             decoder, observed frames only

Use with any guide for ``"a"``, e.g. the default :meth:`KVAE.guide`::

    svi = SVI(kvae.model, kvae.guide, Adam({"lr": 7e-3}), Trace_ELBO())
"""

import pyro
import torch
from pyro import poutine
from pyro.distributions.util import is_validation_enabled
from pyro.nn import PyroModule
from pyro.nn.module import to_pyro_module_

from ..nn.vae import frame_distribution
from .guides import SmoothingGuide
from .prior import KalmanPrior


class KVAE(PyroModule):
    """
    :param encoder: module ``x (..., H, W) -> (loc, scale) (..., dim_a)``.
    :param decoder: module ``a (..., dim_a) -> (..., H, W)`` logits or means.
    :param KalmanPrior prior: the LGSSM prior with its dynamics network.
    :param str likelihood: ``"bernoulli"`` (binary frames) or ``"gaussian"``.
    :param float pixel_var: Gaussian pixel variance (reference: 0.1).
    :param int frame_size: ``H == W`` of the frames.

    ``scale_reconstruction`` weights ``log p(x | a)`` in :meth:`model` (the
    reference trains with 0.3 and reports the ELBO with 1.0, the default here).
    """

    def __init__(self, encoder, decoder, prior: KalmanPrior, likelihood="bernoulli", pixel_var=0.1, frame_size=32):
        super().__init__()
        self.encoder, self.decoder, self.prior = encoder, decoder, prior
        # plain torch submodules (nn.Sequential, nn.LSTM, ...) become PyroModules in place, so
        # that every parameter reaches Pyro's param store and SVI with a pyro.optim optimiser
        to_pyro_module_(self)
        frame_distribution(torch.zeros(1), likelihood)  # validates the name
        self.likelihood, self.pixel_var, self.frame_size = likelihood, pixel_var, frame_size
        self.scale_reconstruction = 1.0
        self._guide = SmoothingGuide(self)

    def check_inputs(self, x, u=None, mask=None):
        """
        Validates ``x (batch, T, H, W)``, ``u (batch, T, dim_u)``, ``mask (batch, T)`` and
        returns them with missing frames of ``x`` set to zero (they may hold anything).
        """
        s = self.frame_size
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"x must be a floating point tensor of shape (batch, T, {s}, {s})")
        if x.dim() != 4 or x.shape[-2:] != (s, s):
            raise ValueError(f"x must have shape (batch, T, {s}, {s}), got {tuple(x.shape)}")
        if mask is not None:
            if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != x.shape[:2]:
                got = f"{mask.dtype} {tuple(mask.shape)}" if isinstance(mask, torch.Tensor) else type(mask).__name__
                raise ValueError(f"mask must be a bool tensor of shape {tuple(x.shape[:2])}, got {got}")
            x = torch.where(mask[..., None, None], x, x.new_zeros(()))
        if is_validation_enabled():
            if not torch.isfinite(x).all():
                raise ValueError("x must be finite in observed frames")
            if self.likelihood == "bernoulli" and ((x < 0) | (x > 1)).any():
                raise ValueError("x must lie in [0, 1] for the Bernoulli likelihood")
        if u is not None:
            self.prior._check_u(u, x.shape[:2])
        return x, u, mask

    def model(self, x, u=None, mask=None):
        """
        :param torch.Tensor x: frames ``(batch, T, H, W)``; missing frames may hold anything.
        :param torch.Tensor u: controls ``(batch, T, dim_u)`` (if the prior has ``dim_u > 0``).
        :param torch.Tensor mask: bool ``(batch, T)``, True where the frame is observed.
        :returns: the sampled ``a (batch, T, dim_a)``.
        """
        x, u, mask = self.check_inputs(x, u, mask)
        N, T = x.shape[:2]
        with pyro.plate("sequences", N):
            a = pyro.sample("a", self.prior.distribution((N,), T, u))
            px = frame_distribution(self.decoder(a), self.likelihood, self.pixel_var)
            if mask is not None:
                px = px.mask(mask[..., None, None])
            with poutine.scale(scale=self.scale_reconstruction):
                pyro.sample("x", px.to_event(3), obs=x)
        return a

    def guide(self, x, u=None, mask=None):
        """The default guide, :class:`~pyro_kvae.models.guides.SmoothingGuide`."""
        return self._guide(x, u, mask)

    def forward(self, x, u=None, mask=None):
        return self.model(x, u, mask)
