# SPDX-License-Identifier: Apache-2.0
"""
Importance-weighted bounds on ``log p(x)`` (Burda et al. 2016) for any model and guide.

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
