# SPDX-License-Identifier: Apache-2.0
"""Dynamics networks stepped one step at a time (the recursive filter's use) against torch's own cells."""

import pytest
import torch

from pyro_kvae.nn import GRUDynamics, LSTMDynamics

f64 = torch.float64


@pytest.mark.parametrize("dtype", [None, f64])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_dynamics_step_is_the_torch_cell(cell, dtype):
    """step() from init_state() gives the alphas of torch's own cell and output layer step by step and of the
    teacher-forced forward(), and the same gradients for every weight and the inputs (float32 parameters,
    steps in float32 or float64)."""
    torch.manual_seed(0)
    dyn = (LSTMDynamics if cell == "lstm" else GRUDynamics)(dim_a=3, K=4, hidden=7)
    with torch.no_grad():
        dyn.a0.normal_()
    a = torch.randn(2, 5, 3, requires_grad=True)

    def by_steps(step):
        state, a_prev, alphas = dyn.init_state((2,), dtype=dtype), dyn.a0.expand(2, 3), []
        for t in range(5):
            alpha, state = step(a_prev if dtype is None else a_prev.to(dtype), state)
            alphas.append(alpha.float())
            a_prev = a[:, t] * alphas[-1][:, :1]  # feed the output back, as the recursive filter does
        return torch.stack(alphas, 1)

    rnn = dyn.rnn
    weights = [rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0]

    def torch_step(a_prev, state):
        x = a_prev.float()
        if cell == "lstm":
            h, c = torch.lstm_cell(x, (state.h.float(), state.c.float()) if state is not None else None, *weights)
            new = type("S", (), {"h": h, "c": c})
        else:
            h = new = torch.gru_cell(x, state.float(), *weights)
        return torch.softmax(dyn.out(h), -1), new

    ours = by_steps(dyn.step)
    theirs = by_steps(lambda a_prev, state: torch_step(a_prev, state))
    tol = 1e-5 if dtype is None else 2e-6
    assert (ours - theirs).abs().max() < tol
    params = [a, dyn.a0, dyn.out.weight, dyn.out.bias] + weights
    g_ours = torch.autograd.grad(ours.pow(2).sum(), params)
    g_theirs = torch.autograd.grad(theirs.pow(2).sum(), params)
    for x, y in zip(g_ours, g_theirs):
        assert (x - y).abs().max() < 10 * tol * (1 + y.abs().max())
    if cell == "lstm":  # a plain (h, c) state, as torch.lstm_cell takes, still works
        zero = torch.zeros(2, 7)
        alpha, (h, c) = dyn.step(dyn.a0.expand(2, 3), (zero, zero))
        assert (alpha - ours[:, 0]).abs().max() < 1e-5 and h.shape == c.shape == (2, 7)
    with torch.no_grad():  # teacher forcing: the steps fed with a give forward(a)
        state, alphas = dyn.init_state((2,)), []
        for x in dyn.shifted(a).unbind(1):
            alpha, state = dyn.step(x, state)
            alphas.append(alpha)
        assert (torch.stack(alphas, 1) - dyn(a)).abs().max() < 1e-5


def test_recursive_filter_takes_a_dynamics_network_of_ones_own():
    """A network written to the documented interface, whose init_state takes no dtype (as in
    tutorials/03_custom_guides.ipynb), still runs in KalmanPrior.filter, in the data's dtype: with every
    step observed its alphas are its teacher-forced forward(a)."""
    from torch import nn

    from pyro_kvae.models import KalmanPrior
    from pyro_kvae.nn import DynamicsNetwork

    class Linear(DynamicsNetwork):
        def __init__(self):
            super().__init__(dim_a=2, K=3)
            self.out = nn.Linear(2, 3)

        def forward(self, a):
            return torch.softmax(self.out(self.shifted(a)), -1)

        def init_state(self, batch_shape):
            return ()

        def step(self, a_prev, state):
            return torch.softmax(self.out(a_prev), -1), state

    torch.manual_seed(0)
    prior = KalmanPrior(Linear(), dim_z=4)
    a = torch.randn(3, 6, 2)
    r = prior.filter(a)
    assert r.alpha.dtype == a.dtype and (r.alpha - prior.dynamics(a)).abs().max() < 1e-6
    mask = torch.rand(3, 6, generator=torch.Generator().manual_seed(0)) > 0.4
    assert torch.isfinite(prior.filter(a, mask).filtered.log_prob).all()
