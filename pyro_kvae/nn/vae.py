# SPDX-License-Identifier: Apache-2.0
"""
Frame encoders ``q(a_t | x_t)`` and decoders ``p(x_t | a_t)``.

Every network maps over arbitrary leading dims: an encoder takes frames
``x (..., H, W)`` and returns the ``loc`` and ``scale`` of a diagonal Normal
over ``a_t``, each ``(..., dim_a)``; a decoder takes ``a (..., dim_a)`` and
returns per-pixel ``(..., H, W)`` Bernoulli logits or Gaussian means.
"""

import math
from typing import Sequence, Tuple

import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

WEIGHT_INITS = ("he", "glorot")


def init_weights(module: nn.Module, scheme: str = "he") -> nn.Module:
    """
    Initialises every conv and linear layer of ``module``, zero biases: ``"he"`` (Kaiming
    normal, for ReLU) or ``"glorot"`` (Glorot uniform, TensorFlow's default for its layers).

    With PyTorch's default initialisation the encoder's output varies ~0.004
    across frames of sparse binary images, far below the encoder noise (std up
    to 0.17), and the VAE collapses to the mean frame; He initialisation keeps
    the ReLU signal's scale (~0.1 at the output) and training takes off.
    """
    if scheme not in WEIGHT_INITS:
        raise ValueError(f"weight_init must be one of {WEIGHT_INITS}, got {scheme!r}")
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if scheme == "he":
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            else:
                nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return module


def frame_shape(size) -> Tuple[int, ...]:
    """
    The shape of one frame: ``(H, W)`` for single-channel frames or ``(C, H, W)``.
    ``size`` is an int (square single-channel frames, ``(size, size)``) or such a tuple.
    """
    shape = (size, size) if isinstance(size, int) else tuple(int(n) for n in size)
    if len(shape) == 3 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise ValueError(f"a frame shape must be (H, W) or (C, H, W) of positive ints, got {size!r}")
    return shape


def frame_mask(mask: torch.Tensor, shape) -> torch.Tensor:
    """``mask (batch, T)`` with singleton dims for frames of ``shape``: ``(batch, T, 1, 1[, 1])``."""
    return mask.reshape(mask.shape + (1,) * len(shape))


def _channels(shape) -> int:
    return shape[0] if len(shape) == 3 else 1


def _shape_text(shape) -> str:
    return ", ".join(str(n) for n in shape)


def _check_frames(x: torch.Tensor, shape) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating point tensor of frames (..., {_shape_text(shape)})")
    if x.dim() < len(shape) or x.shape[x.dim() - len(shape) :] != shape:
        raise ValueError(f"x must have shape (..., {_shape_text(shape)}), got {tuple(x.shape)}")


class _EncoderHead(PyroModule):
    """``loc = Linear(h)``, ``scale = sqrt(max_var * sigmoid(Linear(h)))`` (the reference's
    bounded variance: at most ``max_var``, the emission noise)."""

    def __init__(self, features: int, dim_a: int, max_var: float):
        super().__init__()
        self.loc = nn.Linear(features, dim_a)
        self.var = nn.Linear(features, dim_a)
        self.max_var = max_var

    def forward(self, h):
        var = self.max_var * torch.sigmoid(self.var(h))
        return self.loc(h), var.clamp(min=1e-8).sqrt()


class ConvEncoder(PyroModule):
    """
    Convolutional encoder (reference: ``len(filters)`` conv layers, kernel 3,
    stride 2, ReLU, 'same' padding), then linear heads for ``loc`` and ``scale``.

    :param frame_size: the frame shape: ``H == W`` as an int, or ``(H, W)``, or ``(C, H, W)``.
    """

    def __init__(self, frame_size=32, dim_a=2, filters: Sequence[int] = (32, 32, 32), max_var=0.03,
                 weight_init: str = "he"):  # fmt: skip
        super().__init__()
        self.frame_shape = shape = frame_shape(frame_size)
        layers, c = [], _channels(shape)
        for f in filters:
            layers += [nn.Conv2d(c, f, 3, stride=2, padding=1), nn.ReLU(inplace=True)]
            c = f
        self.conv = init_weights(nn.Sequential(*layers), weight_init)
        scale = 2 ** len(filters)  # each stride-2 layer maps n pixels to ceil(n / 2)
        h, w = -(-shape[-2] // scale), -(-shape[-1] // scale)
        self.head = _EncoderHead(c * h * w, dim_a, max_var)
        if weight_init == "glorot":  # "he" leaves the heads at torch's default
            init_weights(self.head, weight_init)

    def forward(self, x):
        """``x (..., *frame_shape)`` -> ``loc, scale (..., dim_a)``."""
        _check_frames(x, self.frame_shape)
        batch = x.shape[: x.dim() - len(self.frame_shape)]
        h = self.conv(x.reshape((-1, _channels(self.frame_shape)) + self.frame_shape[-2:])).flatten(1)
        loc, scale = self.head(h)
        return loc.reshape(batch + (-1,)), scale.reshape(batch + (-1,))


class ConvDecoder(PyroModule):
    """
    Convolutional decoder (reference): a linear layer to the encoder's feature
    shape, then per layer a 3x3 conv to ``4 * filters`` channels and a pixel
    shuffle (x2 upsampling) with ReLU, then a 1x1 conv to the frame's channels,
    cropped to ``(H, W)`` when they are not multiples of ``2 ** len(filters)``.

    :param float bias_std: std of the normal initial bias of the linear layer (default 0: zero,
        which makes the initial decoder positively homogeneous in ``a``).
    :param str weight_init: ``"he"`` or ``"glorot"`` (:func:`init_weights`).
    """

    def __init__(self, frame_size=32, dim_a=2, filters: Sequence[int] = (32, 32, 32), bias_std: float = 0.0,
                 weight_init: str = "he"):  # fmt: skip
        super().__init__()
        self.frame_shape = shape = frame_shape(frame_size)
        scale = 2 ** len(filters)
        self.side = (-(-shape[-2] // scale), -(-shape[-1] // scale))
        self.channels = filters[-1]
        self.linear = nn.Linear(dim_a, self.channels * self.side[0] * self.side[1])
        layers, c = [], self.channels
        for f in reversed(filters):
            layers += [nn.Conv2d(c, 4 * f, 3, padding=1), nn.PixelShuffle(2), nn.ReLU(inplace=True)]
            c = f
        layers.append(nn.Conv2d(c, _channels(shape), 1))
        self.deconv = init_weights(nn.Sequential(*layers), weight_init)
        init_weights(self.linear, weight_init)
        if bias_std > 0:  # else zero, and no draw from the global generator
            nn.init.normal_(self.linear.bias, std=bias_std)

    def forward(self, a):
        """``a (..., dim_a)`` -> logits or means ``(..., *frame_shape)``."""
        batch = a.shape[:-1]
        h = torch.relu(self.linear(a.reshape(-1, a.size(-1))))
        # channels-last convolutions are ~1.4x faster on CPU (oneDNN) for this decoder
        h = h.reshape((-1, self.channels) + self.side).contiguous(memory_format=torch.channels_last)
        H, W = self.frame_shape[-2:]
        h = self.deconv(h)[..., :H, :W]
        return h.reshape(batch + self.frame_shape)


class MLPEncoder(PyroModule):
    """MLP encoder (reference variant: 2 layers of 25 ReLU units)."""

    def __init__(self, frame_size=32, dim_a=2, hidden: Sequence[int] = (25, 25), max_var=0.03,
                 weight_init: str = "he"):  # fmt: skip
        super().__init__()
        self.frame_shape = frame_shape(frame_size)
        layers, n = [], math.prod(self.frame_shape)
        for h in hidden:
            layers += [nn.Linear(n, h), nn.ReLU()]
            n = h
        self.mlp = init_weights(nn.Sequential(*layers), weight_init)
        self.head = _EncoderHead(n, dim_a, max_var)
        if weight_init == "glorot":  # "he" leaves the heads at torch's default
            init_weights(self.head, weight_init)

    def forward(self, x):
        _check_frames(x, self.frame_shape)
        return self.head(self.mlp(x.flatten(x.dim() - len(self.frame_shape))))


class MLPDecoder(PyroModule):
    """MLP decoder mirroring :class:`MLPEncoder`."""

    def __init__(self, frame_size=32, dim_a=2, hidden: Sequence[int] = (25, 25), bias_std: float = 0.0,
                 weight_init: str = "he"):  # fmt: skip
        super().__init__()
        self.frame_shape = frame_shape(frame_size)
        layers, n = [], dim_a
        for h in hidden:
            layers += [nn.Linear(n, h), nn.ReLU()]
            n = h
        layers.append(nn.Linear(n, math.prod(self.frame_shape)))
        self.mlp = init_weights(nn.Sequential(*layers), weight_init)
        if bias_std > 0:
            nn.init.normal_(self.mlp[0].bias, std=bias_std)

    def forward(self, a):
        return self.mlp(a).unflatten(-1, self.frame_shape)


LIKELIHOODS = ("bernoulli", "continuous_bernoulli", "gaussian", "gaussian_learned")
#: floor of a learned per-pixel variance (a pixel that is always the same would drive it to 0)
PIXEL_VAR_FLOOR = 1e-4


def frame_distribution(out: torch.Tensor, likelihood: str, pixel_var=0.1):
    """
    The per-pixel distribution of ``x_t`` given the decoder output ``out (..., *frame_shape)``:

    * ``"bernoulli"``: binary frames, ``out`` are logits;
    * ``"continuous_bernoulli"``: frames in [0, 1] (grey levels), ``out`` are logits
      (Loaiza-Ganem and Cunningham 2019: a normalised Bernoulli for continuous data);
    * ``"gaussian"``: ``out`` are means, fixed variance ``pixel_var`` as in the reference;
    * ``"gaussian_learned"``: the same with ``pixel_var`` a tensor of per-pixel variances
      broadcastable to ``out`` (see :meth:`pyro_kvae.models.KVAE.pixel_variance`).

    Batch shape ``out.shape``.
    """
    if likelihood == "bernoulli":
        return dist.Bernoulli(logits=out)
    if likelihood == "continuous_bernoulli":
        return dist.ContinuousBernoulli(logits=out)
    if likelihood in ("gaussian", "gaussian_learned"):
        scale = pixel_var.sqrt() if isinstance(pixel_var, torch.Tensor) else math.sqrt(pixel_var)
        return dist.Normal(out, scale)
    raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
