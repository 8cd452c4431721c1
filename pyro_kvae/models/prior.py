# SPDX-License-Identifier: Apache-2.0
"""
The KVAE prior ``p_gamma(a | u)`` (paper eq. 8): an LGSSM whose matrices mix
``K`` learned modes with weights ``alpha_t = f(a_{0:t-1})`` from a dynamics
parameter network (eq. 9)::

    A_t = sum_k alpha_t^k A^k,   B_t = sum_k alpha_t^k B^k,   C_t = sum_k alpha_t^k C^k
    z_1 ~ N(0, Sigma0),  z_t = A_t z_{t-1} + B_t u_t + w_t,  a_t = C_t z_t + v_t

Because ``gamma_t`` depends only on ``a_{<t}``, ``log p(a)`` is exact: compute
``alpha`` from ``a`` shifted by one step, then marginalise ``z`` with the Kalman
core (:class:`~pyro_kvae.distributions.LinearGaussianSSM`).
"""

import inspect
import math
from typing import NamedTuple, Optional

import torch
from pyro.distributions import TorchDistribution, constraints
from pyro.nn import PyroModule, pyro_method
from torch import nn

from ..distributions import LinearGaussianSSM
from ..nn.dynamics import DynamicsNetwork
from ..ops.checks import cholesky
from ..ops.kalman import (
    CovariancePass,
    KalmanFilterResult,
    _innovation_log_prob,
    _minus_a_column,
    _state,
    condition,
    filter_means,
)
from ..ops.precision import full_precision


class RecursiveFilterResult(NamedTuple):
    """
    Output of :meth:`KalmanPrior.filter`: ``alpha (batch, T, K)`` estimated
    recursively, ``a (batch, T, dim_a)`` with observed steps kept and missing
    steps replaced by their estimates ``a_hat_t`` (eq. 12), and the Kalman
    filter's moments for that ``alpha`` (:class:`~pyro_kvae.ops.kalman.KalmanFilterResult`,
    in float64, the dtype the filter computes in), whose ``log_prob`` is ``log p_alpha(a_obs)``;
    ``observed`` is the covariance pass of the filter with every step observed and the same
    ``alpha`` (:class:`~pyro_kvae.ops.kalman.CovariancePass`), or None unless asked for.
    """

    alpha: torch.Tensor
    a: torch.Tensor
    filtered: KalmanFilterResult
    observed: Optional[CovariancePass] = None


class KalmanPrior(PyroModule):
    """
    The KVAE's LGSSM prior over encodings ``a``.

    :param DynamicsNetwork dynamics: gives ``alpha`` (its ``K`` and ``dim_a`` are used).
    :param int dim_z: state dimension.
    :param int dim_u: control dimension (0: no controls).
    :param float Q: transition noise variance (``Q = q I``); reference 0.08.
    :param float R: emission noise variance (``R = r I``); reference 0.03.
    :param float Sigma0: initial state variance (``z_1 ~ N(0, s I)``); reference 20.
    :param float init_std: std of the random initial ``B^k`` and ``C^k`` (``A^k`` start at I).
    :param bool learn_noise: learn ``Q``, ``R``, ``Sigma0`` (isotropic) instead of fixing them.
    :param bool full_noise: learn them as full covariance matrices, each ``L L^T`` with a
        lower-triangular ``L`` whose diagonal is stored as its log (needs ``learn_noise``);
        they start at the isotropic values above.
    """

    def __init__(
        self,
        dynamics: DynamicsNetwork,
        dim_z: int = 4,
        dim_u: int = 0,
        Q: float = 0.08,
        R: float = 0.03,
        Sigma0: float = 20.0,
        init_std: float = 0.05,
        learn_noise: bool = False,
        full_noise: bool = False,
    ):
        super().__init__()
        if not isinstance(dynamics, DynamicsNetwork):
            raise TypeError(f"dynamics must be a DynamicsNetwork, got {type(dynamics).__name__}")
        for name, value, least in (("dim_z", dim_z, 1), ("dim_u", dim_u, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an int >= {least}, got {value!r}")
        for name, value in (("Q", Q), ("R", R), ("Sigma0", Sigma0), ("init_std", init_std)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive finite number (a variance or scale), got {value!r}")
        self.dynamics = dynamics
        K, dim_a = dynamics.K, dynamics.dim_a
        self.K, self.dim_a, self.dim_z, self.dim_u = K, dim_a, dim_z, dim_u
        self.A = nn.Parameter(torch.eye(dim_z).repeat(K, 1, 1))
        self.B = nn.Parameter(init_std * torch.randn(K, dim_z, dim_u)) if dim_u else None
        self.C = nn.Parameter(init_std * torch.randn(K, dim_a, dim_z))
        self.register_buffer("mu0", torch.zeros(dim_z))
        log_vars = torch.tensor([Q, R, Sigma0]).log()
        if full_noise and not learn_noise:
            raise ValueError("full_noise=True needs learn_noise=True (fixed noise is isotropic)")
        self.full_noise = full_noise
        if full_noise:  # raw lower-triangular factors, log of the diagonal
            for name, size, log_var in (
                ("Q", dim_z, log_vars[0]),
                ("R", dim_a, log_vars[1]),
                ("Sigma0", dim_z, log_vars[2]),
            ):
                setattr(self, f"{name}_tril", nn.Parameter(0.5 * log_var * torch.eye(size)))
        elif learn_noise:
            self.log_var = nn.Parameter(log_vars)
        else:
            self.register_buffer("log_var", log_vars)

    def _noise(self, index: int, name: str, size: int):
        if self.full_noise:
            raw = getattr(self, f"{name}_tril")
            L = raw.tril(-1) + torch.diag_embed(raw.diagonal().exp())
            return L @ L.mT
        return self.log_var[index].exp() * torch.eye(size, device=self.A.device, dtype=self.A.dtype)

    @property
    @pyro_method
    def Q(self):
        """``(dim_z, dim_z)``"""
        return self._noise(0, "Q", self.dim_z)

    @property
    @pyro_method
    def R(self):
        """``(dim_a, dim_a)``"""
        return self._noise(1, "R", self.dim_a)

    @property
    @pyro_method
    def Sigma0(self):
        """``(dim_z, dim_z)``"""
        return self._noise(2, "Sigma0", self.dim_z)

    @pyro_method
    def mix(self, alpha):
        """
        Eq. (9): ``alpha (..., K)`` -> ``A_t (..., dim_z, dim_z)``, ``B_t (..., dim_z, dim_u)``,
        ``C_t (..., dim_a, dim_z)`` (``B_t`` is None when ``dim_u == 0``).
        """
        if alpha.size(-1) != self.K:
            raise ValueError(f"alpha must have shape (..., {self.K}), got {tuple(alpha.shape)}")
        A = torch.einsum("...k,kij->...ij", alpha, self.A.to(alpha.dtype))
        B = None if self.B is None else torch.einsum("...k,kij->...ij", alpha, self.B.to(alpha.dtype))
        C = torch.einsum("...k,kij->...ij", alpha, self.C.to(alpha.dtype))
        return A, B, C

    def _check_u(self, u, batch_T):
        if self.dim_u == 0:
            if u is not None and u.size(-1) != 0:
                raise ValueError(f"this prior has dim_u=0 but got controls u of shape {tuple(u.shape)}")
            return None
        if u is None:
            raise ValueError(f"u must be given, with shape (batch, T, {self.dim_u})")
        if u.shape != tuple(batch_T) + (self.dim_u,):
            raise ValueError(f"u must have shape {tuple(batch_T) + (self.dim_u,)}, got {tuple(u.shape)}")
        return u

    @full_precision
    def lgssm(self, alpha, u=None, mask=None) -> LinearGaussianSSM:
        """
        The LGSSM with mixture weights ``alpha (batch, T, K)`` held fixed.

        :param torch.Tensor u: ``(batch, T, dim_u)`` controls, ``u[:, t]`` drives the transition into step ``t``.
        :param torch.Tensor mask: bool ``(batch, T)``, True where ``a_t`` is observed.
        """
        A, B, C = self.mix(alpha)
        u = self._check_u(u, alpha.shape[:-1])
        kw = {} if u is None else {"B": B, "u": u}
        return LinearGaussianSSM(self.mu0, self.Sigma0, A, self.Q, C, self.R, mask=mask, **kw)

    @full_precision
    def forward(self, a, u=None, mask=None) -> LinearGaussianSSM:
        """
        The LGSSM given ``a (batch, T, dim_a)``, with ``alpha`` computed from ``a``
        shifted by one step, so that ``self(a).log_prob(a) == log p(a | u)`` exactly.
        """
        return self.lgssm(self.dynamics(a), u, mask)

    def distribution(self, batch_shape, T: int, u=None) -> "KalmanPriorDistribution":
        """``p(a | u)`` as a Pyro distribution with batch shape ``batch_shape`` and event ``(T, dim_a)``."""
        return KalmanPriorDistribution(self, torch.Size(batch_shape), T, u)

    @full_precision
    def sample(self, batch_shape, T: int, u=None):
        """
        Ancestral sample from the generative model, ``alpha`` fed by the generated ``a``.

        :returns: ``z (batch, T, dim_z)``, ``a (batch, T, dim_a)``, ``alpha (batch, T, K)``.
        """
        batch_shape = torch.Size(batch_shape)
        u = self._check_u(u, batch_shape + (T,))
        L_Q, L_R, L_S = (cholesky(m, name) for m, name in ((self.Q, "Q"), (self.R, "R"), (self.Sigma0, "Sigma0")))

        def noise(L):
            eps = torch.randn(batch_shape + (L.size(-1), 1), device=L.device, dtype=L.dtype)
            return (L @ eps).squeeze(-1)

        a_prev = self.dynamics.a0.expand(batch_shape + (self.dim_a,))
        state = self.dynamics.init_state(batch_shape)
        zs, as_, alphas = [], [], []
        for t in range(T):
            alpha, state = self.dynamics.step(a_prev, state)
            A, B, C = self.mix(alpha)
            if t == 0:
                z = self.mu0 + noise(L_S)
            else:
                z = (A @ z.unsqueeze(-1)).squeeze(-1) + noise(L_Q)
                if u is not None:
                    z = z + (B @ u[..., t, :, None]).squeeze(-1)
            a_prev = (C @ z.unsqueeze(-1)).squeeze(-1) + noise(L_R)
            zs.append(z)
            as_.append(a_prev)
            alphas.append(alpha)
        return torch.stack(zs, -2), torch.stack(as_, -2), torch.stack(alphas, -2)

    @full_precision
    def filter(self, a, mask=None, u=None, sample: bool = False, observed_covariances: bool = False):
        """
        Kalman filtering with the dynamics network in the loop (paper section 4).

        At a missing step ``t`` the network needs ``a_t`` to give ``alpha_{t+1}``;
        it gets the estimate ``a_hat_t``: the predicted mean ``C_t E[z_t | a_{<t}]``,
        or with ``sample=True`` a draw ``C_t z_hat_t + v_t`` with
        ``z_hat_t ~ p(z_t | a_{<t})`` (eqs. 11-12).

        :param torch.Tensor a: ``(batch, T, dim_a)``; missing steps may hold anything, NaN included.
        :param torch.Tensor mask: bool ``(batch, T)``, True where ``a_t`` is observed (default: all).
        :param torch.Tensor u: ``(batch, T, dim_u)`` controls.
        :param bool observed_covariances: also run, in the same operations, the covariance pass of
            the filter with every step observed and the same ``alpha``
            (:class:`~pyro_kvae.ops.kalman.CovariancePass`), with which :meth:`observed_log_prob`
            gives ``log p_alpha(a)`` of a completed sequence by one affine map per step.
        :rtype: RecursiveFilterResult
        """
        if a.dim() < 2 or a.size(-1) != self.dim_a:
            raise ValueError(f"a must have shape (batch, T, {self.dim_a}), got {tuple(a.shape)}")
        batch_shape, T = a.shape[:-2], a.size(-2)
        if mask is None:
            mask = torch.ones(batch_shape + (T,), dtype=torch.bool, device=a.device)
        if mask.dtype != torch.bool or mask.shape != batch_shape + (T,):
            raise ValueError(
                f"mask must be a bool tensor of shape {tuple(batch_shape + (T,))}, got {mask.dtype} {tuple(mask.shape)}"
            )
        u = self._check_u(u, batch_shape + (T,))
        # The Kalman part runs in float64 (the dynamics network in the model's dtype), in few operations per
        # step (see pyro_kvae.ops.kalman). A state is carried as M = [[P, m], [m^T, s]], so that a prediction
        # is A_r^T M A_r + [[Q, b], [., 0]] with A_r = [[A^T, 0], [0, 1]] (2 products serve covariance and
        # mean) and an update is M - D^T S^{-1} D with D = [C P | C m - a] (ops.kalman.condition); the last row
        # of M never reaches its first rows and is not used. A missing
        # step is observed through a zero emission matrix, and every matrix of a step comes from alpha_t by one
        # product with the modes. With observed_covariances, a second stream (the filter that observes every
        # step) is stacked under the first and takes part in the same operations through block-diagonal
        # matrices; its mean observes zeros and is not used.
        N, n, dz, da = batch_shape.numel(), 1 + observed_covariances, self.dim_z, self.dim_a
        d, f64, dev = dz + 1, torch.float64, a.device
        dtype = a.dtype
        a = torch.where(mask.unsqueeze(-1), a, a.new_zeros(())).reshape(N, T, da).to(f64)
        mask = mask.reshape(N, T)
        u = None if u is None else u.reshape(N, T, self.dim_u).to(f64)
        pad, eye = torch.nn.functional.pad, torch.eye(n, dtype=f64, device=dev)

        def blocks(m):  # (K, r, c) -> n copies on the diagonal (K, n r, n c)
            return torch.einsum("ij,kab->kiajb", eye, m).reshape(m.size(0), n * m.size(-2), n * m.size(-1))

        corner = torch.zeros(1, d, d, dtype=f64, device=dev)
        corner[..., dz, dz] = 1.0
        Ar = pad(self.A.to(f64).mT, (0, 1, 0, 1))  # the modes of A_r without their corner
        Ct = pad(self.C.to(f64), (0, 1))  # the modes of [C | 0]
        modes = [blocks(Ar.mT), Ar, blocks(Ct), Ct]  # A_r^T and [C | 0] per stream, A_r, [C | 0]
        constant = [blocks(corner), corner, torch.zeros(1, (n * n + 1) * da * d, dtype=f64, device=dev)]
        if u is not None:
            modes.append(self.B.to(f64))
            constant.append(torch.zeros(1, dz, self.dim_u, dtype=f64, device=dev))
        sizes = [m[0].numel() for m in modes]
        modes, constant = (torch.cat([m.flatten(1) for m in ms], 1) for ms in (modes, constant))
        Q, R = self.Q.to(f64), self.R.to(f64)
        Qb, Rn = pad(Q, (0, 1, 0, 1)).repeat(n, 1), R.repeat(n, 1)  # [[Q, 0], [0, 0]] and R per stream
        observed = mask.to(f64)[..., None, None].expand(N, T, da, 1)
        if n == 2:
            observed = torch.cat([observed, observed.new_ones(()).expand(N, T, da, 1)], -2)
        a_cols = pad(_minus_a_column(a, dz), (0, 0, 0, (n - 1) * da))  # [0 | -a_t] over zeros
        if "dtype" in inspect.signature(self.dynamics.init_state).parameters:  # (the package's networks)
            step_dtype, state = f64, self.dynamics.init_state((N,), dtype=f64)  # no casts per step
        else:  # a network of one's own whose init_state takes no dtype: its steps in the data's dtype
            step_dtype, state = dtype, self.dynamics.init_state((N,))
        missing = (~mask).to(f64)
        if sample:
            missing = missing.unsqueeze(-1).unbind(1)
        else:  # a_hat_t = C_t m_t, the last column of X's first rows, where a_t is missing: picked out of X by one
            # product per step with 0/1 weights (slicing X would record two zero-filled copies in its gradient)
            pick = torch.zeros(n * da, d, da, dtype=f64, device=dev)
            pick[torch.arange(da), dz, torch.arange(da)] = 1.0
            picks = (pick.flatten(0, 1) * missing[..., None, None]).unbind(1)  # T x (N, n da d, da)
        observed, a_cols, a_steps = observed.unbind(1), a_cols.unbind(1), a.unbind(1)
        M = _state(self.mu0.to(f64), self.Sigma0.to(f64)).repeat(n, 1).expand(N, n * d, d)
        L_R = cholesky(R, "R")
        a_prev = self.dynamics.a0.to(f64).expand(N, da)
        out = {k: [] for k in ("alpha", "a", "pred", "filt", "S", "D")}
        for t in range(T):
            alpha, state = self.dynamics.step(a_prev.to(step_dtype), state)
            W = torch.addmm(constant, alpha.to(f64), modes).split(sizes, -1)
            ArT, Ar, Cn, Ct = (
                w.unflatten(-1, s) for w, s in zip(W, ((n * d, n * d), (d, d), (n * da, n * d), (da, d)))
            )
            if t > 0:
                if u is not None:
                    b = W[4].unflatten(-1, (dz, self.dim_u)) @ u[:, t].unsqueeze(-1)  # B_t u_t (N, dim_z, 1)
                    Qb = pad(torch.cat([Q.expand(N, dz, dz), b], -1), (0, 0, 0, 1))  # [[Q, b_t], [0, 0]]
                    Qb = Qb.repeat(1, n, 1)
                M = torch.baddbmm(Qb, ArT @ M, Ar)  # [[A P A^T + Q, A m + b], [., s]]
            pred, X = M, Cn @ M  # X = [C P | C m]: the predicted a_t is the last column of its first rows
            if sample:
                L = cholesky(pred[:, :dz, :dz], "the predicted covariance of z_t")
                z_hat = pred[:, :dz, dz] + (L @ torch.randn_like(pred[:, :dz, dz]).unsqueeze(-1)).squeeze(-1)
                v = L_R @ torch.randn(N, da, 1, dtype=f64, device=dev)
                a_hat = (Ct[..., :dz] @ z_hat.unsqueeze(-1) + v).squeeze(-1)
                a_prev = torch.addcmul(a_steps[t], a_hat, missing[t])  # a_t, or a_hat_t where missing
            else:
                a_prev = torch.baddbmm(a_steps[t].unsqueeze(1), X.view(N, 1, -1), picks[t]).view(N, da)
            D = torch.addcmul(a_cols[t], X, observed[t])  # [C P | C m - a]; a missing step observes nothing
            S = torch.baddbmm(Rn, D, Ct.mT).view(N * n, da, da)  # C P C^T + R ([C | 0]: C m - a drops out)
            D = D.view(N * n, da, d)
            F = condition(M.reshape(N * n, d, d), D, S)
            M = F.view(N, n * d, d)
            for k, v in zip(out, (alpha, a_prev, pred, F, S, D)):  # each as it enters or leaves an operation
                out[k].append(v)
        # stacked along a leading time dim and viewed as (batch, T, ...): no copies of the gradients' slices
        b = len(batch_shape)
        alpha, a = (
            torch.stack(out[k]).view((T,) + batch_shape + (-1,)).movedim(0, b).to(dtype) for k in ("alpha", "a")
        )
        pred, filt, S, D = (
            torch.stack(out[k]).view((T,) + batch_shape + (n,) + shape).movedim(0, b)
            for k, shape in (("pred", (d, d)), ("filt", (d, d)), ("S", (da, da)), ("D", (da, d)))
        )
        lp = _innovation_log_prob(S[..., 0, :, :], D[..., 0, :, :], mask.reshape(batch_shape + (T,)))
        p, f = pred[..., 0, :dz, :], filt[..., 0, :dz, :]
        filtered = KalmanFilterResult(p[..., dz], p[..., :dz], f[..., dz], f[..., :dz], lp.sum(-1), lp)
        cov = None
        if n == 2:
            cov = CovariancePass(pred[..., 1, :dz, :dz], filt[..., 1, :dz, :dz], S[..., 1, :, :])
        return RecursiveFilterResult(alpha, a, filtered, cov)

    @full_precision
    def observed_log_prob(self, r, a, u=None):
        """
        ``log p_alpha(a)`` of a completed sequence ``a (batch, T, dim_a)`` (every step observed), with the
        ``alpha`` of a recursive filter result ``r`` held fixed (:meth:`filter` with ``observed_covariances``):
        the same number as ``self.lgssm(r.alpha, u).log_prob(a)``, in float64, by one affine map per step.
        """
        if r.observed is None:
            raise ValueError("r must come from filter(..., observed_covariances=True)")
        f64 = torch.float64
        A, B, C = self.mix(r.alpha.to(f64))
        u = self._check_u(u, a.shape[:-1])
        b = None if u is None else (B @ u.to(f64).unsqueeze(-1)).squeeze(-1)
        return filter_means(a.to(f64), A, C, self.mu0.to(f64), r.observed, b).log_prob


class KalmanPriorDistribution(TorchDistribution):
    """
    ``p(a | u)`` of a :class:`KalmanPrior` as a distribution over
    ``a (batch, T, dim_a)``: ``log_prob`` is exact (``z`` marginalised by the
    parallel Kalman scan, ``alpha`` teacher-forced from the value), ``rsample``
    is ancestral with ``alpha`` fed by the generated ``a``.
    """

    arg_constraints = {}
    support = constraints.independent(constraints.real, 2)
    has_rsample = True

    def __init__(self, prior: KalmanPrior, batch_shape, T: int, u=None, validate_args=None):
        self.prior, self.u, self.T = prior, u, T
        super().__init__(torch.Size(batch_shape), torch.Size((T, prior.dim_a)), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        u = None if self.u is None else self.u.expand(batch_shape + self.u.shape[-2:])
        return KalmanPriorDistribution(self.prior, batch_shape, self.T, u, validate_args=False)

    @full_precision
    def log_prob(self, value):
        if value.shape[-2:] != self.event_shape:
            raise ValueError(f"value must have shape (..., {self.T}, {self.prior.dim_a}), got {tuple(value.shape)}")
        u = None if self.u is None else self.u.expand(value.shape[:-2] + self.u.shape[-2:])
        return self.prior(value, u).log_prob(value)

    @full_precision
    def rsample(self, sample_shape=torch.Size()):
        shape = torch.Size(sample_shape) + self.batch_shape
        u = None if self.u is None else self.u.expand(shape + self.u.shape[-2:])
        return self.prior.sample(shape, self.T, u)[1]
