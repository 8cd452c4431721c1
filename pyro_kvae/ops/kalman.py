# SPDX-License-Identifier: Apache-2.0
"""
Sequential Kalman filtering, RTS smoothing and backward sampling in covariance form.

Model (paper indexing, time index ``t = 0 .. T-1`` in tensors stands for
``t = 1 .. T`` in the paper)::

    z_1 ~ N(mu0, Sigma0)
    z_t = A_t z_{t-1} + b_t + w_t,   w_t ~ N(0, Q),   t >= 2   (b_t = B_t u_t)
    a_t = C_t z_t + v_t,             v_t ~ N(0, R)

``A[..., 0, :, :]`` and ``b[..., 0, :]`` are never used: slot ``t`` holds the
transition *into* ``z_t``.

These functions loop over time (``O(T)`` depth) and serve per-step filtered and
smoothed marginals, the step-by-step :func:`kalman_predict` / :func:`kalman_update`
interface needed for imputation with a dynamics network in the loop (paper
section 4), and ``log p(a)`` in float64. They are written for few operations per
step, since with ``dim_z`` and ``dim_a`` of a few units every operation is a tiny
kernel and their number, not their arithmetic, sets the time (on a GPU each is a
launch):

* covariance and mean are carried together as ``M = [[P, m], [m^T, s]]``, so that one
  product serves both: a prediction is ``A_r^T M A_r + [[Q, b], [b^T, 0]]`` (2 operations,
  with ``A_r = [[A^T, 0], [0, 1]]`` built for all steps at once) and an update
  ``M - D^T S^{-1} D`` with ``D = [C P | C m] - [0 | a]`` and ``S = C P C^T + R`` (4
  operations, the gain never formed; :func:`condition`, one autograd node with a
  hand-written backward of 5 operations);
* a missing step is an emission matrix of zeros (set for all steps at once), so
  masking costs nothing inside the loop;
* time slices come from one ``unbind`` (whose gradient is one ``stack``), and a
  time dim of 1 (time-invariant parameters) is never expanded ``T``-fold;
* when the parameters are shared by sequences (e.g. one time-invariant model), the
  covariances, gains and Cholesky factors are computed once for all, and the means
  follow by one affine map per step;
* with a graph, the covariance pass and the mean recursions (filter, smoother, backward
  sampling) are each one autograd node whose backward is its adjoint recursion, one or a few
  operations per step, with the parameters' gradients formed for all steps after the loop;
* log-likelihood terms, smoother gains and backward-sampling noise are computed for
  all steps at once, outside the loop.

Run in float64 (as :class:`~pyro_kvae.distributions.LinearGaussianSSM` does); float32
stays accurate on well-conditioned problems but the square-root routines of
:mod:`pyro_kvae.ops.sqrt_kalman` are the ones built for it.
"""

import math
from typing import NamedTuple, Optional

import torch
from torch.autograd.function import once_differentiable

from .checks import check_lgssm_shapes, check_lgssm_values, cholesky


def _mv(M: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``M v`` for ``M (..., n, k)`` and ``v (..., k)``, batch dims broadcast. Where ``M`` has fewer batch
    elements than ``v`` (parameters shared by sequences), the dims of ``v`` that ``M`` lacks become the columns
    of one product (``einsum`` folds them) instead of ``M`` being expanded to one tiny product per vector."""
    if M.shape[:-2].numel() < v.shape[:-1].numel():
        return torch.einsum("...nk,...k->...n", M, v)
    return (M @ v.unsqueeze(-1)).squeeze(-1)


def _whiten(L: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """``L^{-1} r`` for a lower triangular ``L (..., k, k)`` and ``r (..., k)``, batch dims broadcast. Where ``L``
    has fewer batch elements than ``r`` (shared parameters), ``L^{-1}`` is formed once at its own batch shape
    and applied by :func:`_mv`: a triangular solve would run once per vector."""
    if L.shape[:-2].numel() < r.shape[:-1].numel():
        eye = torch.eye(L.size(-1), dtype=L.dtype, device=L.device)
        return _mv(torch.linalg.solve_triangular(L, eye, upper=False), r)
    return torch.linalg.solve_triangular(L, r.unsqueeze(-1), upper=False).squeeze(-1)


def _sym(x: torch.Tensor) -> torch.Tensor:
    """Symmetrises a covariance below float64 (where rounding would otherwise leave it asymmetric
    beyond the tolerance of positive-definiteness checks); float64 needs no extra operations."""
    return x if x.dtype == torch.float64 else 0.5 * (x + x.mT)


def time_slices(x: Optional[torch.Tensor], T: int, event_dims: int) -> list:
    """The ``T`` time slices of ``x (..., T or 1, *event)`` without copies (``None`` stays ``None``)."""
    if x is None:
        return [None] * T
    dim = x.dim() - 1 - event_dims
    if x.size(dim) == 1:
        return [x.select(dim, 0)] * T
    return list(x.unbind(dim))


def kalman_predict(mean, cov, A, Q, b=None):
    """
    One prediction step ``p(z_{t-1} | .) -> p(z_t | .)``.

    :param torch.Tensor mean: ``(..., dim_z)`` mean of ``z_{t-1}``.
    :param torch.Tensor cov: ``(..., dim_z, dim_z)`` covariance of ``z_{t-1}``.
    :param torch.Tensor A: ``(..., dim_z, dim_z)`` transition matrix ``A_t``.
    :param torch.Tensor Q: ``(..., dim_z, dim_z)`` transition noise covariance.
    :param torch.Tensor b: optional ``(..., dim_z)`` offset ``B_t u_t``.
    :returns: predicted ``(mean, cov)`` of ``z_t``, shapes as above.
    """
    mean = _mv(A, mean)
    if b is not None:
        mean = mean + b
    return mean, _sym(A @ cov @ A.mT + Q)


def _baddmm(C, X, Y, alpha=1.0, beta=1.0):
    """``beta C + alpha X @ Y``, in one operation (``torch.baddbmm`` / ``torch.addmm``, ``C`` broadcast) where
    ``X`` and ``Y`` are matrices or batches of matrices of one batch size."""
    if X.dim() == 3 and Y.dim() == 3 and X.size(0) == Y.size(0):
        return torch.baddbmm(C, X, Y, alpha=alpha, beta=beta)
    if X.dim() == 2 and Y.dim() == 2 and C.dim() <= 2:
        return torch.addmm(C, X, Y, alpha=alpha, beta=beta)
    return torch.add(C if beta == 1.0 else beta * C, X @ Y, alpha=alpha)


class _Condition(torch.autograd.Function):
    """``M - D^T S^{-1} D`` for ``M (B, d, d)``, ``D (B, k, d)`` and a positive definite ``S (B, k, k)``
    (a Kalman measurement update, see :func:`condition`) as one autograd node. Its backward is 5
    batched operations, ``D' = -Y (G + G^T)`` and ``S' = Y G Y^T`` with ``Y = S^{-1} D``, where autograd
    through the Cholesky factorisation and the triangular solves takes about 30."""

    @staticmethod
    def forward(ctx, M, D, S):
        L = torch.linalg.cholesky_ex(S).L
        Z = torch.linalg.solve_triangular(L, D, upper=False)  # (triangular solves: fewer copies than cholesky_solve)
        ctx.save_for_backward(L, Z)
        return torch.baddbmm(M, Z.mT, Z, alpha=-1.0)  # D^T S^{-1} D = Z^T Z, symmetric in any precision

    @staticmethod
    @once_differentiable  # a second derivative through it raises instead of being silently wrong
    def backward(ctx, G):
        L, Z = ctx.saved_tensors
        Y = torch.linalg.solve_triangular(L.mT, Z, upper=True)  # S^{-1} D
        dD = torch.baddbmm(Y, Y, G + G.mT, beta=0.0, alpha=-1.0) if ctx.needs_input_grad[1] else None
        dS = (Y @ G) @ Y.mT if ctx.needs_input_grad[2] else None
        return G, dD, dS


def condition(M, D, S):
    """
    ``M - D^T S^{-1} D``: the measurement update of a state ``M = [[P, m], [m^T, s]] (..., d, d)`` with
    ``D = [C P | C m - a] (..., dim_a, d)`` and the innovation covariance ``S = C P C^T + R (..., dim_a, dim_a)``
    gives ``[[P - P C^T S^{-1} C P, m + K (a - C m)], [., s - r^T S^{-1} r]]`` (``r = a - C m``, gain
    ``K = P C^T S^{-1}``). Batch dims broadcast.
    """
    if not (torch.is_grad_enabled() and (M.requires_grad or D.requires_grad or S.requires_grad)):
        return _condition_ops(M, D, S)  # without a graph, plain operations are faster than a Python-level node
    if M.dim() == D.dim() == S.dim() == 3 and M.size(0) == D.size(0) == S.size(0):
        return _Condition.apply(M, D, S)
    batch = torch.broadcast_shapes(M.shape[:-2], D.shape[:-2], S.shape[:-2])
    M, D, S = (x.expand(batch + x.shape[-2:]).reshape((-1,) + x.shape[-2:]) for x in (M, D, S))
    return _Condition.apply(M, D, S).reshape(batch + M.shape[-2:])


def _condition_ops(M, D, S):
    """:func:`condition` by plain operations (autograd records about 30 for its gradient)."""
    Z = torch.linalg.solve_triangular(torch.linalg.cholesky_ex(S).L, D, upper=False)
    return _baddmm(M, Z.mT, Z, alpha=-1.0)


def _transition_blocks(A, Q, b=None):
    """``A_r = [[A^T, 0], [0, 1]] (..., T, d, d)`` and ``Q_b = [[Q, b], [b^T, 0]] (..., T or 1, d, d)``
    (``d = dim_z + 1``) for all steps at once, so that a prediction of the state ``M = [[P, m], [m^T, s]]`` is
    ``A_r^T M A_r + Q_b = [[A P A^T + Q, A m + b], [., s]]`` (2 products serve covariance and mean)."""
    dz, pad = A.size(-1), torch.nn.functional.pad
    Ar = pad(A.mT, (0, 1, 0, 1))
    Ar[..., dz, dz] = 1.0
    Qb = pad(Q.unsqueeze(-3), (0, 1, 0, 1))  # a time dim of 1
    if b is not None:
        b = pad(b.unsqueeze(-1), (dz, 0, 0, 1))  # b in the last column
        Qb = Qb + b + b.mT
    return Ar, Qb


def _state(mean, cov):
    """``[[cov, mean], [mean^T, 0]] (..., d, d)`` at the batch shape of both."""
    batch = torch.broadcast_shapes(mean.shape[:-1], cov.shape[:-2])
    column = mean.expand(batch + mean.shape[-1:]).unsqueeze(-1)
    top = torch.cat([cov.expand(batch + cov.shape[-2:]), column], -1)
    return torch.cat([top, torch.nn.functional.pad(column.mT, (0, 1))], -2)


def _minus_a_column(a, dim_z):
    """``[0 | -a] (..., dim_a, dim_z + 1)`` for ``a (..., dim_a)``: the data in the mean's column, so that
    ``[C | 0] M + [0 | -a] = [C P | C m - a]`` is one product with an offset."""
    return torch.cat([a.new_zeros(a.shape + (dim_z,)), -a.unsqueeze(-1)], -1)


def _update(mean, cov, a, C, R):
    """Measurement update; returns ``(mean, cov, w, L)`` with the whitened residual
    ``w = L^{-1} (a - C mean) (..., dim_a)`` and ``S = L L^T`` the innovation covariance."""
    CP = C @ cov
    L = torch.linalg.cholesky_ex(CP @ C.mT + R).L
    V = torch.linalg.solve_triangular(L, CP, upper=False)  # (..., dim_a, dim_z); gain K = V^T L^{-1}
    w = torch.linalg.solve_triangular(L, (a - _mv(C, mean)).unsqueeze(-1), upper=False)
    return mean + (V.mT @ w).squeeze(-1), _sym(cov - V.mT @ V), w.squeeze(-1), L


def _innovation_log_prob(S, D, mask=None):
    """``log N(a_t; C m_t, S_t)`` per step from the innovation covariances ``S (..., T, dim_a, dim_a)`` and
    ``D = [C P | C m - a] (..., T, dim_a, d)`` of the steps, all at once; 0 where ``mask (..., T)`` is False."""
    L = torch.linalg.cholesky_ex(S).L
    w = torch.linalg.solve_triangular(L, D[..., -1:], upper=False).squeeze(-1)  # L^{-1} (C m - a)
    return _gaussian_log_prob(w, L, mask)


def _gaussian_log_prob(w, L, mask=None):
    """``log N`` of a residual whitened to ``w (..., dim_a)`` by the Cholesky factor ``L (..., dim_a, dim_a)``;
    0 where the optional bool ``mask (...)`` is False."""
    log_det = L.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    log_prob = -0.5 * w.pow(2).sum(-1) - log_det - 0.5 * w.size(-1) * math.log(2 * math.pi)
    return log_prob if mask is None else torch.where(mask, log_prob, log_prob.new_zeros(()))


def kalman_update(mean, cov, a, C, R, mask=None):
    """
    One measurement update ``p(z_t | a_{<t}) -> p(z_t | a_{<=t})``.

    :param torch.Tensor mean: ``(..., dim_z)`` predicted mean.
    :param torch.Tensor cov: ``(..., dim_z, dim_z)`` predicted covariance.
    :param torch.Tensor a: ``(..., dim_a)`` observation ``a_t`` (any value where masked).
    :param torch.Tensor C: ``(..., dim_a, dim_z)`` emission matrix ``C_t``.
    :param torch.Tensor R: ``(..., dim_a, dim_a)`` emission noise covariance.
    :param torch.Tensor mask: optional bool ``(...)``; where False the step is
        skipped: the prediction is returned and the log-likelihood term is 0.
    :returns: ``(mean, cov, log_prob)`` with the filtered moments and
        ``log p(a_t | a_{<t})`` of shape ``(...)``.
    """
    if mask is not None:  # a zero emission matrix observes nothing
        a = torch.where(mask.unsqueeze(-1), a, a.new_zeros(()))
        C = C * mask[..., None, None].to(C.dtype)
    mean, cov, w, L = _update(mean, cov, a, C, R)
    return mean, cov, _gaussian_log_prob(w, L, mask)


class KalmanFilterResult(NamedTuple):
    """
    Output of :func:`kalman_filter`. ``pred_*`` are the one-step predictions
    ``p(z_t | a_{<t})`` (for ``t = 1`` the prior ``N(mu0, Sigma0)``), ``filt_*``
    the filtered marginals ``p(z_t | a_{<=t})``; means ``(batch, T, dim_z)``,
    covariances ``(batch, T, dim_z, dim_z)``; ``log_prob (batch,)`` is
    ``log p(a_obs)`` and ``step_log_prob (batch, T)`` its per-step terms.
    Covariances may be expanded views of a smaller batch shape (the parameters').
    """

    pred_mean: torch.Tensor
    pred_cov: torch.Tensor
    filt_mean: torch.Tensor
    filt_cov: torch.Tensor
    log_prob: torch.Tensor
    step_log_prob: torch.Tensor


def filter_steps(a, A, C, Q, R, mu0, Sigma0, b=None, mask=None):
    """
    The loop of :func:`kalman_filter` on already checked arguments of one dtype (shapes as
    there; no broadcasting to a common batch shape is needed; masked steps of ``a`` may hold
    anything). Returns ``KalmanFilterResult`` with its natural (broadcastable) shapes.
    """
    T, dz = a.size(-2), mu0.size(-1)
    if mask is not None:  # a zero emission matrix observes nothing
        a = torch.where(mask.unsqueeze(-1), a, a.new_zeros(()))
        C = C * mask[..., None, None].to(C.dtype)
    if _shared(a, A, C, Q, R, b, mask, mu0, Sigma0):
        return filter_means(a, A, C, mu0, covariance_steps(A, C, Q, R, Sigma0, T), b, mask)
    Ar, Qb = _transition_blocks(A, Q, b)
    Ct = torch.nn.functional.pad(C, (0, 1))  # [C | 0]
    Ars, Qbs, Cts, a_cols = (time_slices(x, T, 2) for x in (Ar, Qb, Ct, _minus_a_column(a, dz)))
    M = _state(mu0, Sigma0)  # [[P, m], [m^T, s]]: one product per step serves covariance and mean
    preds, filts, Ss, Ds = [], [], [], []
    for t in range(T):
        if t:
            M = _sym(_baddmm(Qbs[t], Ars[t].mT @ M, Ars[t]))
        D = _baddmm(a_cols[t], Cts[t], M)  # [C P | C m - a]
        S = _baddmm(R, D, Cts[t].mT)  # C P C^T + R: the last row of [C | 0]^T is zero, so C m - a drops out
        for out, x in ((preds, M), (Ss, S), (Ds, D)):
            out.append(x)
        M = condition(M, D, S)
        filts.append(M)
    pred, filt, S, D = (torch.stack(_same_shape(x), -3) for x in (preds, filts, Ss, Ds))
    step = _innovation_log_prob(S, D, mask)
    pred, filt = pred[..., :dz, :], filt[..., :dz, :]
    return KalmanFilterResult(pred[..., dz], pred[..., :dz], filt[..., dz], filt[..., :dz], step.sum(-1), step)


def _shared(a, A, C, Q, R, b, mask, mu0, Sigma0):
    """Whether the covariances have fewer batch elements than the means (parameters shared by
    sequences): then they are filtered once, apart from the means."""
    cov_batch = torch.broadcast_shapes(A.shape[:-3], C.shape[:-3], Q.shape[:-2], R.shape[:-2], Sigma0.shape[:-2],
                                       () if mask is None else mask.shape[:-1])  # fmt: skip
    mean_batch = torch.broadcast_shapes(cov_batch, a.shape[:-2], mu0.shape[:-1], () if b is None else b.shape[:-2])
    return cov_batch.numel() < mean_batch.numel()


class CovariancePass(NamedTuple):
    """
    The half of a Kalman filter that does not depend on the data ``a``: predicted and filtered
    covariances ``(..., T, dim_z, dim_z)`` and the innovation covariances
    ``S_t = C_t P_t C_t^T + R (..., T, dim_a, dim_a)``.
    With it, :func:`filter_means` gives the filter of any ``a`` by one affine map per step.
    """

    pred_cov: torch.Tensor
    filt_cov: torch.Tensor
    S: torch.Tensor


def covariance_steps(A, C, Q, R, Sigma0, T: int) -> CovariancePass:
    """The covariance recursion of :func:`filter_steps` alone, at the batch shape of the parameters
    (arguments as there, checked and of one dtype). In float64 with a graph it is one autograd node,
    :class:`_CovarianceSteps`."""
    if torch.is_grad_enabled() and A.dtype == torch.float64 and any(x.requires_grad for x in (A, C, Q, R, Sigma0)):
        return CovariancePass(*_CovarianceSteps.apply(A, C, Q, R, Sigma0, T))
    return CovariancePass(*_covariance_recursion(A, C, Q, R, Sigma0, T)[:3])


def _covariance_recursion(A, C, Q, R, Sigma0, T: int, factors: bool = False):
    """The loop of :func:`covariance_steps`: the predicted covariances ``P``, filtered ones ``F`` and the
    innovation covariances ``S``, and with ``factors`` also ``D = C P (..., T, dim_a, dim_z)``, the Cholesky
    factors ``L`` of ``S`` and ``Z = L^{-1} D``, each stacked over the ``T`` steps. The loop calls the
    operations directly (5 to 10 microseconds each here): helpers would add a third to its time."""
    As, ATs, Cs, CTs = (time_slices(x, T, 2) for x in (A, A.mT, C, C.mT))
    addmm = _addmm_for(A, C, Q, R, Sigma0)
    cholesky_ex, solve = torch.linalg.cholesky_ex, torch.linalg.solve_triangular
    P = F = Sigma0
    out = ([], [], [], [], [], [])
    for t in range(T):
        if t:
            P = _sym(addmm(Q, As[t] @ F, ATs[t]))
        D = Cs[t] @ P
        S = addmm(R, D, CTs[t])
        L = cholesky_ex(S)[0]
        Z = solve(L, D, upper=False)
        F = _sym(addmm(P, Z.mT, Z, alpha=-1.0))  # P - D^T S^{-1} D
        for x, y in zip(out, (P, F, S, D, L, Z) if factors else (P, F, S)):
            x.append(y)
    return tuple(torch.stack(_same_shape(x), -3) for x in out if x)


def _addmm_for(*params):
    """``torch.addmm`` where the batch shape of ``params`` (``A``, ``C`` with a time dim, then ``Q``, ``R``,
    ``Sigma0``) is empty, else :func:`_baddmm`."""
    batch = torch.broadcast_shapes(*(x.shape[: x.dim() - 3] for x in params[:2]),
                                   *(x.shape[: x.dim() - 2] for x in params[2:]))  # fmt: skip
    return _baddmm if batch else torch.addmm


class _CovarianceSteps(torch.autograd.Function):
    """
    :func:`covariance_steps` as one autograd node, in float64. Its backward is the adjoint recursion,
    about 10 operations per step on the parameters' batch shape, with the gradients of ``A``, ``C``,
    ``Q``, ``R`` and ``Sigma0`` formed for all steps at once after it; autograd through the forward's
    operations records about 7 nodes per step with their own bookkeeping, and took 3 to 4 times as long.

    With ``G_t`` the gradient reaching ``F_t = P_t - D_t^T S_t^{-1} D_t`` (``D_t = C_t P_t``,
    ``S_t = D_t C_t^T + R``) and ``Y_t = S_t^{-1} D_t``: ``dS_t = Y_t sym(G_t) Y_t^T`` (symmetric, as the
    gradient through a Cholesky factorisation is), ``dD_t = dS_t C_t - Y_t (G_t + G_t^T)``,
    ``dP_t = G_t + C_t^T dD_t``, and ``P_t = A_t F_{t-1} A_t^T + Q`` passes ``A_t^T dP_t A_t`` on to
    ``F_{t-1}``; each ``d`` also takes the gradient of the output it names.
    """

    @staticmethod
    def forward(ctx, A, C, Q, R, Sigma0, T):
        P, F, S, D, L, Z = _covariance_recursion(A, C, Q, R, Sigma0, T, factors=True)
        ctx.set_materialize_grads(False)  # an output that nothing uses gets None, and costs nothing
        ctx.save_for_backward(A, C, Q, R, Sigma0, P, F, D, L, Z)
        return P, F, S

    @staticmethod
    @once_differentiable
    def backward(ctx, gP, gF, gS):
        A, C, Q, R, Sigma0, P, F, D, L, Z = ctx.saved_tensors
        T = P.size(-3)
        Y = torch.linalg.solve_triangular(L.mT, Z, upper=True)  # S^{-1} D for all steps
        As, ATs, Cs, CTs = (time_slices(x, T, 2) for x in (A, A.mT, C, C.mT))
        Ys, halfYTs = Y.unbind(-3), (0.5 * Y.mT).unbind(-3)
        gPs, gFs, gSs = (time_slices(g, T, 2) for g in (gP, gF, gS))
        addmm = _addmm_for(A, C, Q, R, Sigma0)
        dPs, dDs, dSs, carry = [None] * T, [None] * T, [None] * T, None
        for t in range(T - 1, -1, -1):  # (the operations called directly, as in _covariance_recursion)
            G = carry if gFs[t] is None else gFs[t] if carry is None else gFs[t] + carry
            if G is None:  # nothing depends on F_t
                dS = gSs[t]
                dD = None if dS is None else dS @ Cs[t]
                dP = None if dD is None else CTs[t] @ dD
            else:
                YGG = Ys[t] @ (G + G.mT)
                dS = YGG @ halfYTs[t] if gSs[t] is None else addmm(gSs[t], YGG, halfYTs[t])
                dD = addmm(YGG, dS, Cs[t], beta=-1.0)  # dS C - Y (G + G^T)
                dP = addmm(G, CTs[t], dD)
            if gPs[t] is not None and t:  # (P_0 = Sigma0 may have a smaller batch shape than the rest: below)
                dP = gPs[t] if dP is None else dP + gPs[t]
            dPs[t], dDs[t], dSs[t] = dP, dD, dS
            carry = None if (t == 0 or dP is None) else ATs[t] @ dP @ As[t]
        zero = P.new_zeros(())
        dP, dD, dS = (torch.stack(_same_shape([zero.expand(F.shape[:-3] + s) if x is None else x for x in xs]), -3)
                      for xs, s in ((dPs, P.shape[-2:]), (dDs, D.shape[-2:]), (dSs, R.shape[-2:])))  # fmt: skip
        grads = [None] * 5
        if ctx.needs_input_grad[0] and T > 1:  # P_t = A_t F_{t-1} A_t^T + Q, t >= 1
            A_n = A[..., 1:, :, :] if A.size(-3) > 1 else A
            dPn, F_prev = dP[..., 1:, :, :], F[..., :-1, :, :]
            gA = (dPn @ A_n) @ F_prev.mT + (dPn.mT @ A_n) @ F_prev
            gA = torch.nn.functional.pad(gA, (0, 0, 0, 0, 1, 0)) if A.size(-3) > 1 else gA.sum(-3, keepdim=True)
            grads[0] = gA.sum_to_size(A.shape)
        elif ctx.needs_input_grad[0]:
            grads[0] = torch.zeros_like(A)
        if ctx.needs_input_grad[1]:  # D = C P and S = D C^T + R
            gC = dS.mT @ D + dD @ P.mT
            grads[1] = (gC if C.size(-3) > 1 else gC.sum(-3, keepdim=True)).sum_to_size(C.shape)
        if ctx.needs_input_grad[2]:
            grads[2] = dP[..., 1:, :, :].sum(-3).sum_to_size(Q.shape)
        if ctx.needs_input_grad[3]:
            grads[3] = dS.sum(-3).sum_to_size(R.shape)
        if ctx.needs_input_grad[4]:
            grads[4] = sum(x.sum_to_size(Sigma0.shape) for x in (dP[..., 0, :, :], gPs[0]) if x is not None)
        return (*grads, None)


def filter_means(a, A, C, mu0, cov: CovariancePass, b=None, mask=None) -> KalmanFilterResult:
    """
    The filter of ``a (..., T, dim_a)`` given its covariance pass ``cov`` (:func:`covariance_steps`,
    for the same ``A``, ``C`` and noise; ``C`` zero where ``mask`` is False): the gains
    ``K_t = P_t C_t^T S_t^{-1}`` for all steps at once, then the means by one affine map per step,
    ``p_{t+1} = F_t p_t + g_t`` with ``F_t = A_{t+1} (I - K_t C_t)`` and ``g_t = A_{t+1} K_t a_t + b_{t+1}``,
    and the log-likelihood terms from the whitened residuals ``L_t^{-1} (a_t - C_t p_t)``, ``S_t = L_t L_t^T``.
    """
    L = torch.linalg.cholesky_ex(cov.S).L
    V = torch.linalg.solve_triangular(L, C @ cov.pred_cov, upper=False)
    K = torch.linalg.solve_triangular(L.mT, V, upper=True).mT  # P C^T S^{-1} (..., T, dim_z, dim_a)
    I_KC = torch.eye(K.size(-2), dtype=K.dtype, device=K.device) - K @ C
    Ka = _mv(K, a)
    A_next = A[..., 1:, :, :] if A.size(-3) > 1 else A
    F = A_next @ I_KC[..., :-1, :, :]
    g = _mv(A_next, Ka[..., :-1, :])
    if b is not None:
        g = g + b[..., 1:, :]
    pm = affine_steps(F, g, mu0)
    step = _gaussian_log_prob(_whiten(L, a - _mv(C, pm)), L, mask)
    return KalmanFilterResult(pm, cov.pred_cov, _mv(I_KC, pm) + Ka, cov.filt_cov, step.sum(-1), step)


def _affine(g, F, m):
    """``g + F m`` for vectors ``m (..., n)`` and ``F (..., n, n)``, in one operation where the shapes allow."""
    if g.shape != m.shape:
        return g + _mv(F, m)
    if F.dim() == 2 and m.dim() == 2:
        return torch.addmm(g, m, F.mT)
    if F.dim() == 3 and m.dim() == 2 and F.size(0) == m.size(0):
        return torch.baddbmm(g.unsqueeze(-1), F, m.unsqueeze(-1)).squeeze(-1)
    return g + _mv(F, m)


def affine_steps(F, g, m0, reverse: bool = False):
    """
    The means of a linear recursion with known gains, ``m_{k+1} = F_k m_k + g_k`` from ``m_0 = m0`` (or with
    ``reverse``, ``m_k = F_k m_{k+1} + g_k`` back from ``m_{T-1} = m0``): the mean half of a filter, of an RTS
    smoother or of backward sampling.

    :param torch.Tensor F: ``(..., T-1 or 1, n, n)`` (a time dim of 1: the same map at every step).
    :param torch.Tensor g: ``(..., T-1, n)``.
    :param torch.Tensor m0: ``(..., n)``.
    :returns: ``(..., T, n)``, all ``m_k`` in time order, at the broadcast batch shape.

    With a graph it is one autograd node, :class:`_AffineSteps`, whose backward is the adjoint recursion
    ``lambda_k = G_k + F_k^T lambda_{k+1}``, one operation per step where autograd records three (two products
    and a sum), with the gradients of ``F`` and ``g`` formed for all steps at once after it.
    """
    for name, x, dims in (("F", F, 3), ("g", g, 2), ("m0", m0, 1)):
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            got = f"dtype {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise TypeError(f"{name} must be a floating point tensor, got {got}")
        if x.dim() < dims:
            raise ValueError(f"{name} must have at least {dims} dims, got shape {tuple(x.shape)}")
    n = m0.size(-1)
    if F.shape[-2:] != (n, n) or g.size(-1) != n:
        raise ValueError(
            f"F must have shape (..., T-1 or 1, {n}, {n}) and g (..., T-1, {n}) for m0 (..., {n}), "
            f"got F {tuple(F.shape)}, g {tuple(g.shape)}"
        )
    if F.size(-3) not in (1, g.size(-2)):
        raise ValueError(f"F must have a time dim of 1 or {g.size(-2)} (g's), got shape {tuple(F.shape)}")
    try:
        batch = torch.broadcast_shapes(F.shape[:-3], g.shape[:-2], m0.shape[:-1])
    except RuntimeError:
        raise ValueError(
            f"batch dims of F {tuple(F.shape[:-3])}, g {tuple(g.shape[:-2])} and m0 {tuple(m0.shape[:-1])} "
            "do not broadcast"
        ) from None
    g, m0 = g.expand(batch + g.shape[-2:]), m0.expand(batch + m0.shape[-1:])
    if torch.is_grad_enabled() and any(x.requires_grad for x in (F, g, m0)):
        return _AffineSteps.apply(F, g, m0, reverse)
    return _affine_loop(F, g, m0, reverse)


def _affine_loop(F, g, m0, reverse):
    """The loop of :func:`affine_steps` (``g`` and ``m0`` at the full batch shape)."""
    n_steps = g.size(-2)
    Fs, gs, m = time_slices(F, n_steps, 2), g.unbind(-2), m0
    ms = [m]
    for k in range(n_steps - 1, -1, -1) if reverse else range(n_steps):
        m = _affine(gs[k], Fs[k], m)
        ms.append(m)
    return torch.stack(ms[::-1] if reverse else ms, -2)


class _AffineSteps(torch.autograd.Function):
    """:func:`affine_steps` as one autograd node (see there)."""

    @staticmethod
    def forward(ctx, F, g, m0, reverse):
        m = _affine_loop(F, g, m0, reverse)
        ctx.save_for_backward(F, m)
        ctx.reverse = reverse
        return m

    @staticmethod
    @once_differentiable
    def backward(ctx, G):
        F, m = ctx.saved_tensors
        reverse, n_steps = ctx.reverse, m.size(-2) - 1
        FTs, Gs = time_slices(F.mT, n_steps, 2), G.unbind(-2)
        lam = Gs[0] if reverse else Gs[-1]  # the gradient reaching the step that no other one feeds
        lams = [lam]
        for k in range(n_steps) if reverse else range(n_steps - 1, -1, -1):
            lam = _affine(Gs[k + 1] if reverse else Gs[k], FTs[k], lam)  # lambda_src = G_src + F_k^T lambda_dst
            lams.append(lam)
        lam = torch.stack(lams if reverse else lams[::-1], -2)  # in time order
        dst, src = (lam[..., :-1, :], m[..., 1:, :]) if reverse else (lam[..., 1:, :], m[..., :-1, :])
        dF = None
        if ctx.needs_input_grad[0]:
            if F.dim() == 3:  # one F for every sequence: the batch sum inside one product per step
                dF = torch.einsum("...tn,...tk->tnk", dst, src)
            else:
                dF = dst.unsqueeze(-1) * src.unsqueeze(-2)
            dF = (dF if F.size(-3) > 1 else dF.sum(-3, keepdim=True)).sum_to_size(F.shape)
        dm0 = lam[..., -1, :] if reverse else lam[..., 0, :]
        return dF, dst, dm0, None


def _same_shape(xs):
    """Broadcasts every element (e.g. the prior before any data) to the shape of all of them, for stacking."""
    shape = xs[-1].shape
    if all(x.shape == shape for x in xs):  # the common case, without broadcast_shapes' cost per step
        return xs
    shape = torch.broadcast_shapes(*(x.shape for x in xs))
    return [x if x.shape == shape else x.expand(shape) for x in xs]


def kalman_filter(a, A, C, Q, R, mu0, Sigma0, b=None, mask=None) -> KalmanFilterResult:
    """
    Sequential Kalman filter over a whole sequence.

    :param torch.Tensor a: ``(batch, T, dim_a)`` encodings; missing steps may hold NaN.
    :param torch.Tensor A: ``(batch, T, dim_z, dim_z)``; slot ``t`` maps ``z_{t-1}`` to ``z_t``, slot 0 unused.
    :param torch.Tensor C: ``(batch, T, dim_a, dim_z)``.
    :param torch.Tensor Q: ``(batch, dim_z, dim_z)``.
    :param torch.Tensor R: ``(batch, dim_a, dim_a)``.
    :param torch.Tensor mu0: ``(batch, dim_z)`` mean of ``z_1``.
    :param torch.Tensor Sigma0: ``(batch, dim_z, dim_z)`` covariance of ``z_1``.
    :param torch.Tensor b: optional ``(batch, T, dim_z)`` transition offsets ``B_t u_t``, slot 0 unused.
    :param torch.Tensor mask: optional bool ``(batch, T)``, True where ``a_t`` is observed.

    Time-varying arguments may have a time dim of 1, and all batch dims broadcast.
    Computation is in the dtype of ``A``; outputs have the full broadcast batch shape.
    """
    shape = check_lgssm_shapes(A, C, Q, R, mu0, Sigma0, b=b, mask=mask, a=a)
    check_lgssm_values(Q, R, Sigma0, a=a, mask=mask)
    batch, T, dz, da = shape
    a, C, Q, R, mu0, Sigma0, b = (x if x is None else x.to(A.dtype) for x in (a, C, Q, R, mu0, Sigma0, b))
    f = filter_steps(a, A, C, Q, R, mu0, Sigma0, b, mask)
    return KalmanFilterResult(
        f.pred_mean.expand(batch + (T, dz)),
        f.pred_cov.expand(batch + (T, dz, dz)),
        f.filt_mean.expand(batch + (T, dz)),
        f.filt_cov.expand(batch + (T, dz, dz)),
        f.log_prob.expand(batch),
        f.step_log_prob.expand(batch + (T,)),
    )


def smoother_gain(filt_cov, pred_cov_next, A_next, AF=None):
    """
    ``J_t = F_t A_{t+1}^T P_{t+1}^{-1}`` from the filtered covariance ``F_t (..., dim_z, dim_z)``,
    the next prediction's covariance ``P_{t+1}`` and ``A_{t+1}``, all ``(..., dim_z, dim_z)``
    (``AF``: ``A_{t+1} F_t`` where the caller has it).
    """
    L = torch.linalg.cholesky_ex(pred_cov_next).L
    return torch.cholesky_solve(A_next @ filt_cov if AF is None else AF, L).mT


def backward_conditional(filt_mean, filt_cov, pred_mean_next, pred_cov_next, A_next, z_next):
    """
    ``p(z_t | z_{t+1}, a_{<=t}) = N(m_t + J (z_{t+1} - p_{t+1}), F_t - J P_{t+1} J^T)``, the
    backward step of forward-filter backward-sample; ``z_next (..., dim_z)``.

    :returns: ``(mean (..., dim_z), cov (..., dim_z, dim_z))``.
    """
    J = smoother_gain(filt_cov, pred_cov_next, A_next)
    mean = filt_mean + _mv(J, z_next - pred_mean_next)
    return mean, _sym(filt_cov - J @ pred_cov_next @ J.mT)


def _backward_terms(filtered: KalmanFilterResult, A):
    """For all ``t < T`` at once: the gains ``J_t``, offsets ``c_t = m_t - J_t p_{t+1}`` and backward
    conditional covariances ``D_t = F_t - J_t P_{t+1} J_t^T``, so that
    ``p(z_t | z_{t+1}, a_{<=t}) = N(J_t z_{t+1} + c_t, D_t)``."""
    fm, fc, pm, pc = filtered.filt_mean, filtered.filt_cov, filtered.pred_mean, filtered.pred_cov
    A_next = A[..., 1:, :, :] if A.size(-3) > 1 else A
    F, P_next = fc[..., :-1, :, :], pc[..., 1:, :, :]
    A_next = A_next.to(fc.dtype)
    AF = A_next @ F
    J = smoother_gain(F, P_next, A_next, AF)
    c = fm[..., :-1, :] - _mv(J, pm[..., 1:, :])
    D = _sym(F - J @ AF)  # F_t - J_t P_{t+1} J_t^T, with J_t P_{t+1} = F_t A_{t+1}^T
    return J, c, D


def rts_smoother(filtered: KalmanFilterResult, A):
    """
    Rauch-Tung-Striebel backward pass.

    :param KalmanFilterResult filtered: output of :func:`kalman_filter`.
    :param torch.Tensor A: transition matrices ``(batch, T, dim_z, dim_z)`` as given to the filter
        (a time dim of 1 for time-invariant ones).
    :returns: smoothed ``(mean, cov)`` of ``p(z_t | a_obs)``, shapes
        ``(batch, T, dim_z)`` and ``(batch, T, dim_z, dim_z)``.
    """
    T = filtered.filt_mean.size(-2)
    mean, cov = filtered.filt_mean[..., -1, :], filtered.filt_cov[..., -1, :, :]
    if T == 1:
        return filtered.filt_mean, filtered.filt_cov
    J, c, D = _backward_terms(filtered, A)
    Js, JTs, Ds = J.unbind(-3), J.mT.unbind(-3), D.unbind(-3)
    covs = [cov]
    for t in range(T - 2, -1, -1):
        cov = _sym(_baddmm(Ds[t], Js[t] @ cov, JTs[t]))
        covs.append(cov)
    return affine_steps(J, c, mean, reverse=True), torch.stack(_same_shape(covs[::-1]), -3)


def backward_sample(filtered: KalmanFilterResult, A, noise):
    """
    Joint reparameterised sample ``z_{1:T} ~ p(z | a_obs)`` from a filter's output by
    backward sampling: ``z_T ~ p(z_T | a_obs)``, then ``z_t ~ p(z_t | z_{t+1}, a_{<=t})``.

    :param torch.Tensor A: as given to the filter.
    :param torch.Tensor noise: standard normal ``sample_shape + (batch, T, dim_z)`` (zeros give
        the smoothed mean).
    :returns: ``sample_shape + (batch, T, dim_z)``.
    """
    fm, fc = filtered.filt_mean, filtered.filt_cov
    T = fm.size(-2)
    if not isinstance(noise, torch.Tensor) or noise.shape[-2:] != fm.shape[-2:]:
        got = tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__
        raise ValueError(f"noise must have shape sample_shape + (batch, {T}, {fm.size(-1)}), got {got}")
    L_T = cholesky(fc[..., -1, :, :], "the last filtered covariance")
    z = fm[..., -1, :] + _mv(L_T, noise[..., -1, :])
    if T == 1:
        return z.unsqueeze(-2)
    J, c, D = _backward_terms(filtered, A)
    offsets = c + _mv(cholesky(D, "the backward conditional covariance"), noise[..., :-1, :])  # (..., T-1, dim_z)
    return affine_steps(J, offsets, z, reverse=True)


def kalman_smoother(a, A, C, Q, R, mu0, Sigma0, b=None, mask=None):
    """
    Filter then smooth; arguments as :func:`kalman_filter`.

    :returns: ``(mean, cov)`` of ``p(z_t | a_obs)`` with shapes ``(batch, T, dim_z)``
        and ``(batch, T, dim_z, dim_z)``.
    """
    filtered = kalman_filter(a, A, C, Q, R, mu0, Sigma0, b=b, mask=mask)
    return rts_smoother(filtered, A)
