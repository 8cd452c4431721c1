# SPDX-License-Identifier: Apache-2.0
"""Simulated environments and datasets."""

import math
import os

import numpy as np
import pytest
import torch

from pyro_kvae.data import ENVIRONMENTS, VideoDataset, generate, load, make_environment, simulate
from pyro_kvae.data.__main__ import main as cli_main

N = 40


def _inside_walls(env, pos, tol=None):
    """True where the ball lies inside the convex CCW walls. The default tolerance
    is one physics substep of travel at top speed: a frame can catch the ball
    mid-collision by at most that much."""
    if tol is None:
        tol = env.speed_max * env.dt / env.substeps
    v = np.asarray(env.walls())
    w = np.roll(v, -1, axis=0)
    edge = w - v
    normal = np.stack([-edge[:, 1], edge[:, 0]], -1) / np.linalg.norm(edge, axis=-1, keepdims=True)  # inward
    dist = ((pos[..., None, :] - v) * normal).sum(-1)  # (..., n_walls)
    return dist.min(-1) >= env.radius - tol


@pytest.mark.parametrize("name", ["box", "polygon"])
def test_ball_stays_inside_and_keeps_speed(name):
    env = make_environment(name)
    d = simulate(env, N, seed=0)
    assert _inside_walls(env, d["position"]).all()
    speed = np.linalg.norm(d["velocity"], axis=-1)
    assert np.abs(speed / speed[:, :1] - 1).max() < 1e-3
    assert ((speed[:, 0] >= env.speed_min) & (speed[:, 0] <= env.speed_max)).all()
    # the ball does bounce: some horizontal and vertical velocity changes sign
    flips = np.sign(d["velocity"][:, 1:]) != np.sign(d["velocity"][:, :-1])
    assert flips[..., 0].any() and flips[..., 1].any()


def test_pong_paddles_track_the_ball_at_limited_speed_and_can_miss():
    env = make_environment("pong")
    d = simulate(env, 300, seed=0)
    pos, paddles = d["position"], d["paddles"]
    step = np.abs(np.diff(paddles, axis=1))
    assert step.max() <= env.paddle_speed + 1e-3 and (step > env.paddle_speed - 1e-3).any()
    # the paddles move towards the ball's height at the start of the frame
    toward = np.sign(np.diff(paddles, axis=1)) == np.sign(pos[:, :-1, 1:2] - paddles[:, :-1])
    assert toward[step > 1e-3].all()
    # floor and roof hold the ball (a paddle can press it into one by < 1 px);
    # some balls get past a paddle and leave the frame
    assert (pos[..., 1] >= env.floor + env.radius - 1).all() and (pos[..., 1] <= env.roof - env.radius + 1).all()
    gone = (pos[..., 0] < -env.radius) | (pos[..., 0] > env.size + env.radius)
    assert 0 < gone.any(1).mean() < 0.5
    # a ball at a paddle's column bounces off it and keeps most of its speed (elasticity 0.99)
    flips = np.sign(d["velocity"][:, 1:, 0]) != np.sign(d["velocity"][:, :-1, 0])
    assert flips.any(1).mean() > 0.5
    frames = d["x"]
    assert (frames[..., 0].sum(-1) > 0).all() and (frames[..., 30].sum(-1) > 0).all()  # paddles drawn


def test_gravity_pulls_down():
    env = make_environment("box_gravity")
    d = simulate(env, N, seed=0)
    pos, vel = d["position"], d["velocity"]
    far = _inside_walls(env, pos, tol=-1.5)  # well away from every wall
    free = far[:, 1:] & far[:, :-1]
    dv = vel[:, 1:] - vel[:, :-1]
    assert free.sum() > 100
    # between frames away from the walls (a fast ball may still bounce in between
    # now and then), velocity changes by exactly (0, -g dt)
    ballistic = (np.abs(dv[..., 1] + env.gravity * env.dt) < 1e-3) & (np.abs(dv[..., 0]) < 1e-3)
    assert ballistic[free].mean() > 0.9
    assert _inside_walls(env, pos, tol=0.5).all()  # falling, the ball outruns speed_max: a wider tolerance


def test_pendulum_energy_and_controls():
    free = make_environment("pendulum", max_torque=0.0)
    d = simulate(free, N, seed=0)
    e = free.energy(d["angle"].astype(np.float64), d["angular_velocity"].astype(np.float64))
    assert np.abs(e - e[:, :1]).max() < 1e-3 * free.g * free.length
    assert (d["u"] == 0).all()

    env = make_environment("pendulum")
    d = simulate(env, N, seed=0)
    assert d["u"].shape == (N, 15, 1) and (d["u"][:, 0] == 0).all() and (np.abs(d["u"]) <= env.max_torque).all()
    e = env.energy(d["angle"].astype(np.float64), d["angular_velocity"].astype(np.float64))
    assert np.abs(e - e[:, :1]).max() > 1.0  # torques do work
    assert d["x"].shape == (N, 15, 16, 16)


@pytest.mark.parametrize("name", sorted(ENVIRONMENTS))
def test_frames_binary_with_ball_area(name):
    env = make_environment(name)
    d = simulate(env, N, seed=1)
    x = d["x"]
    assert x.dtype == np.uint8 and set(np.unique(x)) <= {0, 1}
    assert x.shape == (N, env.T, env.size, env.size)
    lit = x.sum((-1, -2))
    if name in ("box", "box_gravity", "polygon"):
        area = math.pi * env.radius**2
        assert (np.abs(lit - area) < 0.3 * area).all()
    assert (lit > 0).all()


def test_rendering_places_ball():
    env = make_environment("box")
    frame = env.render({"position": np.array([[[8.0, 24.0]]])})[0, 0]
    rows, cols = np.nonzero(frame)
    assert abs(cols.mean() + 0.5 - 8.0) < 0.5  # x -> column
    assert abs((32 - rows.mean() - 0.5) - 24.0) < 0.5  # y up -> row from the top


def test_same_seed_same_bytes(tmp_path):
    a = generate("box", (5, 2, 3), seed=7, progress=False)
    b = generate("box", (5, 2, 3), seed=7, progress=False)
    c = generate("box", (5, 2, 3), seed=8, progress=False)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k
    assert a["train/x"].tobytes() != c["train/x"].tobytes()
    # splits are disjoint streams; growing a split does not change its first sequences
    assert a["train/x"].tobytes() != a["test/x"][:3].tobytes()
    bigger = generate("box", (8, 2, 3), seed=7, progress=False)
    assert bigger["train/x"][:5].tobytes() == a["train/x"].tobytes()


def test_dataset_generates_caches_and_loads(tmp_path):
    path = str(tmp_path / "sub" / "pendulum.npz")
    ds = VideoDataset(path, "train", sizes=(6, 2, 3), seed=3)
    assert os.path.exists(path) and os.listdir(tmp_path / "sub") == ["pendulum.npz"]
    assert len(ds) == 6 and ds.x.shape == (6, 15, 16, 16) and ds.u.shape == (6, 15, 1)
    assert ds.config["env"] == "pendulum" and ds.config["sizes"] == [6, 2, 3]
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["x"].shape == (4, 15, 16, 16) and batch["x"].dtype == torch.float32
    assert batch["angle"].shape == (4, 15)
    mtime = os.path.getmtime(path)
    test = VideoDataset(path, "test")  # cached: not regenerated
    assert len(test) == 3 and os.path.getmtime(path) == mtime
    with pytest.raises(ValueError, match="split must be one of"):
        VideoDataset(path, "training")


def test_bad_environment_name():
    with pytest.raises(ValueError, match="env must be one of"):
        make_environment("boxx")


def test_cli(tmp_path, capsys):
    out = str(tmp_path / "g.npz")
    cli_main(["box_gravity", "--out", out, "--sizes", "3", "1", "2", "--T", "7"])
    data = load(out)
    assert data["train/x"].shape == (3, 7, 32, 32) and data["test/x"].shape == (2, 7, 32, 32)
    assert "written to" in capsys.readouterr().out
