# SPDX-License-Identifier: Apache-2.0
"""
Bounds on ``log p(x)`` for any model and guide: the ELBO without host synchronisation
(:class:`SyncFreeTrace_ELBO`), and importance-weighted bounds (Burda et al. 2016).

With ``K`` particles ``a_k ~ q(a | x)`` drawn at once (a particle plate at dim -2,
as Pyro's ``vectorize_particles`` does)::

    log p(x) >= L_K = log (1/K) sum_k p(x, a_k) / q(a_k | x) >= L_1 = ELBO

``L_K`` rises with ``K`` towards ``log p(x)``. Missing frames need nothing special:
the model masks their likelihood and the guide's density covers the missing ``a_t``.
"""

import math

import pyro
import torch
from pyro import poutine
from pyro.distributions.util import is_identically_zero
from pyro.infer import Trace_ELBO
from pyro.infer.trace_elbo import _compute_log_r


class SyncFreeTrace_ELBO(Trace_ELBO):
    """
    :class:`pyro.infer.Trace_ELBO` with the same loss and the same gradients, whose
    :meth:`differentiable_loss` never waits on the device: Pyro's reads each sample site's
    ``log_prob_sum`` and the surrogate loss as Python floats (``.item()``) and tests the loss for
    NaN on the host (``warn_if_nan``, again as a hook in backward), six host synchronisations per
    training step of the KVAE (``benchmarks/bench_training.py --host-reads``). Here the loss
    stays a tensor; a non-finite loss is the caller's to check, as
    :class:`~pyro_kvae.train.Trainer` does once per epoch.

    Sites without reparameterised samplers get Pyro's score-function terms, as in
    :class:`~pyro.infer.Trace_ELBO`.
    """

    def differentiable_loss(self, model, guide, *args, **kwargs):
        loss = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            elbo, surrogate = self._particle(model_trace, guide_trace)
            # the value of the ELBO with the gradient of the surrogate (Pyro: loss + (s - s.item()))
            loss = loss - (_detach(elbo) + (surrogate - _detach(surrogate))) / self.num_particles
        return loss

    @staticmethod
    def _particle(model_trace, guide_trace):
        elbo = surrogate = 0.0
        log_r = None
        for site in model_trace.nodes.values():
            if site["type"] == "sample":
                elbo = elbo + site["log_prob_sum"]
                surrogate = surrogate + site["log_prob_sum"]
        for site in guide_trace.nodes.values():
            if site["type"] == "sample":
                _, score_function_term, entropy_term = site["score_parts"]
                elbo = elbo - site["log_prob_sum"]
                if not is_identically_zero(entropy_term):
                    surrogate = surrogate - entropy_term.sum()
                if not is_identically_zero(score_function_term):
                    if log_r is None:
                        log_r = _compute_log_r(model_trace, guide_trace)
                    surrogate = surrogate + (log_r.sum_to(site["cond_indep_stack"]) * score_function_term).sum()
        return elbo, surrogate


def _detach(x):
    return x.detach() if isinstance(x, torch.Tensor) else x


def log_weights(model, guide, num_particles: int, *args, **kwargs) -> torch.Tensor:
    """
    ``log p(x, a_k) - log q(a_k | x)`` for ``K = num_particles`` joint draws from ``guide``.

    ``model`` and ``guide`` take ``*args, **kwargs`` and put their batch in one plate
    (dim -1, as ``KVAE.model`` does with ``"sequences"``).

    :returns: ``(num_particles, batch)``.
    """
    if not isinstance(num_particles, int) or num_particles < 1:
        raise ValueError(f"num_particles must be a positive int, got {num_particles!r}")
    particles = pyro.plate("num_particles_vectorized", num_particles, dim=-2)
    guide_trace = poutine.trace(particles(guide)).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(particles(model), trace=guide_trace)).get_trace(*args, **kwargs)
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    total = sum(s["log_prob"] for s in model_trace.nodes.values() if s["type"] == "sample")
    total = total - sum(s["log_prob"] for s in guide_trace.nodes.values() if s["type"] == "sample")
    return total.expand(num_particles, total.shape[-1])


def importance_weighted_bound(model, guide, num_particles: int, *args, **kwargs) -> torch.Tensor:
    """``L_K`` per sequence, ``(batch,)``; ``num_particles=1`` gives a one-sample ELBO."""
    lw = log_weights(model, guide, num_particles, *args, **kwargs)
    return torch.logsumexp(lw, 0) - math.log(num_particles)
