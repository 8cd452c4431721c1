# SPDX-License-Identifier: Apache-2.0
"""
:class:`KVAEConfig`: every setting of a KVAE run, with defaults that reproduce
the paper's bouncing-ball experiment (values from the authors' reference code),
and :func:`build_kvae`, which assembles the model from it.
"""

import dataclasses
import math
from dataclasses import dataclass
from typing import Tuple

import torch

from .models import KVAE, KalmanPrior
from .nn import ConvDecoder, ConvEncoder, FixedDynamics, GRUDynamics, LSTMDynamics, MLPDecoder, MLPDynamics, MLPEncoder
from .nn.vae import LIKELIHOODS, PIXEL_VAR_FLOOR, WEIGHT_INITS

PRECISIONS = ("32", "64", "bf16-mixed", "16-mixed")


class ConfigError(ValueError):
    """A bad :class:`KVAEConfig` value; ``field`` names the setting (its flag is ``--field-name``)."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field} {message}")


def check_device(device) -> torch.device:
    """``torch.device(device)``, refusing a CUDA device on a machine without one."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError("device", f"must be a torch device such as 'cpu' or 'cuda', got {device!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "device", f"is {str(device)!r} but torch.cuda.is_available() is False on this machine; use 'cpu'"
        )
    return device


@dataclass
class KVAEConfig:
    # data: frames (H, W) = (frame_size, frame_width or frame_size), with channels > 1 (C, H, W)
    frame_size: int = 32
    frame_width: int = 0  # 0: square frames
    channels: int = 1
    # model (paper section 5.1)
    dim_a: int = 2
    dim_z: int = 4
    dim_u: int = 0
    K: int = 3
    likelihood: str = "bernoulli"  # "continuous_bernoulli", "gaussian" or "gaussian_learned"
    pixel_var: float = 0.1  # gaussian likelihood only
    vae: str = "conv"  # or "mlp"
    conv_filters: Tuple[int, ...] = (32, 32, 32)
    mlp_hidden: Tuple[int, ...] = (25, 25)
    dynamics: str = "lstm"  # "lstm", "gru", "mlp" (on a_{t-1}) or "fixed" (plain LGSSM)
    dynamics_hidden: int = 50
    Q: float = 0.08  # transition noise variance
    R: float = 0.03  # emission noise variance; also caps the encoder variance
    Sigma0: float = 20.0  # variance of z_1
    init_std: float = 0.05  # std of the initial B^k, C^k
    decoder_bias_std: float = 0.0  # std of the initial bias of the decoder's first layer (0: zero, as He init)
    weight_init: str = "he"  # the encoder's and decoder's layers: "he" (Kaiming normal) or "glorot" (TensorFlow's)
    learn_noise: bool = False
    full_noise: bool = False  # learned noise as full covariance matrices (with learn_noise)
    # training
    epochs: int = 80
    batch_size: int = 32
    lr: float = 0.007
    lr_decay: float = 0.85
    lr_decay_every: int = 20  # epochs
    clip_norm: float = 150.0
    kf_update_epochs: int = 10  # first epochs train the VAE and LGSSM modes, not the alpha network
    transition_frozen_epochs: int = 0  # first epochs keep the transition modes A^k at their initial identity
    scale_reconstruction: float = 0.3  # weight of log p(x|a) in training (1.0 when reporting)
    loss_per_frame: bool = False  # the training loss per frame (the reference's), not per sequence
    shuffle: bool = True  # reshuffle the training sequences every epoch (the reference never does)
    train_miss_prob: float = 0.0  # fraction of frames dropped in training
    t_init_train_miss: int = 3  # first frames always observed when dropping
    seed: int = 0
    # model selection among seeds (pyro_kvae.train.fit_selecting_seed): train seeds seed .. seed +
    # select_seeds - 1 for select_epochs each and continue the one with the lowest validation
    # imputation error; 1: a single run
    select_seeds: int = 1
    select_epochs: int = 3
    # hardware (Lightning): may change when a run is resumed
    device: str = "cpu"  # "cpu", "cuda" or "cuda:N"
    devices: int = 1  # devices per node (DDP processes)
    num_nodes: int = 1
    strategy: str = "auto"  # Lightning strategy, e.g. "ddp"
    precision: str = "32"  # or "bf16-mixed": the networks in bfloat16, the Kalman part in its own dtype

    def __post_init__(self):
        self.conv_filters, self.mlp_hidden = tuple(self.conv_filters), tuple(self.mlp_hidden)
        choices = {
            "likelihood": LIKELIHOODS,
            "vae": ("conv", "mlp"),
            "dynamics": ("lstm", "gru", "mlp", "fixed"),
            "weight_init": WEIGHT_INITS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(name, f"must be one of {allowed}, got {getattr(self, name)!r}")
        for f in dataclasses.fields(self):
            value, kind = getattr(self, f.name), type(getattr(KVAEConfig, f.name, None))
            if kind is bool and not isinstance(value, bool):
                raise ConfigError(f.name, f"must be true or false, got {value!r}")
            if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
                raise ConfigError(f.name, f"must be an int, got {value!r}")
            if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise ConfigError(f.name, f"must be a number, got {value!r}")
            if kind is float and not math.isfinite(value):
                raise ConfigError(f.name, f"must be finite, got {value!r}")
        at_least = dict(frame_size=1, frame_width=0, channels=1, dim_a=1, dim_z=1, dim_u=0, K=1, dynamics_hidden=1,
                        epochs=1, batch_size=1, lr_decay_every=1, kf_update_epochs=0, transition_frozen_epochs=0,
                        t_init_train_miss=0, seed=0, select_seeds=1, select_epochs=1, devices=1,
                        num_nodes=1)  # fmt: skip
        for name, low in at_least.items():
            if getattr(self, name) < low:
                raise ConfigError(name, f"must be at least {low}, got {getattr(self, name)!r}")
        for name in ("pixel_var", "Q", "R", "Sigma0", "lr", "clip_norm", "scale_reconstruction"):
            if getattr(self, name) <= 0:
                raise ConfigError(name, f"must be positive, got {getattr(self, name)!r}")
        for name in ("init_std", "decoder_bias_std"):
            if getattr(self, name) < 0:
                raise ConfigError(name, f"must be non-negative, got {getattr(self, name)!r}")
        if self.likelihood == "gaussian_learned" and self.pixel_var <= PIXEL_VAR_FLOOR:
            raise ConfigError("pixel_var", f"must exceed the learned variance's floor {PIXEL_VAR_FLOOR}")
        if self.full_noise and not self.learn_noise:
            raise ConfigError("full_noise", "needs learn_noise (fixed noise is isotropic)")
        if self.select_seeds > 1 and self.select_epochs > self.epochs:
            raise ConfigError("select_epochs", f"must be at most epochs ({self.epochs}), got {self.select_epochs!r}")
        if not 0.0 < self.lr_decay <= 1.0:
            raise ConfigError("lr_decay", f"must be in (0, 1], got {self.lr_decay!r}")
        if not 0.0 <= self.train_miss_prob < 1.0:
            raise ConfigError("train_miss_prob", f"must be in [0, 1), got {self.train_miss_prob!r}")
        for name in ("conv_filters", "mlp_hidden"):
            sizes = getattr(self, name)
            if not sizes or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in sizes):
                raise ConfigError(name, f"must be one or more positive ints, got {sizes!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError("precision", f"must be one of {PRECISIONS}, got {self.precision!r}")
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError):
            raise ConfigError(
                "device", f"must be a torch device such as 'cpu' or 'cuda', got {self.device!r}"
            ) from None

    @property
    def frame_shape(self) -> Tuple[int, ...]:
        """``(H, W)``, or ``(C, H, W)`` with several channels."""
        hw = (self.frame_size, self.frame_width or self.frame_size)
        return hw if self.channels == 1 else (self.channels,) + hw

    @staticmethod
    def frame_fields(shape) -> dict:
        """The fields ``frame_size``, ``frame_width``, ``channels`` that give ``frame_shape == shape``."""
        shape = tuple(shape)
        return dict(
            frame_size=shape[-2],
            frame_width=0 if shape[-1] == shape[-2] else shape[-1],
            channels=shape[0] if len(shape) == 3 else 1,
        )

    def to_dict(self) -> dict:
        """The fields as a plain dict (JSON values), as ``config.json`` stores them."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "KVAEConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown KVAEConfig fields: {sorted(unknown)}")
        return cls(**d)


def build_kvae(config: KVAEConfig) -> KVAE:
    """The :class:`~pyro_kvae.models.KVAE` described by ``config`` (on the CPU; move it with ``.to``)."""
    c = config
    if c.vae == "conv":
        encoder = ConvEncoder(c.frame_shape, c.dim_a, c.conv_filters, max_var=c.R, weight_init=c.weight_init)
        decoder = ConvDecoder(c.frame_shape, c.dim_a, c.conv_filters, c.decoder_bias_std, c.weight_init)
    else:
        encoder = MLPEncoder(c.frame_shape, c.dim_a, c.mlp_hidden, max_var=c.R, weight_init=c.weight_init)
        decoder = MLPDecoder(c.frame_shape, c.dim_a, c.mlp_hidden, c.decoder_bias_std, c.weight_init)
    if c.dynamics == "lstm" and c.K > 1:
        dynamics = LSTMDynamics(c.dim_a, c.K, c.dynamics_hidden)
    elif c.dynamics == "gru" and c.K > 1:
        dynamics = GRUDynamics(c.dim_a, c.K, c.dynamics_hidden)
    elif c.dynamics == "mlp" and c.K > 1:
        dynamics = MLPDynamics(c.dim_a, c.K, (c.dynamics_hidden, c.dynamics_hidden))
    else:
        dynamics = FixedDynamics(c.dim_a, c.K)
    prior = KalmanPrior(dynamics, c.dim_z, c.dim_u, c.Q, c.R, c.Sigma0, c.init_std, c.learn_noise, c.full_noise)
    return KVAE(encoder, decoder, prior, c.likelihood, c.pixel_var, c.frame_shape)
