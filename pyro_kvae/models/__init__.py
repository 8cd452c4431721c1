# SPDX-License-Identifier: Apache-2.0
from .explicit import ExplicitStateGuide, ExplicitStateModel
from .guides import EncoderMeanGuide, EncoderSmootherPosterior, SmoothingGuide
from .kvae import KVAE
from .prior import KalmanPrior, KalmanPriorDistribution, RecursiveFilterResult

__all__ = [
    "KVAE",
    "EncoderMeanGuide",
    "EncoderSmootherPosterior",
    "ExplicitStateGuide",
    "ExplicitStateModel",
    "KalmanPrior",
    "KalmanPriorDistribution",
    "RecursiveFilterResult",
    "SmoothingGuide",
]
