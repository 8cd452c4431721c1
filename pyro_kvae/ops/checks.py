# SPDX-License-Identifier: Apache-2.0
"""
Shape and value checks shared by every LGSSM routine.

Shape checks are cheap and always run. Value checks (positive definite
covariances, NaN in observed encodings) need a device sync, so they run only
while Pyro's validation is on (:func:`pyro.enable_validation`, on by default).
"""

from typing import NamedTuple, Optional

import torch
from pyro.distributions.util import broadcast_shape, is_validation_enabled


class LGSSMShape(NamedTuple):
    """Broadcast sizes of an LGSSM problem."""

    batch_shape: torch.Size
    T: int
    dim_z: int
    dim_a: int


def _shape(x: torch.Tensor) -> str:
    return "(" + ", ".join(str(s) for s in x.shape) + ")"


def _require_tensor(name: str, x) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")


def check_lgssm_shapes(
    A: torch.Tensor,
    C: torch.Tensor,
    Q: torch.Tensor,
    R: torch.Tensor,
    mu0: torch.Tensor,
    Sigma0: torch.Tensor,
    b: Optional[torch.Tensor] = None,
    mask: Optional[torch.Tensor] = None,
    a: Optional[torch.Tensor] = None,
    duration: Optional[int] = None,
) -> LGSSMShape:
    """
    Checks argument shapes and returns the broadcast problem size.

    Time-varying arguments carry a time dimension of size ``T`` or ``1``
    (time-homogeneous): ``A (..., T, dim_z, dim_z)``, ``C (..., T, dim_a, dim_z)``,
    ``b (..., T, dim_z)``, ``mask (..., T)``, ``a (..., T, dim_a)``. The others
    have none: ``Q (..., dim_z, dim_z)``, ``R (..., dim_a, dim_a)``,
    ``mu0 (..., dim_z)``, ``Sigma0 (..., dim_z, dim_z)``. All leading dims
    broadcast together.

    :raises ValueError: naming the argument and the shape it should have.
    """
    for name, x in (("A", A), ("C", C), ("Q", Q), ("R", R), ("mu0", mu0), ("Sigma0", Sigma0)):
        _require_tensor(name, x)
        if not x.is_floating_point():
            raise TypeError(f"{name} must be a floating point tensor, got dtype {x.dtype}")
    if A.dim() < 3 or A.size(-1) != A.size(-2):
        raise ValueError(f"A must have shape (..., T, dim_z, dim_z), got {_shape(A)}")
    dim_z = A.size(-1)
    if C.dim() < 3 or C.size(-1) != dim_z:
        raise ValueError(f"C must have shape (..., T, dim_a, {dim_z}), got {_shape(C)}")
    dim_a = C.size(-2)
    if Q.dim() < 2 or Q.shape[-2:] != (dim_z, dim_z):
        raise ValueError(f"Q must have shape (..., {dim_z}, {dim_z}), got {_shape(Q)}")
    if R.dim() < 2 or R.shape[-2:] != (dim_a, dim_a):
        raise ValueError(f"R must have shape (..., {dim_a}, {dim_a}), got {_shape(R)}")
    if mu0.dim() < 1 or mu0.size(-1) != dim_z:
        raise ValueError(f"mu0 must have shape (..., {dim_z}), got {_shape(mu0)}")
    if Sigma0.dim() < 2 or Sigma0.shape[-2:] != (dim_z, dim_z):
        raise ValueError(f"Sigma0 must have shape (..., {dim_z}, {dim_z}), got {_shape(Sigma0)}")

    # (name, tensor, number of event dims after time, expected event shape text)
    timed = [("A", A, 2, f"{dim_z}, {dim_z}"), ("C", C, 2, f"{dim_a}, {dim_z}")]
    if b is not None:
        _require_tensor("b", b)
        if b.dim() < 2 or b.size(-1) != dim_z:
            raise ValueError(f"b must have shape (..., T, {dim_z}), got {_shape(b)}")
        timed.append(("b", b, 1, f"{dim_z}"))
    if mask is not None:
        _require_tensor("mask", mask)
        if mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool tensor of shape (..., T), got dtype {mask.dtype}")
        if mask.dim() < 1:
            raise ValueError(f"mask must have shape (..., T), got {_shape(mask)}")
        timed.append(("mask", mask, 0, ""))
    if a is not None:
        _require_tensor("a", a)
        if a.dim() < 2 or a.size(-1) != dim_a:
            raise ValueError(f"a must have shape (..., T, {dim_a}), got {_shape(a)}")
        timed.append(("a", a, 1, f"{dim_a}"))

    # Work out T: the value's length wins, then the parameters' non-unit time dims, then the
    # mask's, then duration; an argument that disagrees is named.
    sizes = {name: x.size(-1 - k) for name, x, k, _ in timed}
    steps = {name: size for name, size in sizes.items() if name not in ("a", "mask") and size != 1}
    if a is None and len(set(steps.values())) > 1:
        detail = ", ".join(f"{name} has {size}" for name, size in steps.items())
        raise ValueError(f"the time dims of the LGSSM arguments disagree ({detail} steps): each must be T or 1")
    if a is not None:
        T = sizes["a"]
    else:
        T = max(size for name, size in sizes.items() if name != "mask")
        if T == 1 and "mask" in sizes:
            T = sizes["mask"]
        if T == 1 and duration is not None:
            T = duration
    if duration is not None and T != duration:
        raise ValueError(f"duration={duration} disagrees with the time dimension {T} of the arguments")
    for name, x, k, event in timed:
        if sizes[name] not in (1, T):
            tail = f", {event}" if event else ""
            raise ValueError(f"{name} must have shape (..., {T}{tail}) (or a time dim of 1), got {_shape(x)}")

    shapes = [
        ("A", A.shape[:-3]),
        ("C", C.shape[:-3]),
        ("Q", Q.shape[:-2]),
        ("R", R.shape[:-2]),
        ("mu0", mu0.shape[:-1]),
        ("Sigma0", Sigma0.shape[:-2]),
    ]
    shapes += [(name, x.shape[: x.dim() - 1 - k]) for name, x, k, _ in timed if name in ("b", "mask", "a")]
    try:
        batch_shape = broadcast_shape(*(s for _, s in shapes))
    except ValueError:
        detail = ", ".join(f"{name}: {tuple(s)}" for name, s in shapes)
        raise ValueError(f"batch dims of the LGSSM arguments do not broadcast ({detail})") from None
    return LGSSMShape(torch.Size(batch_shape), T, dim_z, dim_a)


def check_spd(name: str, x: torch.Tensor) -> None:
    """Raises ``ValueError`` unless every matrix in ``x (..., n, n)`` is symmetric positive definite."""
    if not is_validation_enabled():
        return
    n = x.size(-1)
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} must be a finite symmetric positive definite ({n}, {n}) matrix")
    tol = 1e-5 if x.dtype in (torch.float16, torch.bfloat16, torch.float32) else 1e-10
    scale = x.detach().abs().amax(dim=(-2, -1), keepdim=True).clamp(min=1.0)
    if ((x - x.mT).abs() > tol * scale).any():
        raise ValueError(f"{name} must be symmetric, with shape (..., {n}, {n})")
    low = x.dtype in (torch.float16, torch.bfloat16)  # no Cholesky in half precision: check in float32
    if (torch.linalg.cholesky_ex(x.detach().float() if low else x.detach()).info != 0).any():
        raise ValueError(f"{name} must be positive definite, with shape (..., {n}, {n})")


def cholesky(x: torch.Tensor, name: str) -> torch.Tensor:
    """The lower Cholesky factor of ``x (..., n, n)`` without a host synchronisation
    (``torch.linalg.cholesky`` checks its result on the host); under Pyro's validation a matrix
    that is not positive definite raises ``ValueError`` naming ``name``."""
    L, info = torch.linalg.cholesky_ex(x)
    if is_validation_enabled() and (info != 0).any():
        raise ValueError(f"{name} must be positive definite, with shape (..., {x.size(-1)}, {x.size(-1)})")
    return L


def check_observed_finite(a: torch.Tensor, mask: Optional[torch.Tensor]) -> None:
    """Raises ``ValueError`` if an observed encoding ``a (..., T, dim_a)`` is not finite."""
    if not is_validation_enabled():
        return
    bad = ~torch.isfinite(a).all(-1)
    if mask is not None:
        bad = bad & mask
    if bad.any():
        raise ValueError(
            "a must be finite wherever mask is True (missing a_t may hold anything); "
            f"found {int(bad.sum())} non-finite observed steps in a of shape {_shape(a)}"
        )


def check_finite(name: str, x: Optional[torch.Tensor], shape: str) -> None:
    """Raises ``ValueError`` if ``x`` (when given) holds NaN or inf; only under Pyro validation."""
    if x is None or not is_validation_enabled():
        return
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} must be finite, with shape {shape}; found NaN or inf in {name} of shape {_shape(x)}")


def check_lgssm_values(Q, R, Sigma0, a=None, mask=None, A=None, C=None, mu0=None, b=None) -> None:
    """Value checks for an LGSSM problem, run only under Pyro validation."""
    check_spd("Q", Q)
    check_spd("R", R)
    check_spd("Sigma0", Sigma0)
    for name, x, shape in (("A", A, "(..., T, dim_z, dim_z)"), ("C", C, "(..., T, dim_a, dim_z)"),
                           ("mu0", mu0, "(..., dim_z)"), ("b", b, "(..., T, dim_z)")):  # fmt: skip
        check_finite(name, x, shape)
    if a is not None:
        check_observed_finite(a, mask)


class LGSSMArgs(NamedTuple):
    """LGSSM arguments broadcast to a common ``batch_shape`` and duration ``T``.

    ``A (batch, T, dim_z, dim_z)``, ``C (batch, T, dim_a, dim_z)``, ``Q (batch, dim_z, dim_z)``,
    ``R (batch, dim_a, dim_a)``, ``mu0 (batch, dim_z)``, ``Sigma0 (batch, dim_z, dim_z)``,
    ``b (batch, T, dim_z)``, ``mask (batch, T)`` (``None`` means all observed) and
    ``a (batch, T, dim_a)`` with missing steps replaced by zeros (``None`` if not given).
    """

    A: torch.Tensor
    C: torch.Tensor
    Q: torch.Tensor
    R: torch.Tensor
    mu0: torch.Tensor
    Sigma0: torch.Tensor
    b: torch.Tensor
    mask: Optional[torch.Tensor]
    a: Optional[torch.Tensor]
    shape: LGSSMShape


def broadcast_lgssm(A, C, Q, R, mu0, Sigma0, b=None, mask=None, a=None, duration=None, dtype=None) -> LGSSMArgs:
    """
    Checks the arguments (see :func:`check_lgssm_shapes`, :func:`check_lgssm_values`),
    broadcasts them to one batch shape and duration, and casts them to ``dtype``
    (default: the dtype of ``A``). Missing steps of ``a`` (``mask`` False) are
    replaced by zeros so that NaN placeholders never reach arithmetic or gradients.
    """
    shape = check_lgssm_shapes(A, C, Q, R, mu0, Sigma0, b=b, mask=mask, a=a, duration=duration)
    check_lgssm_values(Q, R, Sigma0, a=a, mask=mask, A=A, C=C, mu0=mu0, b=b)
    batch, T, dz, da = shape
    dtype = A.dtype if dtype is None else dtype
    A = A.to(dtype).expand(batch + (T, dz, dz))
    C = C.to(dtype).expand(batch + (T, da, dz))
    Q = Q.to(dtype).expand(batch + (dz, dz))
    R = R.to(dtype).expand(batch + (da, da))
    mu0 = mu0.to(dtype).expand(batch + (dz,))
    Sigma0 = Sigma0.to(dtype).expand(batch + (dz, dz))
    b = A.new_zeros(()).expand(batch + (T, dz)) if b is None else b.to(dtype).expand(batch + (T, dz))
    if mask is not None:
        mask = mask.expand(batch + (T,))
    if a is not None:
        a = a.to(dtype).expand(batch + (T, da))
        if mask is not None:
            a = torch.where(mask.unsqueeze(-1), a, a.new_zeros(()))
    return LGSSMArgs(A, C, Q, R, mu0, Sigma0, b, mask, a, shape)
