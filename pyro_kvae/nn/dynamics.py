# SPDX-License-Identifier: Apache-2.0
"""
Dynamics parameter networks ``alpha_t = f(a_{0:t-1})`` (paper section 3.3).

Each network gives mixture weights over ``K`` LGSSM modes, ``alpha (batch, T, K)``
summing to one over ``K``, where ``alpha_t`` depends only on encodings before
``t`` and on a learned initial code ``a_0``. Two interfaces:

* ``forward(a)``: teacher-forced over a whole sequence ``a (batch, T, dim_a)``
  (training, smoothing);
* ``init_state(batch_shape)`` and ``step(a_prev, state) -> (alpha_t, state)``:
  one step at a time, for generation and imputation, where ``a_{t-1}`` may be
  an estimate (paper section 4); the first step takes ``a_prev = a0``.
"""

import torch
from pyro.nn import PyroModule, pyro_method
from torch import nn


class DynamicsNetwork(PyroModule):
    """Base class: holds ``K``, ``dim_a`` and the learned initial code ``a_0 (dim_a,)``.
    Subclasses define ``forward(a)`` and ``step(a_prev, state)``."""

    def __init__(self, dim_a: int, K: int):
        super().__init__()
        self.dim_a, self.K = dim_a, K
        self.a0 = nn.Parameter(torch.zeros(dim_a))

    def shifted(self, a):
        """``[a_0, a_1, ..., a_{T-1}]`` of shape ``(batch, T, dim_a)``: the input that gives ``alpha_{1..T}``."""
        a0 = self.a0.expand(a.shape[:-2] + (1, self.dim_a))
        return torch.cat([a0, a[..., :-1, :]], dim=-2)

    def init_state(self, batch_shape):
        return None

    def _check(self, a):
        if a.dim() < 2 or a.size(-1) != self.dim_a:
            raise ValueError(f"a must have shape (batch, T, {self.dim_a}), got {tuple(a.shape)}")


class RNNDynamics(DynamicsNetwork):
    """``d_t = RNN(a_{t-1}, d_{t-1})``, ``alpha_t = softmax(Linear(d_t))`` with ``cell`` ``"lstm"`` or ``"gru"``."""

    CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}

    def __init__(self, dim_a=2, K=3, hidden=50, cell="lstm"):
        super().__init__(dim_a, K)
        if cell not in self.CELLS:
            raise ValueError(f"cell must be one of {sorted(self.CELLS)}, got {cell!r}")
        self.rnn = self.CELLS[cell](dim_a, hidden, batch_first=True)
        self.out = nn.Linear(hidden, K)

    def forward(self, a):
        """``a (batch, T, dim_a)`` -> ``alpha (batch, T, K)``."""
        self._check(a)
        x = self.shifted(a)
        batch = x.shape[:-2]
        h, _ = self.rnn(x.reshape((-1,) + x.shape[-2:]))
        return torch.softmax(self.out(h), -1).reshape(batch + (x.size(-2), self.K))

    def init_state(self, batch_shape):
        zero = self.a0.new_zeros((torch.Size(batch_shape).numel(), self.rnn.hidden_size))
        return (zero, zero) if isinstance(self.rnn, nn.LSTM) else zero

    def step(self, a_prev, state):
        """``a_prev (batch, dim_a)`` -> ``alpha_t (batch, K)``, new state.

        One cell of ``self.rnn`` with its own weights (``torch.lstm_cell`` / ``torch.gru_cell``):
        the same function as a step of ``self.rnn``, without the set-up of a whole-sequence
        call, which on a CPU (oneDNN) costs more than the step itself."""
        if state is None:
            raise ValueError("state must come from init_state(batch_shape)")
        rnn = self.rnn
        weights = (rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0)
        x = a_prev.reshape(-1, self.dim_a)
        if isinstance(rnn, nn.LSTM):
            state = torch.lstm_cell(x, state, *weights)
            h = state[0]
        else:
            state = h = torch.gru_cell(x, state, *weights)
        return torch.softmax(self.out(h), -1).reshape(a_prev.shape[:-1] + (self.K,)), state


class LSTMDynamics(RNNDynamics):
    """``d_t = LSTM(a_{t-1}, d_{t-1})``, ``alpha_t = softmax(Linear(d_t))`` (the paper's default, 50 units)."""

    def __init__(self, dim_a=2, K=3, hidden=50):
        super().__init__(dim_a, K, hidden, cell="lstm")


class GRUDynamics(RNNDynamics):
    """The same with a GRU cell."""

    def __init__(self, dim_a=2, K=3, hidden=50):
        super().__init__(dim_a, K, hidden, cell="gru")


class MLPDynamics(DynamicsNetwork):
    """``alpha_t = softmax(MLP(a_{t-1}))`` (paper fig. 4; reference: 2 layers of 50 ReLU units)."""

    def __init__(self, dim_a=2, K=3, hidden=(50, 50)):
        super().__init__(dim_a, K)
        layers, n = [], dim_a
        for h in hidden:
            layers += [nn.Linear(n, h), nn.ReLU()]
            n = h
        layers.append(nn.Linear(n, K))
        self.mlp = nn.Sequential(*layers)

    def forward(self, a):
        self._check(a)
        return torch.softmax(self.mlp(self.shifted(a)), -1)

    def weights(self, a_prev):
        """``alpha`` as a function of the previous encoding ``a_prev (..., dim_a)`` (fig. 4)."""
        return torch.softmax(self.mlp(a_prev), -1)

    def step(self, a_prev, state):
        return self.weights(a_prev), state


class FixedDynamics(DynamicsNetwork):
    """Constant learned weights ``alpha = softmax(logits)``: a plain (mixture) LGSSM. ``K == 1`` gives ``alpha = 1``."""

    def __init__(self, dim_a=2, K=1):
        super().__init__(dim_a, K)
        self.logits = nn.Parameter(torch.zeros(K))

    def forward(self, a):
        self._check(a)
        return torch.softmax(self.logits, -1).expand(a.shape[:-1] + (self.K,))

    @pyro_method
    def step(self, a_prev, state):
        return torch.softmax(self.logits, -1).expand(a_prev.shape[:-1] + (self.K,)), state
