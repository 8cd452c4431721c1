# SPDX-License-Identifier: Apache-2.0
from .dynamics import DynamicsNetwork, FixedDynamics, GRUDynamics, LSTMDynamics, MLPDynamics, RNNDynamics
from .vae import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder, frame_distribution

__all__ = [
    "ConvDecoder",
    "ConvEncoder",
    "DynamicsNetwork",
    "FixedDynamics",
    "GRUDynamics",
    "LSTMDynamics",
    "MLPDecoder",
    "MLPDynamics",
    "MLPEncoder",
    "RNNDynamics",
    "frame_distribution",
]
