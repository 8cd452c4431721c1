# SPDX-License-Identifier: Apache-2.0
"""Simulated video datasets of the paper's experiments; see :mod:`.environments` and :mod:`.datasets`."""

from .datasets import SPLITS, VideoDataset, generate, load, make_environment, save, simulate
from .environments import DEFAULT_SPLITS, ENVIRONMENTS

__all__ = [
    "DEFAULT_SPLITS",
    "ENVIRONMENTS",
    "SPLITS",
    "VideoDataset",
    "generate",
    "load",
    "make_environment",
    "save",
    "simulate",
]
