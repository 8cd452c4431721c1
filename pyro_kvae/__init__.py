# SPDX-License-Identifier: Apache-2.0
"""
pyro-kvae: the Kalman Variational Auto-Encoder (Fraccaro et al., 2017) in Pyro.

The main API is importable from the top level (loaded on first use)::

    from pyro_kvae import KVAEConfig, Trainer, build_kvae, impute, generate, pretrained

Everything else lives in the subpackages: :mod:`pyro_kvae.distributions` (the LGSSM),
:mod:`pyro_kvae.models` (model, prior, guides), :mod:`pyro_kvae.nn` (encoders, decoders,
dynamics networks), :mod:`pyro_kvae.ops` (the Kalman core), :mod:`pyro_kvae.data`.
"""

import importlib

__version__ = "0.1.0"

#: public name -> module that defines it
_API = {
    "KVAEConfig": "config",
    "build_kvae": "config",
    "Trainer": "train",
    "random_mask": "train",
    "impute": "imputation",
    "generate": "imputation",
    "pixel_error": "imputation",
    "Imputation": "imputation",
    "importance_weighted_bound": "bounds",
    "SyncFreeTrace_ELBO": "bounds",
    "LinearGaussianSSM": "distributions",
    "KVAE": "models",
    "KalmanPrior": "models",
    "SmoothingGuide": "models",
    "EncoderMeanGuide": "models",
    "VideoDataset": "data",
    "load_videos": "data",
}
_SUBMODULES = ("pretrained", "data", "distributions", "models", "nn", "ops", "experiments", "baselines")

__all__ = ["__version__", *_API, *_SUBMODULES]


def __getattr__(name):
    if name in _API:
        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'pyro_kvae' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
