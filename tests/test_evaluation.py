# SPDX-License-Identifier: Apache-2.0
"""The a-space diagnostics: R^2 against an independent fit, the per-epoch monitor, the figure, bad inputs."""

import json
import os

import numpy as np
import pytest
import torch
from test_train import SMALL_BOX

from pyro_kvae.config import KVAEConfig, build_kvae
from pyro_kvae.data import VideoDataset, generate, save
from pyro_kvae.evaluation import ValidationMonitor, a_space_r2, affine_r2, gap_mask, plot_a_space
from pyro_kvae.train import Trainer


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("data") / "box16.npz")
    save(path, generate("box", (64, 16, 16), seed=0, progress=False, **SMALL_BOX))
    return VideoDataset(path, "train"), VideoDataset(path, "valid")


def small_kvae():
    torch.manual_seed(0)
    return build_kvae(KVAEConfig(frame_size=16, vae="mlp", mlp_hidden=(32,)))


def test_affine_r2_matches_numpy_least_squares():
    g = torch.Generator().manual_seed(0)
    position = torch.rand(50, 2, generator=g, dtype=torch.float64)
    # a[0] an exact affine image, a[1] a fold (|x - 0.5|: not affine), a[2] constant
    a = torch.stack(
        [2 * position[:, 0] - position[:, 1] + 3, (position[:, 0] - 0.5).abs(), torch.ones(50, dtype=torch.float64)], -1
    )
    r2 = affine_r2(a, position)
    X = np.c_[position.numpy(), np.ones(50)]
    for k in range(2):
        y = a[:, k].numpy()
        residual = y - X @ np.linalg.lstsq(X, y, rcond=None)[0]
        assert r2[k].item() == pytest.approx(1 - residual.var() / y.var(), abs=1e-12)
    assert r2[0].item() == pytest.approx(1.0, abs=1e-12)
    assert r2[1].item() < 0.2
    assert r2[2].item() == 0.0
    # rows with an unknown (NaN) position are left out
    unknown = position.clone()
    unknown[::7, 1] = float("nan")
    keep = torch.arange(50) % 7 != 0
    assert torch.allclose(affine_r2(a, unknown), affine_r2(a[keep], position[keep]), rtol=0, atol=1e-12)


def test_a_space_r2_of_an_encoder_that_reads_the_position(videos):
    train, _ = videos
    kvae = small_kvae()
    position = train.tensors["position"]
    # a linear read-out of the frames' centre of mass is an affine image of the ball's position
    grid = torch.stack(torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij"), -1)

    def encoder(x):
        w = x / x.sum((-1, -2), keepdim=True)
        loc = (w[..., None] * grid).sum((-2, -3))
        return loc, torch.full_like(loc, 0.1)

    kvae.encoder.forward = encoder
    r2 = a_space_r2(kvae, train.x, position)
    assert r2.shape == (2,) and (r2 > 0.97).all()


def test_plot_a_space_makes_its_folder(videos, tmp_path):
    train, _ = videos
    path = tmp_path / "not" / "yet" / "a_space.png"  # as `runs/` on a fresh clone
    plot_a_space(small_kvae(), train.x[:8], train.tensors["position"][:8], str(path), trajectories=2, frames=64)
    assert path.stat().st_size > 1000


def test_bad_positions_are_named(videos):
    train, _ = videos
    kvae = small_kvae()
    with pytest.raises(ValueError, match="position is None"):
        a_space_r2(kvae, train.x, None)
    with pytest.raises(ValueError, match=r"position must have shape \(batch, T, dims\)"):
        a_space_r2(kvae, train.x, train.tensors["position"][:5])
    with pytest.raises(ValueError, match=r"position must have shape"):
        ValidationMonitor(train.x, train.tensors["position"][:, :3])
    with pytest.raises(TypeError, match="position must be a tensor"):
        a_space_r2(kvae, train.x, train.tensors["position"].numpy())
    with pytest.raises(ValueError, match="position is None"):
        plot_a_space(kvae, train.x, None, "unused.png")


def test_gap_mask_starts_after_the_initial_frames():
    mask = gap_mask((2, 20), 9)
    assert mask[:, :4].all() and not mask[:, 4:13].any() and mask[:, 13:].all()
    with pytest.raises(ValueError, match="gap"):
        gap_mask((2, 20), 17)


def test_monitor_rows_in_metrics_and_figure(videos, tmp_path):
    train, valid = videos
    monitor = ValidationMonitor(valid.x, valid.tensors["position"])
    config = KVAEConfig(frame_size=16, vae="mlp", mlp_hidden=(32,), batch_size=16, epochs=2, kf_update_epochs=1)
    run = str(tmp_path / "run")
    trainer = Trainer(config, run_dir=run, progress=False, monitor=monitor)
    trainer.fit(train)
    rows = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
    assert [r["epoch"] for r in rows] == [1, 2]
    for row in rows:
        assert 0.0 <= row["valid_p05_error"] <= 1.0 and len(row["valid_r2"]) == 2
    # the monitor's numbers are those of the model it was given, and it leaves it as it was
    trainer.model.train()
    again = monitor(trainer.model)
    assert trainer.model.training
    assert again["valid_p05_error"] == pytest.approx(rows[-1]["valid_p05_error"], abs=1e-7)
    assert again["valid_r2"] == rows[-1]["valid_r2"]
    # a resumed run keeps logging them
    resumed = Trainer.resume(run, progress=False, monitor=monitor)
    resumed.fit(train, epochs=3)
    assert "valid_r2" in resumed.history[-1] and len(resumed.history) == 3
    path = str(tmp_path / "aspace.png")
    r2 = plot_a_space(trainer.model, valid.x, valid.tensors["position"], path, gap=5)
    assert os.path.getsize(path) > 0 and r2.shape == (2,)
    from pyro_kvae.plotting import plot_training

    plot_training(resumed.history, str(tmp_path / "training.png"))


def test_loss_per_frame_divides_the_training_loss_by_T(videos):
    train, _ = videos
    losses = []
    for per_frame in (False, True):
        config = KVAEConfig(frame_size=16, vae="mlp", mlp_hidden=(32,), batch_size=16, epochs=1,
                            loss_per_frame=per_frame, lr=1e-12)  # fmt: skip
        trainer = Trainer(config, progress=False)
        trainer.fit(train)
        losses.append(trainer.history[-1]["train_loss"])
    assert losses[1] == pytest.approx(losses[0] / train.x.shape[1], rel=1e-4)


def test_fit_selecting_seed_continues_the_seed_with_the_lowest_validation_error(videos, tmp_path):
    from pyro_kvae.train import fit_selecting_seed

    train, valid = videos
    monitor = ValidationMonitor(valid.x)
    config = KVAEConfig(frame_size=16, vae="mlp", mlp_hidden=(32,), batch_size=16, epochs=2, kf_update_epochs=1,
                        seed=4, select_seeds=3, select_epochs=1)  # fmt: skip
    run = str(tmp_path / "run")
    trainer = fit_selecting_seed(config, train, None, run, monitor, progress=False)
    selection = json.load(open(os.path.join(run, "selection.json")))
    scores = {}
    for seed in (4, 5, 6):
        rows = [json.loads(line) for line in open(os.path.join(run, "seeds", f"seed{seed}", "metrics.jsonl"))]
        assert [r["epoch"] for r in rows] == [1]
        scores[str(seed)] = rows[0]["valid_p05_error"]
    assert selection["scores"] == scores and len(set(scores.values())) == 3
    chosen = min(scores, key=scores.get)
    assert selection["chosen_seed"] == int(chosen) and trainer.config.seed == int(chosen)
    # the run goes on from the chosen seed's epoch, to the configured epochs
    assert [h["epoch"] for h in trainer.history] == [1, 2]
    assert trainer.history[0]["valid_p05_error"] == scores[chosen]
    # started again, it trains nothing (finished); other settings are refused
    weights = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    again = fit_selecting_seed(config, train, None, run, monitor, progress=False)
    assert all(torch.equal(weights[k], v) for k, v in again.model.state_dict().items())
    import dataclasses

    with pytest.raises(ValueError, match="lr"):
        fit_selecting_seed(dataclasses.replace(config, lr=0.001), train, None, run, monitor, progress=False)
    with pytest.raises(ValueError, match="needs config.select_seeds >= 2"):
        fit_selecting_seed(dataclasses.replace(config, select_seeds=1), train, None, run, monitor)
    with pytest.raises(ValueError, match="needs a monitor"):
        fit_selecting_seed(config, train, None, str(tmp_path / "other"), None)
