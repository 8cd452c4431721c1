# SPDX-License-Identifier: Apache-2.0
"""Video datasets: the paper's simulated ones (:mod:`.environments`, :mod:`.datasets`), your own (:mod:`.sources`)."""

from .datasets import SPLITS, VideoDataset, generate, load, make_environment, save, simulate
from .environments import DEFAULT_SPLITS, ENVIRONMENTS
from .sources import load_videos, read_video

__all__ = [
    "DEFAULT_SPLITS",
    "ENVIRONMENTS",
    "SPLITS",
    "VideoDataset",
    "generate",
    "load",
    "load_videos",
    "make_environment",
    "read_video",
    "save",
    "simulate",
]
