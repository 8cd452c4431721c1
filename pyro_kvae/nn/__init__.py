# SPDX-License-Identifier: Apache-2.0
from .dynamics import DynamicsNetwork, FixedDynamics, LSTMDynamics, MLPDynamics
from .vae import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder, frame_distribution

__all__ = [
    "ConvDecoder",
    "ConvEncoder",
    "DynamicsNetwork",
    "FixedDynamics",
    "LSTMDynamics",
    "MLPDecoder",
    "MLPDynamics",
    "MLPEncoder",
    "frame_distribution",
]
