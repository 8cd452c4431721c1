# SPDX-License-Identifier: Apache-2.0
import torch
from pyro.distributions import GaussianHMM, MultivariateNormal, TorchDistribution, constraints

from ..ops.checks import check_lgssm_shapes, check_lgssm_values
from ..ops.kalman import backward_sample, filter_steps, rts_smoother
from ..ops.lgssm import lgssm_log_prob, lgssm_posterior_rsample, lgssm_prior_rsample
from ..ops.sqrt_kalman import sqrt_kalman_filter, sqrt_posterior_rsample, sqrt_rts_smoother

#: On a GPU, :meth:`LinearGaussianSSM.log_prob` runs the sequential filter up to this many steps
#: and the parallel scan beyond: the step count where the scan starts to need fewer operator calls
#: (kernel launches) for log-prob + backward, at (batch, dim_z, dim_a) = (32, 4, 2): 4111 against
#: 5096 at T = 20, 4835 against 5003 at 24, 5559 against 5003 at 28
#: (``python benchmarks/bench_kalman.py --ops``).
SEQUENTIAL_MAX_T = 24


class LinearGaussianSSM(TorchDistribution):
    r"""
    Distribution of the observations ``a_{1:T}`` of a time-varying linear
    Gaussian state space model, with the states ``z_{1:T}`` marginalised
    exactly, in the style of :class:`pyro.distributions.GaussianHMM`::

        z_1 ~ N(mu0, Sigma0)
        z_t = A_t z_{t-1} + B_t u_t + w_t,   w_t ~ N(0, Q),   t = 2..T
        a_t = C_t z_t + v_t,                 v_t ~ N(0, R)

    Time index convention (paper indexing): tensor slot ``t`` (0-based) is the
    paper's step ``t+1``, and ``A[..., t, :, :]``, ``B[..., t]``, ``u[..., t, :]``
    hold the transition *into* that step, so slot 0 of each is ignored. (Pyro's
    ``GaussianHMM`` instead starts from a ``z_0`` before the first transition.)

    Time-varying arguments may have a time dim of ``T`` or ``1``; all leading
    batch dims broadcast. ``batch_shape`` is their broadcast and
    ``event_shape == (T, dim_a)``.

    :param torch.Tensor mu0: ``(batch, dim_z)`` mean of ``z_1``.
    :param torch.Tensor Sigma0: ``(batch, dim_z, dim_z)`` covariance of ``z_1``.
    :param torch.Tensor A: ``(batch, T, dim_z, dim_z)`` transition matrices.
    :param torch.Tensor Q: ``(batch, dim_z, dim_z)`` transition noise covariance.
    :param torch.Tensor C: ``(batch, T, dim_a, dim_z)`` emission matrices.
    :param torch.Tensor R: ``(batch, dim_a, dim_a)`` emission noise covariance.
    :param torch.Tensor B: optional ``(batch, T, dim_z, dim_u)`` control matrices.
    :param torch.Tensor u: optional ``(batch, T, dim_u)`` controls (with ``B``).
    :param torch.Tensor mask: optional bool ``(batch, T)``: True where ``a_t`` is
        observed. Unobserved ``a_t`` are integrated out by :meth:`log_prob`,
        :meth:`filter`, :meth:`smooth` and :meth:`rsample_posterior`, and may hold
        any value, NaN included.
    :param int duration: ``T`` when every time-varying argument has a time dim of 1.
    :param torch.dtype compute_dtype: dtype inference runs in (default float64,
        results are cast back); ``None`` computes in the parameters' dtype.
        In float64, :meth:`log_prob` and :meth:`rsample_posterior` use the
        sequential covariance-form filter when the data has more sequences than the
        parameters (e.g. one time-invariant model for all): its covariances, gains
        and Cholesky factors are then computed once for all sequences. Otherwise
        :meth:`log_prob` uses it on a CPU too (faster there at every size measured)
        and on a GPU up to :data:`SEQUENTIAL_MAX_T` steps, the parallel scan (log-depth
        in ``T``) on longer sequences there, and :meth:`rsample_posterior` the parallel
        scan. In any
        other dtype they use the sequential square-root filter of
        :mod:`pyro_kvae.ops.sqrt_kalman`, since the parallel scan's information form
        loses all accuracy in float32 on ill-conditioned problems (tiny ``Q`` or ``R``,
        huge ``Sigma0``, unstable ``A``). :meth:`filter` and :meth:`smooth` use the
        covariance-form filter in float64 and the square-root one otherwise (or if a
        float64 covariance is not positive definite).
    """

    arg_constraints = {}
    support = constraints.independent(constraints.real, 2)
    has_rsample = True

    def __init__(
        self,
        mu0,
        Sigma0,
        A,
        Q,
        C,
        R,
        B=None,
        u=None,
        mask=None,
        duration=None,
        compute_dtype=torch.float64,
        validate_args=None,
    ):
        if (B is None) != (u is None):
            raise ValueError("B and u must be given together: B (batch, T, dim_z, dim_u), u (batch, T, dim_u)")
        b = None
        if B is not None:
            for name, x in (("B", B), ("u", u)):
                if not isinstance(x, torch.Tensor) or not x.is_floating_point():
                    got = f"dtype {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
                    raise TypeError(f"{name} must be a floating point tensor, got {got}")
            shapes = f"B (batch, T, dim_z, dim_u) and u (batch, T, dim_u), got B {tuple(B.shape)}, u {tuple(u.shape)}"
            if B.dim() < 3 or u.dim() < 2 or B.size(-1) != u.size(-1):
                raise ValueError(f"B and u must have shapes {shapes}")
            try:
                torch.broadcast_shapes(B.shape[:-2], u.shape[:-1])
            except RuntimeError:
                raise ValueError(f"B and u must have shapes whose batch and time dims broadcast, {shapes}") from None
            b = (B @ u.unsqueeze(-1).to(B.dtype)).squeeze(-1)
        shape = check_lgssm_shapes(A, C, Q, R, mu0, Sigma0, b=b, mask=mask, duration=duration)
        self.mu0, self.Sigma0, self.A, self.Q, self.C, self.R = mu0, Sigma0, A, Q, C, R
        self.b, self.mask = b, mask
        self.duration = shape.T
        self.compute_dtype = compute_dtype
        self.dim_z, self.dim_a = shape.dim_z, shape.dim_a
        super().__init__(shape.batch_shape, torch.Size((shape.T, shape.dim_a)), validate_args=validate_args)

    def _params(self):
        return dict(A=self.A, C=self.C, Q=self.Q, R=self.R, mu0=self.mu0, Sigma0=self.Sigma0, b=self.b, mask=self.mask)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(LinearGaussianSSM, _instance)
        batch_shape = torch.Size(batch_shape)
        for name, value in self._params().items():
            if value is not None:
                k = {"A": 3, "C": 3, "Q": 2, "R": 2, "mu0": 1, "Sigma0": 2, "b": 2, "mask": 1}[name]
                value = value.expand(batch_shape + value.shape[value.dim() - k :])
            setattr(new, name, value)
        new.duration, new.compute_dtype = self.duration, self.compute_dtype
        new.dim_z, new.dim_a = self.dim_z, self.dim_a
        super(LinearGaussianSSM, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _check_value(self, value):
        """The value as a floating point tensor (integer values are cast to the parameters' dtype), its
        shape checked. Its values and the parameters' are checked once on every path under Pyro's
        validation: by :meth:`_filter64`, else by the ops it calls (``broadcast_lgssm``)."""
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"value must be a torch.Tensor, got {type(value).__name__}")
        if value.shape[-2:] != self.event_shape:
            raise ValueError(f"value must have shape (..., {self.duration}, {self.dim_a}), got {tuple(value.shape)}")
        if not value.is_floating_point():
            if value.is_complex():
                raise TypeError(f"value must be a real tensor, got dtype {value.dtype}")
            value = value.to(self.A.dtype)
        try:
            torch.broadcast_shapes(value.shape[:-2], self.batch_shape)
        except RuntimeError:
            raise ValueError(
                f"value must have shape (..., *batch_shape, {self.duration}, {self.dim_a}) with batch dims that "
                f"broadcast with the distribution's batch_shape {tuple(self.batch_shape)} (set by the parameters "
                f"and the mask), got {tuple(value.shape)}"
            ) from None
        return value

    def _dtype(self):
        """The dtype inference runs in: ``compute_dtype``, else the parameters' (half precision computes
        in float32, which has the Cholesky factorisations that float16 and bfloat16 lack)."""
        if self.compute_dtype is not None:
            return self.compute_dtype
        return torch.float32 if self.A.dtype in (torch.float16, torch.bfloat16) else self.A.dtype

    def _params_in(self, dtype):
        """:meth:`_params` cast to ``dtype`` (the mask stays bool)."""
        return {k: v if v is None or k == "mask" else v.to(dtype) for k, v in self._params().items()}

    def _sqrt_filter(self, value):
        """Square-root filter in the compute dtype: ``(SqrtFilterResult, A, Q)`` in that dtype."""
        p = self._params_in(self._dtype())
        return sqrt_kalman_filter(value.to(p["A"].dtype), **p), p["A"], p["Q"]

    def _filter64(self, value):
        """Covariance-form filter in float64 at the arguments' own batch shapes (covariances
        batched over the parameters and the mask only): ``(KalmanFilterResult, A)``."""
        # filter_steps checks shapes only; the values are checked here (the other paths' ops check their own)
        check_lgssm_values(self.Q, self.R, self.Sigma0, a=value, mask=self.mask, A=self.A, C=self.C, mu0=self.mu0,
                           b=self.b)  # fmt: skip
        p = self._params_in(torch.float64)
        return filter_steps(value.to(torch.float64), **p), p["A"]

    def _shared_parameters(self, value):
        """True when the data has more sequences than the parameters and the mask (the
        sequential filter then computes every covariance once for many sequences)."""
        params = [v.shape[: v.dim() - k] for v, k in ((self.A, 3), (self.C, 3), (self.Q, 2), (self.R, 2),
                                                      (self.Sigma0, 2), (self.mask, 1)) if v is not None]  # fmt: skip
        return torch.Size(torch.broadcast_shapes(*params)).numel() < value.shape[:-2].numel()

    def log_prob(self, value):
        """
        :param torch.Tensor value: ``sample_shape + (batch, T, dim_a)``.
        :returns: ``log p(value_obs)``, shape ``sample_shape + batch_shape``.
        """
        value = self._check_value(value)
        if self._dtype() != torch.float64:
            return self._sqrt_filter(value)[0].log_prob.to(value.dtype)
        if self._shared_parameters(value) or value.device.type == "cpu" or value.size(-2) <= SEQUENTIAL_MAX_T:
            # the sequential filter (see the class docstring); on a GPU the parallel scan's
            # O(log T) depth needs fewer launches on long sequences
            lp = self._filter64(value)[0].log_prob
            return lp.expand(value.shape[:-2]).to(value.dtype)
        return lgssm_log_prob(value, compute_dtype=self._dtype(), **self._params())

    def rsample(self, sample_shape=torch.Size()):
        """Ancestral sample of ``a``, shape ``sample_shape + batch_shape + (T, dim_a)``."""
        shape = torch.Size(sample_shape) + self.batch_shape + self.event_shape
        if shape.numel() == 0:  # no sequences (or no samples): an empty sample
            return self.A.new_zeros(shape)
        p = self._params()
        p.pop("mask")
        _, a = lgssm_prior_rsample(sample_shape=sample_shape, duration=self.duration, compute_dtype=self._dtype(), **p)
        return a.to(self.A.dtype).expand(shape)

    def _marginals(self, value, smooth):
        value = self._check_value(value)
        scale_tril = None
        if self._dtype() == torch.float64:  # covariance form: about 2x faster than the square-root one
            filtered, A = self._filter64(value)
            if smooth:
                mean, cov = rts_smoother(filtered, A)
            else:
                mean, cov = filtered.filt_mean, filtered.filt_cov
            L, info = torch.linalg.cholesky_ex(cov)  # at the parameters' batch shape
            if not (info != 0).any():
                shape = value.shape[:-2] + mean.shape[-2:]
                # cast, then expand: casting an expanded view would copy it at the full batch shape
                mean, L = mean.to(value.dtype).expand(shape), L.to(value.dtype).expand(shape + mean.shape[-1:])
                # a Cholesky factor that succeeded: no need to validate it again, at the full batch shape
                return MultivariateNormal(mean, scale_tril=L, validate_args=False)
        if scale_tril is None:
            filtered, A, Q = self._sqrt_filter(value)
            if smooth:
                smoothed = sqrt_rts_smoother(filtered, A, Q)
                mean, scale_tril = smoothed.mean, smoothed.scale_tril
            else:
                mean, scale_tril = filtered.filt_mean, filtered.filt_scale_tril
        # a Cholesky factor stays a valid scale_tril when cast to float32, where a covariance
        # with eigenvalues 1e-8 and 1e6 would not pass as positive definite
        return MultivariateNormal(mean.to(value.dtype), scale_tril=scale_tril.to(value.dtype))

    def filter(self, value):
        """
        Filtered marginals ``p(z_t | a_{<=t, obs})`` for every step.

        :param torch.Tensor value: ``(batch, T, dim_a)``.
        :returns: :class:`~pyro.distributions.MultivariateNormal` with batch
            shape ``(batch, T)`` and event shape ``(dim_z,)``.
        """
        return self._marginals(value, smooth=False)

    def smooth(self, value):
        """
        RTS-smoothed marginals ``p(z_t | a_obs)``; shapes as :meth:`filter`.
        """
        return self._marginals(value, smooth=True)

    def to_gaussian_hmm(self) -> GaussianHMM:
        """
        The same distribution as a :class:`pyro.distributions.GaussianHMM` (no mask).

        ``GaussianHMM`` starts from a state ``z_0`` before its first transition and
        uses row-vector matrices; the exact mapping makes transition 0 ignore
        ``z_0`` (matrix 0, noise ``N(mu0, Sigma0)``), so that it produces ``z_1``,
        and passes ``A^T``, ``C^T``.
        """
        if self.mask is not None:
            raise ValueError("GaussianHMM cannot skip single time steps: to_gaussian_hmm() needs mask=None")
        batch, T, dz, da = self.batch_shape, self.duration, self.dim_z, self.dim_a
        M = self.A.expand(batch + (T, dz, dz)).mT.clone()
        M[..., 0, :, :] = 0
        loc = self.A.new_zeros(batch + (T, dz)) if self.b is None else self.b.expand(batch + (T, dz)).clone()
        loc[..., 0, :] = self.mu0
        cov = self.Q.unsqueeze(-3).expand(batch + (T, dz, dz)).clone()
        cov[..., 0, :, :] = self.Sigma0
        eye = torch.eye(dz, dtype=self.A.dtype, device=self.A.device)
        return GaussianHMM(
            MultivariateNormal(torch.zeros_like(eye[0]), eye),
            M,
            MultivariateNormal(loc, cov),
            self.C.expand(batch + (T, da, dz)).mT,
            MultivariateNormal(self.A.new_zeros(batch + (T, da)), self.R.unsqueeze(-3)),
            duration=T,
        )

    def rsample_posterior(self, value, sample_shape=torch.Size(), noise=None):
        """
        Joint reparameterised sample ``z_{1:T} ~ p(z | a_obs)``: parallel-scan FFBS in
        float64, sequential square-root FFBS in other dtypes.

        :param torch.Tensor value: ``(batch, T, dim_a)``.
        :param torch.Tensor noise: optional standard normal ``sample_shape + (batch, T, dim_z)``;
            zeros give the smoothed mean.
        :returns: ``sample_shape + (batch, T, dim_z)``.
        """
        value = self._check_value(value)
        if torch.Size(sample_shape).numel() * value.shape[:-2].numel() == 0:  # no sequences: an empty sample
            return value.new_zeros(torch.Size(sample_shape) + torch.broadcast_shapes(value.shape[:-2], self.batch_shape)
                                   + (self.duration, self.dim_z))  # fmt: skip
        if self._dtype() == torch.float64 and self._shared_parameters(value):
            filtered, A = self._filter64(value)
            shape = torch.Size(sample_shape) + value.shape[:-2] + filtered.filt_mean.shape[-2:]
            if noise is None:
                noise = torch.randn(shape, dtype=torch.float64, device=value.device)
            elif noise.shape != shape:
                raise ValueError(f"noise must have shape {tuple(shape)}, got {tuple(noise.shape)}")
            return backward_sample(filtered, A, noise.to(torch.float64)).to(value.dtype)
        if self._dtype() == torch.float64:
            return lgssm_posterior_rsample(
                value, sample_shape=sample_shape, noise=noise, compute_dtype=self._dtype(), **self._params()
            )
        filtered, A, Q = self._sqrt_filter(value)
        shape = torch.Size(sample_shape) + filtered.filt_mean.shape
        if noise is None:
            noise = torch.randn(shape, dtype=filtered.filt_mean.dtype, device=filtered.filt_mean.device)
        elif noise.shape != shape:
            raise ValueError(f"noise must have shape {tuple(shape)}, got {tuple(noise.shape)}")
        z = sqrt_posterior_rsample(filtered, sqrt_rts_smoother(filtered, A, Q), noise.to(filtered.filt_mean.dtype))
        return z.to(value.dtype)
