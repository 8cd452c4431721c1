# SPDX-License-Identifier: Apache-2.0
"""Your own videos: arrays, files and folders of any frame shape, and the likelihoods for them."""

import math
import os

import numpy as np
import pyro
import pytest
import torch
from test_train import config

from pyro_kvae.config import ConfigError, KVAEConfig, build_kvae
from pyro_kvae.data import VideoDataset, load_videos
from pyro_kvae.nn.vae import PIXEL_VAR_FLOOR, frame_distribution
from pyro_kvae.train import Trainer

iio = pytest.importorskip("imageio.v3", reason="imageio is in the dev extras")


def toy_videos(n=12, T=6, H=8, W=16, seed=0):
    """RGB uint8 videos (n, T, H, W, 3) of a coloured square moving sideways."""
    rng = np.random.default_rng(seed)
    v = np.zeros((n, T, H, W, 3), np.uint8)
    for i in range(n):
        x0, y0, colour = rng.integers(0, W - 4), rng.integers(0, H - 3), rng.integers(60, 255, size=3)
        for t in range(T):
            x = (x0 + 2 * t) % (W - 3)
            v[i, t, y0 : y0 + 3, x : x + 3] = colour
        v[i, :, -1, -1, 0] = i + 1  # every video different
    return v


def test_arrays_of_every_layout():
    v = toy_videos(n=3)
    x = load_videos(v)
    assert x.dtype == np.float32 and x.shape == (3, 6, 3, 8, 16)  # channels first
    assert np.allclose(x, np.moveaxis(v, -1, 2) / 255.0)
    assert np.array_equal(load_videos(np.moveaxis(x, 2, -1)), x)  # floats kept as they are
    assert np.array_equal(load_videos(x, channels_last=False), x)
    grey = v[..., 0] > 0
    assert load_videos(grey).shape == (3, 6, 8, 16) and set(np.unique(load_videos(grey))) <= {0.0, 1.0}
    assert load_videos(v[..., :1]).shape == (3, 6, 8, 16)  # one channel: plain (H, W) frames
    with pytest.raises(ValueError, match=r"integer frames must be uint8 \(0..255\) or 0/1"):
        load_videos(v.astype(np.int64) * 2)
    with pytest.raises(ValueError, match=r"videos must be an array \(N, T, H, W\)"):
        load_videos(v[0, 0])


def test_folder_of_gif_npy_npz_mp4(tmp_path):
    v = toy_videos(n=4)
    folder = tmp_path / "videos"
    folder.mkdir()
    np.save(folder / "a.npy", v[0])
    np.savez(folder / "b.npz", x=v[1])
    iio.imwrite(folder / "c.gif", v[2], duration=100, loop=0)
    formats = ["npy", "npz", "gif"]
    try:
        iio.imwrite(folder / "d.mp4", np.pad(v[3], ((0, 0), (4, 4), (0, 0), (0, 0))), fps=10)  # 16 x 16
        mp4 = True
    except Exception:  # no ffmpeg plugin: checked below with the shapes of the rest
        mp4 = False
    if mp4:
        with pytest.raises(ValueError, match=r"must share one shape: .*a.npy is \(6, 8, 16, 3\), .*d.mp4 is \(6, 16"):
            load_videos(str(folder))
        os.unlink(folder / "d.mp4")
        iio.imwrite(folder / "d.mp4", np.pad(v[3], ((0, 0), (4, 4), (0, 0), (0, 0))), fps=10)
        os.rename(folder / "d.mp4", tmp_path / "d.mp4")
        clip = load_videos(str(tmp_path / "d.mp4"))
        assert clip.shape == (1, 6, 3, 16, 16)
        # lossy: the square is still where it was
        assert np.abs(clip[0, :, :, 4:12] - np.moveaxis(v[3], -1, 1) / 255.0).mean() < 0.05
        formats.append("mp4")
    x = load_videos(str(folder))
    assert x.shape == (3, 6, 3, 8, 16)
    assert np.array_equal(x[0], np.moveaxis(v[0], -1, 1) / np.float32(255))  # lossless
    assert np.array_equal(x[1], np.moveaxis(v[1], -1, 1) / np.float32(255))
    assert np.abs(x[2] - np.moveaxis(v[2], -1, 1) / 255.0).max() < 0.1  # GIF: a 256-colour palette
    print("read:", formats)


def test_bad_sources(tmp_path):
    (tmp_path / "notes.txt").write_text("not a video")
    with pytest.raises(ValueError, match=r"holds \['notes.txt'\]: a folder of videos may hold only .npy, .npz"):
        load_videos(str(tmp_path))
    with pytest.raises(ValueError, match="unsupported video file"):
        VideoDataset(str(tmp_path / "notes.txt"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="holds no videos"):
        load_videos(str(empty))
    with pytest.raises(FileNotFoundError, match="no videos at"):
        load_videos(str(tmp_path / "missing"))
    np.save(tmp_path / "one.npy", toy_videos(n=1)[0])  # a lone .npy holds several videos
    with pytest.raises(ValueError, match=r"one.npy of shape \(6, 8, 16, 3\) is ambiguous"):
        load_videos(str(tmp_path / "one.npy"))
    np.save(tmp_path / "frame.npy", toy_videos(n=1)[0, 0])
    with pytest.raises(ValueError, match=r"a .npy of videos must be \(N, T, H, W\) or \(N, T, H, W, C\)"):
        load_videos(str(tmp_path / "frame.npy"))


def test_splits_are_disjoint_and_seeded():
    v = toy_videos(n=20)
    parts = {s: VideoDataset(v, s, seed=3) for s in ("train", "valid", "test", "all")}
    assert [len(parts[s]) for s in ("train", "valid", "test", "all")] == [16, 2, 2, 20]
    keys = {s: {d.x[i].sum().item() for i in range(len(d))} for s, d in parts.items()}
    assert not keys["train"] & keys["valid"] and not keys["train"] & keys["test"]
    assert torch.equal(VideoDataset(v, "valid", seed=3).x, parts["valid"].x)
    assert not torch.equal(VideoDataset(v, "valid", seed=4).x, parts["valid"].x)
    assert parts["all"].frame_shape == (3, 8, 16) and parts["all"].u.shape == (20, 6, 0)
    with pytest.raises(ValueError, match="split must be one of"):
        VideoDataset(v, "everything")


@pytest.mark.parametrize("likelihood", ["bernoulli", "continuous_bernoulli", "gaussian", "gaussian_learned"])
@pytest.mark.parametrize("vae", ["conv", "mlp"])
def test_training_on_rgb_non_square_videos(likelihood, vae):
    v = toy_videos(n=8)
    if likelihood == "bernoulli":
        v = (v > 0).astype(np.uint8)  # binary colour frames
    train = VideoDataset(v.astype(bool) if likelihood == "bernoulli" else v, "all")
    c = config(epochs=1, frame_size=8, frame_width=16, channels=3, vae=vae, conv_filters=(8, 8),
               likelihood=likelihood, batch_size=4)  # fmt: skip
    assert c.frame_shape == (3, 8, 16)
    trainer = Trainer(c, progress=False)
    trainer.model.zero_grad()
    trainer.loss(train.x[:4], mask=torch.rand(4, 6) > 0.3).backward()
    missing = [n for n, p in trainer.model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == [] or missing == ["prior.dynamics.a0"], missing
    history = trainer.fit(train)
    assert math.isfinite(history[-1]["train_loss"])
    if likelihood == "gaussian_learned":
        assert trainer.model.pixel_log_var.shape == (3, 8, 16)


def test_likelihood_known_answers():
    logits = torch.tensor([-1.0, 0.3, 2.0])
    x = torch.tensor([0.2, 0.5, 0.9])
    lam = torch.sigmoid(logits)
    # continuous Bernoulli: x log lam + (1 - x) log(1 - lam) + log C(lam), C = 2 atanh(1 - 2 lam) / (1 - 2 lam)
    log_c = torch.log(2 * torch.atanh(1 - 2 * lam) / (1 - 2 * lam))
    expected = x * lam.log() + (1 - x) * (1 - lam).log() + log_c
    assert torch.allclose(frame_distribution(logits, "continuous_bernoulli").log_prob(x), expected, atol=1e-5)
    kvae = build_kvae(KVAEConfig(frame_size=4, vae="mlp", likelihood="gaussian_learned", pixel_var=0.1))
    assert torch.allclose(kvae.pixel_variance(), torch.full((4, 4), 0.1))
    with torch.no_grad():
        kvae.pixel_log_var.fill_(-50.0)
    assert torch.allclose(kvae.pixel_variance(), torch.full((4, 4), PIXEL_VAR_FLOOR))
    with pytest.raises(ConfigError, match="pixel_var must exceed the learned variance's floor"):
        KVAEConfig(likelihood="gaussian_learned", pixel_var=1e-5)
    with pytest.raises(ValueError, match=r"x must lie in \[0, 1\] for the continuous Bernoulli likelihood"):
        build_kvae(KVAEConfig(frame_size=4, vae="mlp", likelihood="continuous_bernoulli")).model(
            torch.full((1, 2, 4, 4), 3.0)
        )
    pyro.clear_param_store()
