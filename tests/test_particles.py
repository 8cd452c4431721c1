# SPDX-License-Identifier: Apache-2.0
"""Multi-sample estimators with missing frames: vectorised particles, their variance, importance-weighted bounds."""

import math

import pyro
import pytest
import torch
from pyro.infer import RenyiELBO, Trace_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO
from test_imputation import identity_kvae
from test_train import config

from pyro_kvae.bounds import importance_weighted_bound, log_weights
from pyro_kvae.config import build_kvae
from pyro_kvae.distributions import LinearGaussianSSM
from pyro_kvae.nn import FixedDynamics

ESTIMATORS = {
    "Trace_ELBO": Trace_ELBO,
    "TraceMeanField_ELBO": TraceMeanField_ELBO,
    "TraceGraph_ELBO": TraceGraph_ELBO,
    "RenyiELBO(alpha=0)": lambda **kw: RenyiELBO(alpha=0.0, **kw),
    "RenyiELBO(alpha=0.5)": lambda **kw: RenyiELBO(alpha=0.5, **kw),
}


@pytest.fixture(scope="module")
def masked_batch():
    pyro.set_rng_seed(0)
    kvae = build_kvae(config(epochs=1))
    x = (torch.rand(3, 8, 16, 16, generator=torch.Generator().manual_seed(1)) > 0.9).float()
    mask = torch.ones(3, 8, dtype=torch.bool)
    mask[:, 3:6] = False  # a gap
    mask[1, 1] = False
    return kvae, x, mask


def losses(estimator, kvae, x, mask, vectorize, particles, repeats):
    elbo = ESTIMATORS[estimator](num_particles=particles, vectorize_particles=vectorize, max_plate_nesting=1)
    with torch.no_grad():
        return torch.tensor([elbo.loss(kvae.model, kvae.guide, x, None, mask) for _ in range(repeats)])


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_vectorised_and_sequential_particles_agree_with_missing_frames(masked_batch, estimator):
    kvae, x, mask = masked_batch
    pyro.set_rng_seed(2)
    vec = losses(estimator, kvae, x, mask, True, 4, 40)
    seq = losses(estimator, kvae, x, mask, False, 4, 40)
    se = math.sqrt(vec.var() / len(vec) + seq.var() / len(seq))
    print(f"{estimator}: vectorised {vec.mean():.2f}, sequential {seq.mean():.2f}, standard error {se:.2f}")
    assert torch.isfinite(vec).all() and torch.isfinite(seq).all()
    assert abs(vec.mean() - seq.mean()) < 4 * se


def test_gradients_with_vectorised_particles_and_masks(masked_batch):
    kvae, x, mask = masked_batch
    kvae.zero_grad()
    loss = Trace_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1).differentiable_loss(
        kvae.model, kvae.guide, x, None, mask
    )
    loss.backward()
    named = dict(kvae.named_parameters())
    missing = [n for n, p in named.items() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing


def test_variance_falls_as_one_over_K(masked_batch):
    kvae, x, mask = masked_batch
    pyro.set_rng_seed(3)
    var1 = losses("Trace_ELBO", kvae, x, mask, True, 1, 150).var()
    var8 = losses("Trace_ELBO", kvae, x, mask, True, 8, 150).var()
    print(f"variance of the ELBO estimate: K=1 {var1:.2f}, K=8 {var8:.2f}, ratio {var1 / var8:.2f} (expected 8)")
    assert 8 / 2 < var1 / var8 < 8 * 2  # the ratio of two variance estimates from 150 draws each


def exact_log_px(kvae, x, mask):
    """log p(x_obs) of the identity-decoder linear-Gaussian KVAE: x_t = a_t + N(0, pixel_var)."""
    prior = kvae.prior
    T = x.shape[1]
    A, _, C = prior.mix(torch.ones(T, 1, dtype=x.dtype))
    R = prior.R + kvae.pixel_var * torch.eye(prior.dim_a, dtype=x.dtype)
    return LinearGaussianSSM(prior.mu0, prior.Sigma0, A, prior.Q, C, R, mask=mask).log_prob(x.flatten(-2))


@pytest.mark.parametrize("masked", [False, True])
def test_importance_weighted_bound_rises_towards_the_exact_log_likelihood(masked):
    kvae = identity_kvae(FixedDynamics(dim_a=4, K=1))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 6, 2, 2, generator=g, dtype=torch.float64)
    mask = torch.rand(16, 6, generator=g) > 0.3 if masked else None
    if masked:
        mask[:, 0] = True
    exact = exact_log_px(kvae, x, mask)
    pyro.set_rng_seed(4)
    with torch.no_grad():
        assert log_weights(kvae.model, kvae.guide, 7, x, None, mask).shape == (7, 16)
        bounds = {
            K: torch.stack([importance_weighted_bound(kvae.model, kvae.guide, K, x, None, mask) for _ in range(20)])
            for K in (1, 10, 100)
        }
    means = {K: b.mean().item() for K, b in bounds.items()}
    print(
        f"mean over sequences: exact log p(x) {exact.mean():.3f}, "
        + ", ".join(f"L_{K} {v:.3f}" for K, v in means.items())
    )
    assert means[1] < means[10] < means[100] < exact.mean().item()
    # per sequence, averaged over repeats, the bound stays below log p(x) and rises with K
    assert (bounds[100].mean(0) < exact + 1e-3).all()
    assert (bounds[100].mean(0) > bounds[1].mean(0)).all()


@pytest.mark.parametrize("masked", [False, True])
def test_explicit_state_variant_with_vectorised_particles(masked_batch, masked):
    from pyro_kvae.models import ExplicitStateGuide, ExplicitStateModel

    kvae, x, mask = masked_batch
    mask = mask if masked else None
    model, guide = ExplicitStateModel(kvae), ExplicitStateGuide(kvae)
    pyro.set_rng_seed(5)
    runs = {}
    with torch.no_grad():
        for vec in (True, False):
            elbo = Trace_ELBO(num_particles=4, vectorize_particles=vec, max_plate_nesting=1)
            runs[vec] = torch.tensor([elbo.loss(model, guide, x, None, mask) for _ in range(40)])
    collapsed = losses("Trace_ELBO", kvae, x, mask, True, 4, 40)
    se = math.sqrt(runs[True].var() / 40 + runs[False].var() / 40)
    assert abs(runs[True].mean() - runs[False].mean()) < 4 * se
    se = math.sqrt(runs[True].var() / 40 + collapsed.var() / 40)
    assert abs(runs[True].mean() - collapsed.mean()) < 4 * se  # eq. (7) estimates the collapsed ELBO
