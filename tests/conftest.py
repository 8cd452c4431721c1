# SPDX-License-Identifier: Apache-2.0
import os

import pyro
import pytest
import torch

# under pytest-xdist (`make test` runs `-n auto`) the workers share the cores: one worker's
# torch ops would otherwise start as many threads as there are cores and oversubscribe them
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    torch.set_num_threads(max(1, torch.get_num_threads() // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))


@pytest.fixture(autouse=True)
def _seed_and_validate():
    pyro.set_rng_seed(0)
    pyro.enable_validation(True)
    yield
    pyro.clear_param_store()


def make_mask(kind, batch, T, seed=0):
    """Observation masks used across the tests: all observed, random, a missing
    stretch (including a missing first step), and a fully missing sequence."""
    g = torch.Generator().manual_seed(seed)
    if kind == "none":
        return torch.ones(batch, T, dtype=torch.bool)
    mask = torch.rand(batch, T, generator=g) > 0.35
    if kind == "random":
        return mask
    if kind == "stretch":
        mask[:, T // 3 : T // 3 + max(2, T // 3)] = False
        mask[0, 0] = False
        mask[-1] = False  # a fully missing sequence
        return mask
    raise ValueError(kind)


MASK_KINDS = ["none", "random", "stretch"]


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    """A small bouncing-ball dataset file (16x16, T=8; 32/8/8 sequences) for training tests."""
    from test_train import SMALL_BOX

    from pyro_kvae.data import generate, save

    path = str(tmp_path_factory.mktemp("data") / "box16.npz")
    save(path, generate("box", (32, 8, 8), seed=0, progress=False, **SMALL_BOX))
    return path
