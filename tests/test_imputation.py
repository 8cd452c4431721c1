# SPDX-License-Identifier: Apache-2.0
"""Imputation on a tiny model with a known answer."""

import torch
from lgssm_reference import textbook_kalman
from torch import nn

from pyro_kvae.imputation import generate, impute, pixel_error
from pyro_kvae.models import KVAE, KalmanPrior
from pyro_kvae.nn import FixedDynamics, LSTMDynamics


class Flatten(nn.Module):
    """Identity 'encoder': a 2x2 frame is its own 4-d encoding."""

    def forward(self, x):
        a = x.flatten(-2)
        return a, torch.full_like(a, 0.1)


class Unflatten(nn.Module):
    def forward(self, a):
        return a.unflatten(-1, (2, 2))


def identity_kvae(dynamics):
    torch.manual_seed(0)
    prior = KalmanPrior(dynamics, dim_z=3, init_std=0.5).double()
    return KVAE(Flatten(), Unflatten(), prior, likelihood="gaussian", frame_size=2)


def test_fixed_alpha_identity_decoder_reproduces_kalman_smoother():
    kvae = identity_kvae(FixedDynamics(dim_a=4, K=1))
    prior = kvae.prior
    N, T = 3, 7
    x = torch.randn(N, T, 2, 2, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0, 0, 1, 0, 1], [1, 0, 0, 0, 0, 0, 1], [1, 1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    A, _, C = prior.mix(torch.ones(T, 1, dtype=torch.float64))
    b = torch.zeros(T, 3, dtype=torch.float64)
    for smooth in (True, False):
        out = impute(kvae, x, mask, smooth=smooth)
        for i in range(N):
            ref = textbook_kalman(x[i].flatten(-2), mask[i], A, C, prior.Q, prior.R, prior.mu0, prior.Sigma0, b)
            z = ref[5] if smooth else ref[3]
            assert (out.z_mean[i] - z).abs().max() < 1e-8
            expected = torch.where(mask[i, :, None], x[i].flatten(-2), z @ C[0].T)
            assert (out.a[i] - expected).abs().max() < 1e-8
            assert (out.x[i] - expected.unflatten(-1, (2, 2))).abs().max() < 1e-8


def test_smoothing_uses_the_future_filtering_does_not():
    kvae = identity_kvae(LSTMDynamics(dim_a=4, K=2))
    x = torch.randn(2, 6, 2, 2, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0, 0, 1, 1]] * 2, dtype=torch.bool)
    y = x.clone()
    y[:, 4:] += 3.0  # change only the future observed frames
    f1, f2 = impute(kvae, x, mask, smooth=False), impute(kvae, y, mask, smooth=False)
    s1, s2 = impute(kvae, x, mask), impute(kvae, y, mask)
    assert torch.allclose(f1.a[:, 2:4], f2.a[:, 2:4])
    assert not torch.allclose(s1.a[:, 2:4], s2.a[:, 2:4])


def test_generate_and_pixel_error():
    kvae = identity_kvae(LSTMDynamics(dim_a=4, K=2))
    x = torch.randn(2, 3, 2, 2, dtype=torch.float64)
    out = generate(kvae, x, T=8)
    assert out.x.shape == (2, 8, 2, 2) and torch.allclose(out.a[:, :3], x.flatten(-2))
    truth = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]] * 2])
    guess = torch.tensor([[[[0.9, 0.6], [0.2, 0.1]], [[0.1, 0.1], [0.1, 0.1]]]])
    mask = torch.tensor([[False, False]])
    assert pixel_error(guess, truth, mask).item() == (1 / 4 + 1 / 4) / 2
    assert pixel_error(guess, truth, torch.tensor([[True, False]])).item() == 1 / 4
