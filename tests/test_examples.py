# SPDX-License-Identifier: Apache-2.0
"""The example scripts run end to end (tiny settings)."""

import json
import os
import subprocess
import sys

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
