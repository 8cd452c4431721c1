# SPDX-License-Identifier: Apache-2.0
"""
Command-line flags generated one-to-one from :class:`~pyro_kvae.config.KVAEConfig`,
checked before anything is loaded: a bad value stops the program with the flag,
the expected value and what came in.
"""

import argparse
import dataclasses
import sys
from typing import Optional, Sequence, Set

from .config import ConfigError, KVAEConfig, check_device

TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def flag(field: str) -> str:
    """The flag of a config field: ``dim_a`` -> ``--dim-a``."""
    return "--" + field.replace("_", "-")


def boolean(text: str) -> bool:
    """Strict boolean flag values: true/false, yes/no, on/off, 1/0 (any case)."""
    if text.lower() in TRUE:
        return True
    if text.lower() in FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected one of {TRUE + FALSE}, got {text!r}")


def positive_int(text: str) -> int:
    """An argparse type: ``text`` as an int >= 1, else an argparse error naming the value."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive int, got {text}")
    return value


def probability(text: str) -> float:
    """A probability in (0, 1]."""
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def add_config_args(parser: argparse.ArgumentParser, defaults: Optional[KVAEConfig] = None):
    """Adds ``--<field>`` for every field of :class:`KVAEConfig` (``--dim-a``, ``--conv-filters 32 32 32``, ...)."""
    defaults = defaults or KVAEConfig()
    group = parser.add_argument_group("model and training (KVAEConfig)")
    for f in dataclasses.fields(KVAEConfig):
        value = getattr(defaults, f.name)
        if isinstance(value, bool):
            group.add_argument(flag(f.name), type=boolean, default=value, metavar="BOOL")
        elif isinstance(value, tuple):
            group.add_argument(flag(f.name), type=int, nargs="+", default=value)
        else:
            group.add_argument(flag(f.name), type=type(value), default=value)
    return parser


def config_from_args(args: argparse.Namespace, parser: Optional[argparse.ArgumentParser] = None) -> KVAEConfig:
    """
    The :class:`KVAEConfig` given by flags added with :func:`add_config_args`, with its device
    checked. With ``parser`` a bad value exits through ``parser.error`` naming the flag.
    """
    try:
        config = KVAEConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(KVAEConfig)})
        check_device(config.device)
    except ConfigError as e:
        if parser is None:
            raise
        parser.error(f"argument {flag(e.field)}: {e}")
    return config


def explicit_dests(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]] = None) -> Set[str]:
    """
    The ``dest`` of every option written on the command line ``argv`` (default ``sys.argv[1:]``),
    as opposed to those left at their defaults. Needs ``parser.allow_abbrev = False``.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    given = {arg.split("=", 1)[0] for arg in argv if arg.startswith("-")}
    return {a.dest for a in parser._actions if given.intersection(a.option_strings)}
