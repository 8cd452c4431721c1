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

from typing import NamedTuple

import torch
from pyro.nn import PyroModule, pyro_method
from torch import nn


class DynamicsNetwork(PyroModule):
    """
    Base class of the dynamics parameter networks ``alpha_t = f(a_0, ..., a_{t-1})``: holds ``K``,
    ``dim_a`` and the learned initial code ``a_0 (dim_a,)``.

    A subclass defines two things that must agree:

    * ``forward(a)``: ``a (batch, T, dim_a)`` -> ``alpha (batch, T, K)``, every step at once
      from :meth:`shifted` ``(a)`` (used for ``log p(a)`` when every ``a_t`` is known);
    * ``step(a_prev, state)``: ``a_prev (batch, dim_a)`` -> ``(alpha_t (batch, K), new_state)``,
      one step (used by the filter with missing frames and by generation, which feed back
      estimates of ``a_t``). The first call gets ``a_0`` and ``init_state(batch_shape)``.

    ``init_state(batch_shape, dtype=None)`` gives the state before the first step for
    ``batch_shape`` sequences: any tensor, tuple of tensors or ``None`` that ``step`` accepts
    (default ``None``: no state, as for an MLP over ``a_{t-1}``). Override it together with
    ``step`` whenever ``step`` keeps a state. The filter runs in float64
    (:mod:`pyro_kvae.ops.precision`): ``step`` may get ``a_prev`` and a state made with
    ``init_state(batch_shape, dtype=torch.float64)`` while its parameters are float32, and
    returns ``alpha_t`` in ``a_prev``'s dtype.
    """

    def __init__(self, dim_a: int, K: int):
        super().__init__()
        self.dim_a, self.K = dim_a, K
        self.a0 = nn.Parameter(torch.zeros(dim_a))

    def shifted(self, a):
        """``[a_0, a_1, ..., a_{T-1}]`` of shape ``(batch, T, dim_a)``: the input that gives ``alpha_{1..T}``."""
        a0 = self.a0.expand(a.shape[:-2] + (1, self.dim_a))
        return torch.cat([a0, a[..., :-1, :]], dim=-2)

    def init_state(self, batch_shape, dtype=None):
        """The state before the first step of ``batch_shape`` sequences (``None`` for a network without one);
        ``dtype``: the dtype the steps run in, when a subclass can run in another than its parameters'."""
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

    def init_state(self, batch_shape, dtype=None):
        """The state before the first step, for ``batch_shape`` sequences; with ``dtype`` (e.g. float64) the
        steps run in that dtype. An LSTM's state also carries its weights prepared once for every step
        (see :meth:`step`)."""
        dtype = self.a0.dtype if dtype is None else dtype
        zero = self.a0.new_zeros((torch.Size(batch_shape).numel(), self.rnn.hidden_size), dtype=dtype)
        if not isinstance(self.rnn, nn.LSTM):
            return zero
        if type(self).step is not RNNDynamics.step:  # a subclass's own step gets the plain LSTM state (h, c)
            return (zero, zero)
        rnn, H = self.rnn, self.rnn.hidden_size
        # gates reordered from (i, f, g, o) to (i, f, o, g): one sigmoid serves three of them
        order = torch.cat([torch.arange(2 * H), torch.arange(3 * H, 4 * H), torch.arange(2 * H, 3 * H)])
        order = order.to(rnn.weight_ih_l0.device)
        W_x = rnn.weight_ih_l0[order].mT.to(dtype)  # (dim_a, 4H)
        W_h = torch.cat([rnn.weight_hh_l0[order], self.out.weight]).mT.to(dtype)  # (H, 4H + K)
        b = torch.cat([(rnn.bias_ih_l0 + rnn.bias_hh_l0)[order], self.out.bias]).to(dtype)  # (4H + K,)
        return _LSTMState(zero, zero, b[: 4 * H], (W_x, W_h, b))

    def step(self, a_prev, state):
        """``a_prev (batch, dim_a)`` -> ``alpha_t (batch, K)``, new state.

        One cell of ``self.rnn`` with its own weights: the same function as a step of ``self.rnn``,
        without the set-up of a whole-sequence call (which on a CPU costs more than the step itself).
        An LSTM step is 9 operations, where ``torch.lstm_cell`` and the output layer take 17 and
        twice as many for their gradient: ``h_t`` enters one product with the recurrent weights and the
        output layer's together, whose first part starts the next step's gates."""
        if state is None:
            raise ValueError("state must come from init_state(batch_shape)")
        x = a_prev.reshape(-1, self.dim_a)
        if isinstance(state, _LSTMState):
            W_x, W_h, b = state.weights
            H = W_x.size(-1) // 4
            sig, g = torch.addmm(state.hW, x, W_x).split([3 * H, H], -1)
            i, f, o = torch.sigmoid(sig).chunk(3, -1)
            c = f * state.c + i * torch.tanh(g)  # (an addcmul's gradient casts its scalar factor twice more)
            h = o * torch.tanh(c)
            hW, logits = torch.addmm(b, h, W_h).split([4 * H, self.K], -1)
            state = _LSTMState(h, c, hW, state.weights)
        else:  # a GRU's state h, or an LSTM's plain (h, c)
            rnn = self.rnn
            weights = (rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0)
            x, dtype = x.to(weights[0].dtype), weights[0].dtype  # (the steps may run in another dtype)
            if isinstance(rnn, nn.LSTM):
                h, c = torch.lstm_cell(x, (state[0].to(dtype), state[1].to(dtype)), *weights)
                state = (h.to(a_prev.dtype), c.to(a_prev.dtype))
            else:
                h = torch.gru_cell(x, state.to(dtype), *weights)
                state = h.to(a_prev.dtype)
            logits = self.out(h).to(a_prev.dtype)
        return torch.softmax(logits, -1).reshape(a_prev.shape[:-1] + (self.K,)), state


class _LSTMState(NamedTuple):
    """The state of :meth:`RNNDynamics.step` with an LSTM: ``h``, ``c (batch, H)``, ``hW (batch or 1, 4H)``
    (the next gates' recurrent part with their biases) and the prepared ``weights``: ``W_x (dim_a, 4H)``,
    ``W_h (H, 4H + K)`` (the recurrent and output layers') and their biases ``(4H + K,)``."""

    h: torch.Tensor
    c: torch.Tensor
    hW: torch.Tensor
    weights: tuple


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
        """``alpha`` as a function of the previous encoding ``a_prev (..., dim_a)`` (fig. 4), in its dtype."""
        return torch.softmax(self.mlp(a_prev.to(self.a0.dtype)), -1).to(a_prev.dtype)

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
        return torch.softmax(self.logits, -1).to(a_prev.dtype).expand(a_prev.shape[:-1] + (self.K,)), state
