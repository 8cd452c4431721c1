# SPDX-License-Identifier: Apache-2.0
"""Weights shared by the steps of a loop (pyro_kvae.ops.loop_weights) and the LSTM step built on them."""

import pytest
import torch

from pyro_kvae.nn import GRUDynamics, LSTMDynamics
from pyro_kvae.ops.loop_weights import LoopWeight

f64 = torch.float64


def recurrent_loss(W, b, V, x0, C0, deferred, T=6):
    """A recurrent loop whose steps use ``W`` and ``b`` (odd steps) or their own offset ``C0 t`` (even ones)."""
    w = LoopWeight(W, b) if deferred else None
    x, loss = x0, 0.0
    for t in range(T):
        if deferred:
            y = w(x, t) if t % 2 else w(x, t, C0 * t)
        else:
            y = torch.addmm(b, x, W) if t % 2 else torch.addmm(C0 * t, x, W)
        x = torch.tanh(y) @ V
        loss = loss + x.pow(2).sum()
    return loss


def leaves(seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(3, 4), (4,), (4, 3), (5, 3), (4,)]  # W, b, V, x0, C0
    return [torch.randn(*s, generator=g, dtype=f64, requires_grad=True) for s in shapes]


def test_loop_weight_gradients_are_autograds():
    """Values and gradients of every leaf against the same loop with torch.addmm, also through a graph
    differentiated twice; gradcheck; plain values without a graph."""
    p = leaves()
    ref = torch.autograd.grad(recurrent_loss(*p, deferred=False), p)
    for x, y in zip(torch.autograd.grad(recurrent_loss(*p, deferred=True), p), ref):
        assert (x - y).abs().max() < 1e-12 * (1 + y.abs().max())
    loss = recurrent_loss(*p, deferred=True)
    twice = torch.autograd.grad(loss, p, retain_graph=True) + torch.autograd.grad(loss, p)
    for x, y in zip(twice, ref + ref):
        assert (x - y).abs().max() < 1e-12 * (1 + y.abs().max())
    with torch.no_grad():
        assert recurrent_loss(*p, deferred=True) == recurrent_loss(*p, deferred=False)
    assert torch.autograd.gradcheck(lambda *q: recurrent_loss(*q, deferred=True, T=3), p)


def test_loop_weight_refuses_a_silently_wrong_second_pass():
    """A first pass that reaches the steps but not the weights, then one that reaches the weights: an error,
    not a weight gradient counted twice."""
    p = leaves()
    loss = recurrent_loss(*p, deferred=True)
    torch.autograd.grad(loss, p[3], retain_graph=True)  # x0 only
    with pytest.raises(RuntimeError, match="second backward pass"):
        torch.autograd.grad(loss, p[0])


def test_loop_weight_checks_its_shapes():
    with pytest.raises(ValueError, match=r"weight must have shape \(k, m\) and bias \(m,\)"):
        LoopWeight(torch.zeros(3, 4), torch.zeros(3))
    with pytest.raises(ValueError, match=r"weight must have shape \(k, m\)"):
        LoopWeight(torch.zeros(2, 3, 4))


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
