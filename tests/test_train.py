# SPDX-License-Identifier: Apache-2.0
"""Training: ELBO improves, checkpoints resume identically, missing frames, devices."""

import json
import math
import os

import pyro
import pytest
import torch

from pyro_kvae.config import KVAEConfig
from pyro_kvae.data import VideoDataset, generate, save
from pyro_kvae.train import CHECKPOINT, Trainer

SMALL_BOX = dict(size=16, T=8, radius=2.0, inset=1.0, init_std=4.0, speed_min=5.0, speed_max=7.5)


@pytest.fixture(scope="module")
def tiny_videos(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("data") / "box16.npz")
    save(path, generate("box", (96, 32, 32), seed=0, progress=False, **SMALL_BOX))
    return VideoDataset(path, "train"), VideoDataset(path, "valid")


def config(**kw):
    base = dict(frame_size=16, vae="mlp", mlp_hidden=(64,), batch_size=16, kf_update_epochs=1, lr=0.01)
    base.update(kw)
    return KVAEConfig(**base)


def params(trainer):
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def test_short_run_improves_elbo(tiny_videos):
    train, valid = tiny_videos
    trainer = Trainer(config(epochs=8), progress=False)
    before = trainer.evaluate(valid)
    history = trainer.fit(train, valid)
    after = trainer.evaluate(valid)
    print(f"valid ELBO per sequence: before {before:.1f}, after {after:.1f}")
    assert len(history) == 8 and all("valid_elbo" in h for h in history)
    # 8 frames of 16x16 binary pixels start near 8 * 256 * log(2) = 1420 nats below zero
    assert after > before + 0.5 * abs(before)


def test_checkpoint_resume_is_identical(tiny_videos, tmp_path):
    train, _ = tiny_videos
    straight = Trainer(config(epochs=3, train_miss_prob=0.3), progress=False)
    straight.fit(train)

    run = str(tmp_path / "run")
    first = Trainer(config(epochs=3, train_miss_prob=0.3), run_dir=run, progress=False)
    first.fit(train, epochs=2)
    assert os.path.exists(os.path.join(run, CHECKPOINT))
    assert [f for f in os.listdir(run) if f.endswith(".tmp")] == []
    resumed = Trainer.resume(run, progress=False)
    assert resumed.epoch == 2
    resumed.fit(train)
    assert resumed.epoch == 3
    a, b = params(straight), params(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [h["train_loss"] for h in straight.history] == [h["train_loss"] for h in resumed.history]
    lines = open(os.path.join(run, "metrics.jsonl")).read().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


def test_fork_continues_a_checkpoint_with_new_settings(tiny_videos, tmp_path):
    from pyro_kvae.train import load_checkpoint

    train, _ = tiny_videos
    first = Trainer(config(epochs=3), run_dir=str(tmp_path / "a"), progress=False)
    first.fit(train, epochs=2)
    state = load_checkpoint(str(tmp_path / "a" / CHECKPOINT))
    straight = Trainer.resume(str(tmp_path / "a"), progress=False)
    straight.fit(train)
    for run_dir in (str(tmp_path / "b"), None):  # a fork into a new directory, and into none
        fork = Trainer(config(epochs=3), run_dir=run_dir, progress=False, state=state)
        assert fork.epoch == 2
        fork.fit(train)
        a, b = params(straight), params(fork)
        assert fork.epoch == 3 and all(torch.equal(a[k], b[k]) for k in a)  # optimiser and schedule went on too
    # new settings: kept by the fork's checkpoint from the start, so that a resume gets them
    fork = Trainer(config(epochs=4, train_miss_prob=0.5), run_dir=str(tmp_path / "c"), progress=False, state=state)
    assert Trainer.resume(str(tmp_path / "c"), progress=False).config.train_miss_prob == 0.5
    fork.fit(train)
    resumed = Trainer.resume(str(tmp_path / "c"), progress=False)
    assert resumed.epoch == 4 and resumed.config.train_miss_prob == 0.5
    with pytest.raises(FileExistsError, match="already holds a checkpoint"):
        Trainer(config(epochs=4), run_dir=str(tmp_path / "c"), progress=False, state=state)


def test_alpha_network_frozen_for_first_epochs(tiny_videos):
    train, _ = tiny_videos
    trainer = Trainer(config(epochs=2, kf_update_epochs=1, dynamics="lstm"), progress=False)
    dyn = lambda: {k: v.clone() for k, v in trainer.model.prior.dynamics.state_dict().items()}  # noqa: E731
    start = dyn()
    A0 = trainer.model.prior.A.detach().clone()
    trainer.train_epoch(train)
    assert all(torch.equal(start[k], v) for k, v in dyn().items())  # alpha network untouched
    assert not torch.equal(A0, trainer.model.prior.A)  # the LGSSM modes did train
    trainer.train_epoch(train)
    assert not all(torch.equal(start[k], v) for k, v in dyn().items())


def test_resume_without_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        Trainer.resume(str(tmp_path))


def test_controls_dataset_trains(tmp_path):
    path = str(tmp_path / "pendulum.npz")
    save(path, generate("pendulum", (16, 4, 4), seed=0, progress=False, T=6))
    train = VideoDataset(path, "train")
    trainer = Trainer(config(dim_u=1, K=2, dim_z=3, epochs=1, batch_size=8), progress=False)
    trainer.fit(train)
    assert torch.isfinite(torch.tensor(trainer.history[-1]["train_loss"]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_training(tiny_videos):
    train, valid = tiny_videos
    trainer = Trainer(config(epochs=1, device="cuda", train_miss_prob=0.2), progress=False)
    trainer.fit(train, valid)
    assert next(trainer.model.parameters()).is_cuda
    assert torch.isfinite(torch.tensor(trainer.history[-1]["valid_elbo"]))


def test_bf16_mixed_keeps_the_kalman_part_in_float32(tiny_videos):
    """Under bf16 autocast the networks run in bfloat16, the prior and the guide's filter do not."""
    train, valid = tiny_videos
    trainer = Trainer(config(epochs=1, precision="bf16-mixed", train_miss_prob=0.3), progress=False)
    prior = trainer.model.prior
    a = torch.randn(4, 8, 2)
    mask = torch.rand(4, 8) > 0.3
    plain = prior.filter(a, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert trainer.model.decoder(a).dtype == torch.bfloat16  # the networks are autocast
        mixed = prior.filter(a, mask)
        log_p = prior.distribution((4,), 8).log_prob(a)
    assert torch.equal(plain.filtered.filt_cov, mixed.filtered.filt_cov) and torch.equal(plain.alpha, mixed.alpha)
    assert log_p.dtype == torch.float32 and torch.equal(log_p, prior.distribution((4,), 8).log_prob(a))
    history = trainer.fit(train, valid)
    assert math.isfinite(history[-1]["train_loss"]) and math.isfinite(history[-1]["valid_elbo"])


def test_transition_modes_frozen_for_first_epochs(tiny_videos):
    train, _ = tiny_videos
    trainer = Trainer(config(epochs=2, kf_update_epochs=0, transition_frozen_epochs=1), progress=False)
    A0, C0 = trainer.model.prior.A.detach().clone(), trainer.model.prior.C.detach().clone()
    trainer.train_epoch(train)
    assert torch.equal(A0, trainer.model.prior.A)  # held at the identity
    assert not torch.equal(C0, trainer.model.prior.C)  # the rest of the LGSSM trained
    trainer.train_epoch(train)
    assert not torch.equal(A0, trainer.model.prior.A)


def test_pyro_validation_checks_the_first_step_of_each_epoch(tiny_videos):
    """Pyro's validation, when on, runs in the first training step of each epoch and not after it
    (its checks read tensors on the host); when off, it stays off."""
    from pyro.distributions.util import is_validation_enabled

    train, _ = tiny_videos
    trainer = Trainer(config(epochs=2), progress=False)
    seen, model = [], trainer.model.model

    def spying_model(*args, **kwargs):
        seen.append(is_validation_enabled())
        return model(*args, **kwargs)

    trainer.plan.kvae.model = spying_model
    steps = len(train) // 16
    with pyro.validation_enabled(True):
        trainer.fit(train)
        assert is_validation_enabled()
    assert seen == 2 * ([True] + [False] * (steps - 1))
    seen.clear()
    with pyro.validation_enabled(False):
        trainer.fit(train, epochs=3)
    assert seen == [False] * steps


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_step_has_no_host_synchronisation(tiny_videos):
    """With Pyro's validation off, a training step (ELBO, backward, clipping, Adam) never waits on the GPU."""
    from pyro_kvae.bounds import SyncFreeTrace_ELBO
    from pyro_kvae.config import build_kvae

    train, _ = tiny_videos
    kvae = build_kvae(config(dynamics="lstm")).cuda()
    kvae.check_frames = False  # the trainer checks a dataset's frames once, before its steps
    x = train.x[:16].cuda()
    mask = torch.rand(x.shape[:2], device="cuda") > 0.3  # missing frames: the guide's conditional filter
    mask[:, :4] = True
    elbo = SyncFreeTrace_ELBO()
    opt = torch.optim.Adam(kvae.parameters(), lr=1e-3)

    def step():
        loss = elbo.differentiable_loss(kvae.model, kvae.guide, x, None, mask) / x.shape[0]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(kvae.parameters(), 150.0, foreach=True)
        opt.step()
        opt.zero_grad()

    with pyro.validation_enabled(False):
        step()  # first step: lazy initialisations
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode(0)
