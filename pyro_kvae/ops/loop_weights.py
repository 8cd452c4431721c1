# SPDX-License-Identifier: Apache-2.0
"""
Weights shared by the steps of a loop, with their gradients formed once for all steps.

In a recurrent loop (the KVAE's recursive filter with its dynamics network in it) every step
multiplies its own input by the same weights. Autograd then forms each weight's gradient step by
step and accumulates it: two operations per weight and step (a product and an addition), each a
kernel launch on a GPU. A :class:`LoopWeight` records each step's input and output gradient
instead, and forms the weight's gradient as one product over all steps, as cuDNN's RNNs do::

    W = LoopWeight(weight, bias)   # before the loop: weight (k, m), bias (m,)
    for t in range(T):
        y = W(x, t)                # bias + x @ weight, x (n, k) -> (n, m)
        z = W(x, t, C)             # C + x @ weight (C broadcast to (n, m))

Without a graph (``torch.no_grad()`` or weights that need no gradient) it is ``torch.addmm``.
Each step index may be used once per loop. A graph that is differentiated more than once
(``retain_graph=True``) gives the right gradients when every pass that reaches a step's input also
reaches the weights; otherwise (e.g. ``torch.autograd.grad`` of the inputs alone, then a second pass)
the second pass raises instead of returning a wrong gradient.
"""

import torch
from torch.autograd.function import once_differentiable


class LoopWeight:
    """
    ``weight (k, m)`` and an optional ``bias (m,)`` used by the steps of one loop (see the module).

    :param torch.Tensor weight: ``(k, m)``.
    :param torch.Tensor bias: optional ``(m,)``, added where a step gives no ``C``.
    """

    def __init__(self, weight: torch.Tensor, bias=None):
        if weight.dim() != 2 or (bias is not None and bias.shape != weight.shape[-1:]):
            got = tuple(weight.shape), None if bias is None else tuple(bias.shape)
            raise ValueError(f"weight must have shape (k, m) and bias (m,), got {got[0]} and {got[1]}")
        self.steps = {}  # step -> (input, output gradient), filled by the steps' backward
        params = [weight] if bias is None else [weight, bias]
        self.deferred = torch.is_grad_enabled() and any(p.requires_grad for p in params)
        self.weight, self.bias = _Gather.apply(self, weight, bias) if self.deferred else (weight, bias)

    def __call__(self, x: torch.Tensor, t: int, C=None) -> torch.Tensor:
        """``C + x @ weight`` (``C`` defaults to the bias; none: ``x @ weight``) for ``x (n, k)``, at step ``t``."""
        if not self.deferred:
            if C is None and self.bias is None:
                return x @ self.weight
            return torch.addmm(self.bias if C is None else C, x, self.weight)
        return _StepProduct.apply(self, t, C, x, self.weight, self.bias)


class _Gather(torch.autograd.Function):
    """Identity on the weights in forward. Its backward, which autograd runs after that of every step
    that used them, forms their gradients from the steps' records: ``X^T G`` over the stacked inputs ``X``
    and output gradients ``G`` of the steps, and the sum of ``G``'s rows over the steps that added the bias."""

    @staticmethod
    def forward(ctx, owner, weight, bias):
        ctx.owner, ctx.has_bias = owner, bias is not None
        return weight.view_as(weight), None if bias is None else bias.view_as(bias)

    @staticmethod
    def backward(ctx, g_weight, g_bias):
        steps = [ctx.owner.steps[t] for t in sorted(ctx.owner.steps)]
        ctx.owner.steps.clear()
        if not steps:
            return None, g_weight, g_bias
        x, g = torch.cat([s[0] for s in steps]), torch.cat([s[1] for s in steps])
        d_weight = x.mT @ g if g_weight is None else torch.addmm(g_weight, x.mT, g)
        biased = [s[1] for s in steps if s[2]]
        if ctx.has_bias and biased:
            d_bias = torch.cat(biased).sum(0)
            g_bias = d_bias if g_bias is None else g_bias + d_bias
        return None, d_weight, g_bias


class _StepProduct(torch.autograd.Function):
    """``C + x @ weight`` at one step (``C`` the bias where None); its backward records ``x`` and the output
    gradient for :class:`_Gather` and passes no gradient to the weights."""

    @staticmethod
    def forward(ctx, owner, t, C, x, weight, bias):
        ctx.owner, ctx.t, ctx.biased = owner, t, C is None
        ctx.C_shape = None if C is None else C.shape
        ctx.save_for_backward(x, weight)
        if C is None and bias is None:
            return x @ weight
        return torch.addmm(bias if C is None else C, x, weight)

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        if ctx.t in ctx.owner.steps:
            raise RuntimeError(
                "LoopWeight: a second backward pass through this loop reached a step whose weight gradient "
                "from an earlier pass was never formed (that pass did not reach the weights); differentiate "
                "the weights in the first pass, or run the loop again"
            )
        ctx.owner.steps[ctx.t] = (x, g, ctx.biased)
        d_C = None if ctx.C_shape is None or not ctx.needs_input_grad[2] else g.sum_to_size(ctx.C_shape)
        d_x = g @ weight.mT if ctx.needs_input_grad[3] else None
        return None, None, d_C, d_x, None, None
