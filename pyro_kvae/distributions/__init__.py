# SPDX-License-Identifier: Apache-2.0
from .lgssm import LinearGaussianSSM

__all__ = ["LinearGaussianSSM"]
