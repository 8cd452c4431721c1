# SPDX-License-Identifier: Apache-2.0
"""The example scripts run end to end (tiny settings)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from pyro_kvae.data import generate, save

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(script, *args, cwd):
    cmd = [sys.executable, os.path.join(ROOT, "examples", script), *args]
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_kalman_demo(tmp_path):
    stdout = run("kalman_demo.py", "--out", str(tmp_path), cwd=tmp_path)
    assert "figure written to" in stdout and os.path.exists(tmp_path / "kalman_demo.png")


@pytest.mark.parametrize("resume", [False, True])
def test_bouncing_ball_example(tmp_path, resume):
    data = tmp_path / "box.npz"
    save(str(data), generate("box", (24, 8, 8), seed=0, progress=False))
    args = ["--data", str(data), "--run-dir", str(tmp_path / "run"), "--n-train", "24", "--n-test", "8"]
    stdout = run("bouncing_ball.py", *args, "--epochs", "1", "--batch-size", "8", cwd=tmp_path)
    assert "outputs in" in stdout
    if resume:
        stdout = run("bouncing_ball.py", *args, "--epochs", "2", "--batch-size", "8", "--resume", cwd=tmp_path)
        assert "resumed" in stdout
    metrics = json.load(open(tmp_path / "run" / "metrics.json"))
    assert metrics["epochs"] == (2 if resume else 1)
    for name in (
        "checkpoint.pt",
        "config.json",
        "imputation.png",
        "imputation.gif",
        "generation.gif",
        "trajectories.png",
    ):
        assert os.path.exists(tmp_path / "run" / name), name


@pytest.mark.parametrize("script, env", [("pendulum.py", "pendulum"), ("pong.py", "pong")])
def test_other_environment_examples(tmp_path, script, env):
    data = tmp_path / f"{env}.npz"
    save(str(data), generate(env, (16, 4, 4), seed=0, progress=False))
    run_dir = tmp_path / "run"
    args = ["--data", str(data), "--run-dir", str(run_dir), "--epochs", "1", "--batch-size", "8"]
    stdout = run(script, *args, cwd=tmp_path)
    assert "outputs in" in stdout
    config = json.load(open(run_dir / "config.json"))
    if env == "pendulum":
        assert config["dim_u"] == 1 and config["frame_size"] == 16 and config["K"] == 2
    assert os.path.exists(run_dir / "generation.gif")


def test_own_videos_example(tmp_path):
    """--data pointing to a folder of RGB, non-square videos: the frame shape comes from the data."""
    from test_sources import toy_videos

    iio = pytest.importorskip("imageio.v3", reason="imageio is in the dev extras")
    folder = tmp_path / "videos"
    folder.mkdir()
    for i, v in enumerate(toy_videos(n=12, T=6)):
        if i % 2:
            np.save(folder / f"{i:02d}.npy", v)
        else:
            iio.imwrite(folder / f"{i:02d}.gif", v, duration=100, loop=0)
    run_dir = tmp_path / "run"
    args = ["--data", str(folder), "--run-dir", str(run_dir), "--epochs", "1", "--batch-size", "4"]
    stdout = run(
        "bouncing_ball.py", *args, "--likelihood", "continuous_bernoulli", "--conv-filters", "8", "8", cwd=tmp_path
    )
    assert "outputs in" in stdout
    config = json.load(open(run_dir / "config.json"))
    assert (config["channels"], config["frame_size"], config["frame_width"]) == (3, 8, 16)
    assert os.path.exists(run_dir / "imputation.png") and os.path.exists(run_dir / "generation.gif")
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "bouncing_ball.py"), *args, "--run-dir", str(tmp_path / "r2"),
         "--frame-size", "32"], capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert out.returncode != 0 and "the frame flags give frames of shape (32, 32)" in out.stderr
