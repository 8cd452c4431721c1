# SPDX-License-Identifier: Apache-2.0
"""
The Kalman Variational Auto-Encoder as a Pyro model (paper section 3)::

    a ~ p_gamma(a | u)                   KalmanPrior: LGSSM with z marginalised
    x_t ~ p_theta(x_t | a_t)             decoder, observed frames only

Use with any guide for ``"a"``, e.g. the default :meth:`KVAE.guide`::

    svi = SVI(kvae.model, kvae.guide, Adam({"lr": 7e-3}), Trace_ELBO())
"""

import math

import pyro
import torch
from pyro import poutine
from pyro.nn import PyroModule, pyro_method
from pyro.nn.module import to_pyro_module_
from torch import nn

from ..nn.vae import PIXEL_VAR_FLOOR, frame_distribution, frame_mask, frame_shape
from .guides import SmoothingGuide
from .prior import KalmanPrior


def check_frame_values(x: torch.Tensor, likelihood: str) -> None:
    """Raises ``ValueError`` unless the frames are finite, binary for the ``"bernoulli"``
    likelihood and in [0, 1] for ``"continuous_bernoulli"``."""
    if not torch.isfinite(x).all():
        raise ValueError("x must be finite in observed frames (missing frames may hold anything; give a mask)")
    if likelihood == "continuous_bernoulli" and x.numel() and (x.min() < 0 or x.max() > 1):
        hint = ": scale 8-bit frames by 1/255" if x.max() > 1 else ""
        raise ValueError(
            f"x must lie in [0, 1] for the continuous Bernoulli likelihood, got {x.min():g} to {x.max():g}{hint}"
        )
    if likelihood == "bernoulli":
        bad = (x != 0) & (x != 1)
        if bad.any():
            value = x[bad][0].item()
            hint = "scale 8-bit frames by 1/255 and " if x.max() > 1 else ""
            raise ValueError(
                f"x must be binary (0 or 1) for the Bernoulli likelihood, found {value:g}: {hint}"
                "threshold the frames (x > 0.5), or use likelihood='continuous_bernoulli' or 'gaussian' (--likelihood)"
            )


class KVAE(PyroModule):
    """
    :param encoder: module ``x (..., *frame_shape) -> (loc, scale) (..., dim_a)``.
    :param decoder: module ``a (..., dim_a) -> (..., *frame_shape)`` logits or means.
    :param KalmanPrior prior: the LGSSM prior with its dynamics network.
    :param str likelihood: ``"bernoulli"`` (binary frames), ``"continuous_bernoulli"`` (frames
        in [0, 1]), ``"gaussian"`` (fixed variance) or ``"gaussian_learned"`` (a learned
        variance per pixel, at least :data:`~pyro_kvae.nn.vae.PIXEL_VAR_FLOOR`).
    :param float pixel_var: Gaussian pixel variance (reference: 0.1); the learned one starts there.
    :param frame_size: the frame shape ``frame_shape``: ``H == W`` as an int, ``(H, W)``, or
        ``(C, H, W)`` for several channels. Frames are ``x (batch, T, *frame_shape)``.

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
        self.likelihood, self.pixel_var = likelihood, pixel_var
        self.frame_shape = frame_shape(frame_size)
        used = self._pyro_context.used
        try:
            self._check_parts(prior, encoder)
        finally:  # the probe is no use of the parts: they may still join another model (Pyro checks this flag)
            self._pyro_context.used = used
        if likelihood == "gaussian_learned":
            self.pixel_log_var = nn.Parameter(torch.full(self.frame_shape, math.log(pixel_var - PIXEL_VAR_FLOOR)))
        self.scale_reconstruction = 1.0
        # checked frames per call; the trainer checks a whole dataset once and turns this off
        # inside its steps, which then need no host synchronisation for it
        self.check_frames = True
        self._guide = SmoothingGuide(self)

    @torch.no_grad()
    def _check_parts(self, prior, encoder):
        """The encoder, decoder and ``prior`` agree on ``dim_a`` and the frame shape: one pass of two
        zero frames, so that a mismatch is named here rather than deep inside the first ELBO. (The
        prior is not run, so that a part can be reused after a failed construction.)"""
        if not isinstance(prior, KalmanPrior):
            raise TypeError(f"prior must be a KalmanPrior, got {type(prior).__name__}")
        dim_a, shape = prior.dim_a, self.frame_shape
        param = next(torch.nn.Module.parameters(encoder), None)
        device = param.device if param is not None else None
        frames = f"(batch, T, {', '.join(map(str, shape))})"
        try:
            out = self.encoder(torch.zeros((1, 2) + shape, device=device))
        except (RuntimeError, ValueError) as e:
            raise ValueError(f"the encoder does not take frames {frames} (frame_size={shape}): {e}") from None
        if not (isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(o, torch.Tensor) for o in out)):
            raise ValueError("the encoder must return (loc, scale), each (batch, T, dim_a)")
        if out[0].shape != (1, 2, dim_a) or out[1].shape != (1, 2, dim_a):
            raise ValueError(
                f"the encoder gives a of shape {tuple(out[0].shape)} for frames of shape (1, 2, "
                f"{', '.join(map(str, shape))}), the prior's dim_a is {dim_a}: expected (1, 2, {dim_a})"
            )
        try:
            x = self.decoder(torch.zeros(1, 2, dim_a, device=device))
        except (RuntimeError, ValueError) as e:
            raise ValueError(
                f"the decoder does not take a of the prior's dim_a = {dim_a}, (batch, T, {dim_a}): {e}"
            ) from None
        if not isinstance(x, torch.Tensor) or x.shape != (1, 2) + shape:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"the decoder must give frames {frames} = (1, 2, {', '.join(map(str, shape))}), got {got}")

    def check_inputs(self, x, u=None, mask=None):
        """
        Validates ``x (batch, T, *frame_shape)``, ``u (batch, T, dim_u)``, ``mask (batch, T)`` and
        returns them with ``x`` in the model's dtype and missing frames of ``x`` set to zero
        (they may hold anything).

        Shapes and the frames' values (finite, and binary for the Bernoulli likelihood) are
        checked always, also with Pyro's validation off: they cost a reduction over the
        frames, and a wrong scale (0..255) or grey frames would otherwise train silently on
        a meaningless loss.
        """
        shape = f"(batch, T, {', '.join(str(n) for n in self.frame_shape)})"
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            got = f"dtype {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise TypeError(f"x must be a floating point tensor of shape {shape}, got {got}")
        if x.dim() != 2 + len(self.frame_shape) or x.shape[2:] != self.frame_shape:
            raise ValueError(f"x must have shape {shape}, got {tuple(x.shape)}")
        if x.size(0) == 0 or x.size(1) == 0:
            raise ValueError(f"x must hold at least one sequence of at least one frame {shape}, got {tuple(x.shape)}")
        x = x.to(self.prior.A.dtype)
        if mask is not None:
            if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != x.shape[:2]:
                got = f"{mask.dtype} {tuple(mask.shape)}" if isinstance(mask, torch.Tensor) else type(mask).__name__
                raise ValueError(f"mask must be a bool tensor of shape {tuple(x.shape[:2])}, got {got}")
            x = torch.where(self.frame_mask(mask), x, x.new_zeros(()))
        if self.check_frames:
            check_frame_values(x, self.likelihood)
        if u is not None:
            self.prior._check_u(u, x.shape[:2])
        return x, u, mask

    def model(self, x, u=None, mask=None):
        """
        :param torch.Tensor x: frames ``(batch, T, *frame_shape)``; missing frames may hold anything.
        :param torch.Tensor u: controls ``(batch, T, dim_u)`` (if the prior has ``dim_u > 0``).
        :param torch.Tensor mask: bool ``(batch, T)``, True where the frame is observed.
        :returns: the sampled ``a (batch, T, dim_a)``.
        """
        x, u, mask = self.check_inputs(x, u, mask)
        N, T = x.shape[:2]
        with pyro.plate("sequences", N):
            a = pyro.sample("a", self.prior.distribution((N,), T, u))
            px = self.frame_distribution(self.decoder(a).to(x.dtype))
            if mask is not None:
                px = px.mask(self.frame_mask(mask))
            with poutine.scale(scale=self.scale_reconstruction):
                pyro.sample("x", px.to_event(1 + len(self.frame_shape)), obs=x)
        return a

    def frame_mask(self, mask):
        """``mask (batch, T)`` with singleton dims for the frame: ``(batch, T, 1, 1[, 1])``."""
        return frame_mask(mask, self.frame_shape)

    @pyro_method
    def pixel_variance(self):
        """The Gaussian pixel variance: ``pixel_var``, or learned per pixel ``(*frame_shape)``."""
        if self.likelihood == "gaussian_learned":
            return PIXEL_VAR_FLOOR + self.pixel_log_var.exp()
        return self.pixel_var

    def frame_distribution(self, out):
        """``p(x_t | a_t)`` from the decoder output ``out (..., *frame_shape)`` (see
        :func:`~pyro_kvae.nn.vae.frame_distribution`)."""
        return frame_distribution(out, self.likelihood, self.pixel_variance())

    def guide(self, x, u=None, mask=None):
        """The default guide, :class:`~pyro_kvae.models.guides.SmoothingGuide`."""
        return self._guide(x, u, mask)

    def forward(self, x, u=None, mask=None):
        return self.model(x, u, mask)
