# SPDX-License-Identifier: Apache-2.0
"""Command-line flags generated one-to-one from :class:`~pyro_kvae.config.KVAEConfig`."""

import argparse
import dataclasses
from typing import Optional

from .config import KVAEConfig


def add_config_args(parser: argparse.ArgumentParser, defaults: Optional[KVAEConfig] = None):
    """Adds ``--<field>`` for every field of :class:`KVAEConfig` (``--dim-a``, ``--conv-filters 32 32 32``, ...)."""
    defaults = defaults or KVAEConfig()
    group = parser.add_argument_group("model and training (KVAEConfig)")
    for f in dataclasses.fields(KVAEConfig):
        flag = "--" + f.name.replace("_", "-")
        value = getattr(defaults, f.name)
        if isinstance(value, bool):
            group.add_argument(flag, type=lambda s: s.lower() in ("1", "true", "yes"), default=value, metavar="BOOL")
        elif isinstance(value, tuple):
            group.add_argument(flag, type=int, nargs="+", default=value)
        else:
            group.add_argument(flag, type=type(value), default=value)
    return parser


def config_from_args(args: argparse.Namespace) -> KVAEConfig:
    """The :class:`KVAEConfig` given by flags added with :func:`add_config_args`."""
    return KVAEConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(KVAEConfig)})
