# SPDX-License-Identifier: Apache-2.0
"""Bad input gets a ValueError/TypeError naming the argument and the expected shape."""

import pyro
import pytest
import torch
from test_lgssm import problem

from pyro_kvae.distributions import LinearGaussianSSM
from pyro_kvae.ops.kalman import kalman_filter, kalman_smoother
from pyro_kvae.ops.lgssm import lgssm_log_prob, lgssm_posterior_rsample


def _good():
    a, mask, p = problem(T=5, dz=3, da=2, batch=4, kind="random")
    return a, mask, p


OPS = [lgssm_log_prob, lgssm_posterior_rsample, kalman_filter, kalman_smoother]


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize(
    "name, value, match",
    [
        ("A", torch.zeros(4, 5, 3, 2), r"A must have shape \(\.\.\., T, dim_z, dim_z\)"),
        ("C", torch.zeros(4, 5, 2, 4), r"C must have shape \(\.\.\., T, dim_a, 3\)"),
        ("Q", torch.eye(2, dtype=torch.float64), r"Q must have shape \(\.\.\., 3, 3\)"),
        ("R", torch.eye(3, dtype=torch.float64), r"R must have shape \(\.\.\., 2, 2\)"),
        ("mu0", torch.zeros(4, 2, dtype=torch.float64), r"mu0 must have shape \(\.\.\., 3\)"),
        ("Sigma0", torch.eye(2, dtype=torch.float64), r"Sigma0 must have shape \(\.\.\., 3, 3\)"),
        ("b", torch.zeros(4, 5, 2, dtype=torch.float64), r"b must have shape \(\.\.\., T, 3\)"),
        ("A", torch.eye(3, dtype=torch.float64).expand(4, 4, 3, 3), r"A must have shape \(\.\.\., 5, 3, 3\)"),
        ("mu0", torch.zeros(3, 3, dtype=torch.float64), r"batch dims .* do not broadcast"),
    ],
)
def test_bad_shapes(op, name, value, match):
    a, mask, p = _good()
    p[name] = value.to(torch.float64)
    with pytest.raises(ValueError, match=match):
        op(a, mask=mask, **p)


@pytest.mark.parametrize("op", OPS)
def test_bad_value_and_mask(op):
    a, mask, p = _good()
    with pytest.raises(ValueError, match=r"a must have shape \(\.\.\., T, 2\)"):
        op(a[..., :1], mask=mask, **p)
    with pytest.raises(ValueError, match=r"mask must have shape \(\.\.\., 5\)"):
        op(a, mask=mask[:, :3], **p)
    with pytest.raises(ValueError, match=r"mask must be a bool tensor of shape \(\.\.\., T\)"):
        op(a, mask=mask.float(), **p)
    with pytest.raises(TypeError, match="A must be a torch.Tensor"):
        op(a, mask=mask, **dict(p, A=p["A"].tolist()))
    with pytest.raises(TypeError, match="C must be a floating point tensor"):
        op(a, mask=mask, **dict(p, C=p["C"].long()))


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("name", ["Q", "R", "Sigma0"])
def test_non_spd(op, name):
    a, mask, p = _good()
    bad = p[name].clone()
    bad[..., 0, 0] = -1.0
    with pytest.raises(ValueError, match=f"{name} must be positive definite"):
        op(a, mask=mask, **dict(p, **{name: bad}))
    asym = p[name].clone()
    asym[..., 0, 1] += 0.5
    with pytest.raises(ValueError, match=f"{name} must be symmetric"):
        op(a, mask=mask, **dict(p, **{name: asym}))


@pytest.mark.parametrize("op", OPS)
def test_nan_in_observed_step(op):
    a, mask, p = _good()
    a = a.clone()
    i, t = mask.nonzero()[0].tolist()
    a[i, t, 0] = float("nan")
    with pytest.raises(ValueError, match=r"a must be finite wherever mask is True"):
        op(a, mask=mask, **p)
    with pytest.raises(ValueError, match=r"a must be finite"):
        op(a, **p)  # no mask: every step is observed


def test_value_checks_follow_pyro_validation():
    a, mask, p = _good()
    bad = p["Q"].clone()
    bad[..., 0, 1] += 0.5
    with pyro.validation_enabled(False):
        lgssm_log_prob(a, mask=mask, **dict(p, Q=bad))  # no check, no error


def test_distribution_errors():
    a, mask, p = _good()
    d = LinearGaussianSSM(p["mu0"], p["Sigma0"], p["A"], p["Q"], p["C"], p["R"], mask=mask)
    with pytest.raises(ValueError, match=r"value must have shape \(\.\.\., 5, 2\)"):
        d.log_prob(a[:, :4])
    with pytest.raises(ValueError, match="B and u must be given together"):
        LinearGaussianSSM(p["mu0"], p["Sigma0"], p["A"], p["Q"], p["C"], p["R"], B=torch.zeros(5, 3, 1))
    with pytest.raises(ValueError, match=r"noise must have shape \(4, 5, 3\)"):
        d.rsample_posterior(a, noise=torch.zeros(4, 5, 2))
