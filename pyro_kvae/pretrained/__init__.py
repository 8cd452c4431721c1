# SPDX-License-Identifier: Apache-2.0
"""
Trained KVAEs, loaded in one line::

    from pyro_kvae import pretrained
    from pyro_kvae.imputation import impute

    kvae = pretrained.load("box")           # eval mode, on the CPU (device="cuda" for the GPU)
    out = impute(kvae, x, mask)             # x (batch, 20, 32, 32) binary frames, mask (batch, 20) bool

``"box"``, ``"polygon"`` and ``"box_gravity"`` (or ``"gravity"``: the ball in a box with
gravity) are the KVAEs of the paper's figure 3 and appendix E trained on the KVAE
authors' own datasets (``datasets/authors``; frames binarised with ``images > 0``):
32x32 binary frames, 20 per sequence, the paper's settings (5000 sequences, 80 epochs,
32 filters, the reference schedule). Each one's seed is the best of 4 after 3 epochs by its
validation imputation error (``--select-seeds 4``); their a-spaces are the scene, rotated and
stretched (affine R^2 on the true positions above 0.99). Each name is two files of this package:
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


def export_run(run_dir: str, name: str, hardware: str, out_dir: str = HERE) -> str:
    """
    :func:`export` for a run of ``python -m pyro_kvae.experiments ENV``: the KVAE in
    ``run_dir/kvae`` with what the run's ``results.json`` (written by its last evaluation) and
    ``kvae/selection.json`` (with ``--select-seeds``) record: data, epochs, seed choice, command,
    wall time and ``hardware`` (a phrase such as ``"a 2-core AMD EPYC CPU"``) under ``training``;
    the test ELBO and bound, the a-space R^2 and every method's pixel error at drop probability
    0.5 and with a gap of 9 frames under ``results``. Returns the ``.pt`` path.

    :raises FileNotFoundError: if ``run_dir`` holds no ``results.json``.
    """
    with open(os.path.join(run_dir, "results.json")) as f:
        r = json.load(f)
    authors = r["settings"].get("authors")
    data = (f"{authors}/{r['env']}_{{train,test}}.npz, binarised (images > 0): {r['n_train']} training sequences; "
            f"validation: the first {r['n_valid']} test sequences" if authors else r["data"])  # fmt: skip
    training = {"data": data, "epochs": r["kvae_epochs"], "n_train": r["n_train"]}
    selection = os.path.join(run_dir, "kvae", "selection.json")
    if os.path.exists(selection):
        with open(selection) as f:
            s = json.load(f)
        seeds = sorted(s["scores"], key=int)
        scores = ", ".join(f"{s['scores'][k]:.4f}" for k in seeds)
        training["seed_selection"] = (
            f"seed {s['chosen_seed']}, the lowest validation imputation error at p = 0.5 "
            f"of seeds {seeds[0]} to {seeds[-1]} after {s['epoch']} epochs ({scores})"
        )
    training.update(command=r["command"], hardware=hardware, train_seconds=r["kvae_train_seconds"],
                    evaluated=r["finished"])  # fmt: skip

    def errors(experiment, setting):
        return {row["method"]: row["pixel_error"] for row in r["rows"]
                if row["experiment"] == experiment and row["setting"] == setting}  # fmt: skip

    results = {"test_elbo": r["kvae_test_elbo"], f"test_iwae_bound_{r['iwae_particles']}": r["kvae_test_iwae_bound"],
               "n_test": r["n_test"]}  # fmt: skip
    if r.get("kvae_a_space_r2_test") is not None:
        results["a_space_r2_test"] = r["kvae_a_space_r2_test"]
    gap = f"after_{r['gap_start']}" if r.get("gap_start") is not None else "centred"  # older runs: centred
    for key, experiment, setting in (("p0.5", "missing_at_random", 0.5), (f"gap9_{gap}", "missing_in_middle", 9)):
        found = errors(experiment, setting)
        if found:  # (no gap of 9 in sequences too short for one)
            results[f"pixel_error_{key}"] = found
    results["all"] = os.path.join(run_dir, "results.json")
    return export(os.path.join(run_dir, "kvae"), name, training, results, out_dir)
