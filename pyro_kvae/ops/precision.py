# SPDX-License-Identifier: Apache-2.0
"""
Keeping the Kalman part out of mixed precision.

With ``precision="bf16-mixed"`` Lightning runs the training step under
:func:`torch.autocast`, which would compute the LGSSM's matrix products in
bfloat16 (8 bits of mantissa): covariances lose definiteness and the recursive
filter drifts. :func:`full_precision` switches autocast off inside a function,
so the networks run in bfloat16 while the Kalman part keeps its own dtype
(float32 parameters, float64 inference by default).
"""

import contextlib
import functools

import torch

_DEVICE_TYPES = ("cpu", "cuda")


def full_precision(fn):
    """Decorator: run ``fn`` with every active :func:`torch.autocast` region switched off."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with contextlib.ExitStack() as stack:
            for device_type in _DEVICE_TYPES:
                if torch.is_autocast_enabled(device_type):
                    stack.enter_context(torch.autocast(device_type, enabled=False))
            return fn(*args, **kwargs)

    return wrapper
