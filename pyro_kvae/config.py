# SPDX-License-Identifier: Apache-2.0
"""
:class:`KVAEConfig`: every setting of a KVAE run, with defaults that reproduce
the paper's bouncing-ball experiment (values from the authors' reference code),
and :func:`build_kvae`, which assembles the model from it.
"""

import dataclasses
from dataclasses import dataclass
from typing import Tuple

from .models import KVAE, KalmanPrior
from .nn import ConvDecoder, ConvEncoder, FixedDynamics, LSTMDynamics, MLPDecoder, MLPDynamics, MLPEncoder


@dataclass
class KVAEConfig:
    # data
    frame_size: int = 32
    # model (paper section 5.1)
    dim_a: int = 2
    dim_z: int = 4
    dim_u: int = 0
    K: int = 3
    likelihood: str = "bernoulli"  # or "gaussian"
    pixel_var: float = 0.1  # gaussian likelihood only
    vae: str = "conv"  # or "mlp"
    conv_filters: Tuple[int, ...] = (32, 32, 32)
    mlp_hidden: Tuple[int, ...] = (25, 25)
    dynamics: str = "lstm"  # "lstm", "mlp" (on a_{t-1}) or "fixed" (plain LGSSM)
    dynamics_hidden: int = 50
    Q: float = 0.08  # transition noise variance
    R: float = 0.03  # emission noise variance; also caps the encoder variance
    Sigma0: float = 20.0  # variance of z_1
    init_std: float = 0.05  # std of the initial B^k, C^k
    learn_noise: bool = False
    # training
    epochs: int = 80
    batch_size: int = 32
    lr: float = 0.007
    lr_decay: float = 0.85
    lr_decay_every: int = 20  # epochs
    clip_norm: float = 150.0
    kf_update_epochs: int = 10  # first epochs train the VAE and LGSSM modes, not the alpha network
    scale_reconstruction: float = 0.3  # weight of log p(x|a) in training (1.0 when reporting)
    train_miss_prob: float = 0.0  # fraction of frames dropped in training
    t_init_train_miss: int = 3  # first frames always observed when dropping
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self):
        choices = {
            "likelihood": ("bernoulli", "gaussian"),
            "vae": ("conv", "mlp"),
            "dynamics": ("lstm", "mlp", "fixed"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("frame_size", "dim_a", "dim_z", "K", "epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}")
        if not 0.0 <= self.train_miss_prob < 1.0:
            raise ValueError(f"train_miss_prob must be in [0, 1), got {self.train_miss_prob}")
        self.conv_filters, self.mlp_hidden = tuple(self.conv_filters), tuple(self.mlp_hidden)

    def to_dict(self) -> dict:
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
        encoder = ConvEncoder(c.frame_size, c.dim_a, c.conv_filters, max_var=c.R)
        decoder = ConvDecoder(c.frame_size, c.dim_a, c.conv_filters)
    else:
        encoder = MLPEncoder(c.frame_size, c.dim_a, c.mlp_hidden, max_var=c.R)
        decoder = MLPDecoder(c.frame_size, c.dim_a, c.mlp_hidden)
    if c.dynamics == "lstm" and c.K > 1:
        dynamics = LSTMDynamics(c.dim_a, c.K, c.dynamics_hidden)
    elif c.dynamics == "mlp" and c.K > 1:
        dynamics = MLPDynamics(c.dim_a, c.K, (c.dynamics_hidden, c.dynamics_hidden))
    else:
        dynamics = FixedDynamics(c.dim_a, c.K)
    prior = KalmanPrior(dynamics, c.dim_z, c.dim_u, c.Q, c.R, c.Sigma0, c.init_std, c.learn_noise)
    return KVAE(encoder, decoder, prior, c.likelihood, c.pixel_var, c.frame_size)
