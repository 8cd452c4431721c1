# SPDX-License-Identifier: Apache-2.0
"""
Trained KVAEs, loaded in one line::

    from pyro_kvae import pretrained
    from pyro_kvae.imputation import impute

    kvae = pretrained.load("box")           # eval mode, on the CPU (device="cuda" for the GPU)
    out = impute(kvae, x, mask)             # x (batch, 20, 32, 32) binary frames, mask (batch, 20) bool

``"box"`` and ``"polygon"`` are the KVAEs of the paper's figure 3 trained on the KVAE
authors' own datasets (``datasets/authors``; frames binarised with ``images > 0``):
32x32 binary frames, 20 per sequence, the paper's settings (5000 sequences, 80 epochs,
32 filters, the reference schedule). The box's seed is the best of 4 after 3 epochs by its
validation imputation error (``--select-seeds 4``; its a-space is the box, rotated); polygon's
is one seed. Each name is two files of this package:
``<name>.pt``, the model's float32 state dict, and ``<name>.json``, the
:class:`~pyro_kvae.config.KVAEConfig` it was built with, how it was trained and what it
scored (:func:`info`).
"""

import json
import os
from typing import Optional

import torch

from ..config import KVAEConfig, build_kvae, check_device

HERE = os.path.dirname(os.path.abspath(__file__))
ALIASES = {"gravity": "box_gravity"}  # the paper's short name for the ball in a box with gravity


def names() -> tuple:
    """The names :func:`load` knows, sorted."""
    return tuple(sorted(f[: -len(".json")] for f in os.listdir(HERE) if f.endswith(".json")))


def _path(name: str, suffix: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, one of {names()}, got {type(name).__name__}")
    name = ALIASES.get(name, name)
    if name not in names():
        raise ValueError(f"no pretrained model called {name!r}; the names are {names()}")
    return os.path.join(HERE, name + suffix)


def info(name: str) -> dict:
    """What ``<name>.json`` records: ``config`` (the :class:`KVAEConfig` fields), ``training``
    (data, epochs, wall time, hardware) and ``results`` (test ELBO, pixel errors)."""
    with open(_path(name, ".json")) as f:
        return json.load(f)


def load(name: str, device: Optional[str] = None):
    """
    The trained :class:`~pyro_kvae.models.KVAE` called ``name`` (see :func:`names`; ``"gravity"``
    is ``"box_gravity"``), in eval
    mode on ``device`` (default: the CPU), ready for :func:`~pyro_kvae.imputation.impute` and
    :func:`~pyro_kvae.imputation.generate`.

    :raises ValueError: for an unknown name, listing the names.
    """
    meta = info(name)
    config = KVAEConfig.from_dict({**meta["config"], "device": "cpu"})
    kvae = build_kvae(config)
    state = torch.load(_path(name, ".pt"), map_location="cpu", weights_only=True)
    kvae.load_state_dict(state)
    return kvae.to(check_device(device or "cpu")).eval()


def export(run_dir: str, name: str, training: dict, results: dict, out_dir: str = HERE) -> str:
    """
    Writes ``out_dir/<name>.pt`` (the float32 state dict of the KVAE trained in ``run_dir``) and
    ``out_dir/<name>.json`` (its config, ``training`` and ``results``); returns the ``.pt`` path.
    """
    from ..files import atomic_write, write_json
    from ..train import CHECKPOINT, Trainer, load_checkpoint

    checkpoint = load_checkpoint(os.path.join(run_dir, CHECKPOINT))
    config = KVAEConfig.from_dict({**checkpoint["pyro_kvae"]["config"], "device": "cpu"})
    trainer = Trainer(config, progress=False, state=checkpoint)  # no run_dir: nothing there is touched
    state = {k: v.detach().to(torch.float32).clone() for k, v in trainer.model.state_dict().items()}
    path = os.path.join(out_dir, name + ".pt")
    atomic_write(path, lambda f: torch.save(state, f))
    write_json(os.path.join(out_dir, name + ".json"),
               {"config": config.to_dict(), "training": training, "results": results})  # fmt: skip
    return path
