# SPDX-License-Identifier: Apache-2.0
"""
No silent wrong answers: each case here once trained on, returned a wrong number,
or failed with an error that named neither the file nor the fix (issue 10).
The float32 Kalman cases live in tests/test_sqrt_kalman.py.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pyro
import pytest
import torch
from test_train import SMALL_BOX, config

from pyro_kvae.config import ConfigError, KVAEConfig
from pyro_kvae.data import VideoDataset, generate, save
from pyro_kvae.files import write_json, write_jsonl
from pyro_kvae.train import CHECKPOINT, METRICS, Trainer, load_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "examples"))
import bouncing_ball  # noqa: E402


def log_epochs(run_dir):
    with open(os.path.join(run_dir, METRICS)) as f:
        return [json.loads(line)["epoch"] for line in f]


def history(state):
    return state["pyro_kvae"]["history"]


def temporaries(run_dir):
    return [n for n in os.listdir(run_dir) if n.endswith(".tmp")]


# ---------------------------------------------------------------- flags


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--n-train", "-5"], "argument --n-train: must be a positive int, got -5"),
        (["--n-train", "0"], "argument --n-train: must be a positive int, got 0"),
        (["--n-test", "0"], "argument --n-test: must be a positive int"),
        (["--learn-noise", "ture"], "argument --learn-noise: expected one of"),
        (["--drop-prob", "2"], r"argument --drop-prob: must be in \(0, 1\], got 2"),
        (["--drop-prob", "0"], r"argument --drop-prob: must be in \(0, 1\], got 0"),
        (["--lr", "-1"], "argument --lr: lr must be positive, got -1"),
        (["--dim-a", "0"], "argument --dim-a: dim_a must be at least 1"),
        (["--train-miss-prob", "1"], r"argument --train-miss-prob: train_miss_prob must be in \[0, 1\)"),
        (["--conv-filters", "8", "0"], "argument --conv-filters: conv_filters must be one or more positive ints"),
        (["--device", "gpu7"], "argument --device: device must be a torch device"),
        (["--resume", "--overwrite"], "--resume and --overwrite exclude each other"),
    ],
)
def test_bad_flags_are_refused_before_data(tmp_path, capsys, flags, message):
    data = tmp_path / "never.npz"
    with pytest.raises(SystemExit) as e:
        bouncing_ball.parse_args(["--data", str(data), "--run-dir", str(tmp_path / "run"), *flags])
    assert e.value.code == 2
    import re

    assert re.search(message, capsys.readouterr().err)
    assert not data.exists() and not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_device_without_cuda(tmp_path, capsys):
    with pytest.raises(SystemExit):
        bouncing_ball.parse_args(["--device", "cuda"])
    assert "argument --device: device is 'cuda' but torch.cuda.is_available() is False" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="torch.cuda.is_available"):
        Trainer(KVAEConfig(device="cuda"))


def test_config_refuses_wrong_types():
    with pytest.raises(ConfigError, match="learn_noise must be true or false, got 'ture'"):
        KVAEConfig(learn_noise="ture")
    with pytest.raises(ConfigError, match="epochs must be an int, got 2.5"):
        KVAEConfig(epochs=2.5)
    with pytest.raises(ConfigError, match="Q must be finite"):
        KVAEConfig(Q=float("nan"))


def test_explicit_n_train_beyond_the_file(tmp_path, data_path):
    args = bouncing_ball.parse_args(
        ["--data", data_path, "--run-dir", str(tmp_path / "run"), "--n-train", "99999", "--frame-size", "16"]
    )
    with pytest.raises(SystemExit, match="--n-train 99999 exceeds the 32 train sequences"):
        bouncing_ball.load_data(args)


def test_take_refuses_non_positive(data_path):
    train = VideoDataset(data_path, "train")
    for n in (-5, 0):
        with pytest.raises(ValueError, match="n must be a positive int"):
            train.take(n)


# ---------------------------------------------------------------- resume


def example_args(tmp_path, data_path, *flags):
    base = ["--data", data_path, "--run-dir", str(tmp_path / "run"), "--frame-size", "16", "--vae", "mlp"]
    return bouncing_ball.parse_args(base + ["--mlp-hidden", "32", "--batch-size", "16", *flags])


def test_resume_with_changed_settings_refuses_and_lists_them(tmp_path, data_path, capsys):
    args = example_args(tmp_path, data_path, "--epochs", "1")
    trainer = bouncing_ball.make_trainer(args)
    trainer.fit(VideoDataset(data_path, "train"))
    config_json = open(tmp_path / "run" / "config.json").read()

    other = str(tmp_path / "other.npz")
    changed = ["--dim-a", "3", "--mlp-hidden", "8", "8", "--lr", "0.5", "--batch-size", "7", "--data", other]
    args = example_args(tmp_path, data_path, "--resume", *changed)
    with pytest.raises(SystemExit) as e:
        bouncing_ball.make_trainer(args)
    message = str(e.value.code)
    for expected in (
        "dim_a: the run has 2, asked for 3",
        "mlp_hidden: the run has (32,), asked for (8, 8)",
        "lr: the run has 0.007, asked for 0.5",
        "batch_size: the run has 16, asked for 7",
        "data: the run has",
    ):
        assert expected in message, message
    assert "another run directory" in message
    assert open(tmp_path / "run" / "config.json").read() == config_json  # untouched
    assert not os.path.exists(other)  # nothing generated

    # epochs may change: applied and said
    args = example_args(tmp_path, data_path, "--resume", "--epochs", "2")
    trainer = bouncing_ball.make_trainer(args)
    assert trainer.config.epochs == 2 and trainer.epoch == 1
    assert "epochs: 1 -> 2 (changed on resume)" in capsys.readouterr().out
    assert json.load(open(tmp_path / "run" / "config.json"))["epochs"] == 2
    # without flags the run's own settings come back, its data path included
    args = bouncing_ball.parse_args(["--run-dir", str(tmp_path / "run"), "--resume"])
    trainer = bouncing_ball.make_trainer(args)
    assert trainer.config.frame_size == 16 and trainer.config.vae == "mlp" and args.data == data_path


def test_new_run_never_replaces_a_checkpoint(tmp_path, data_path):
    run = str(tmp_path / "run")
    Trainer(config(epochs=1), run_dir=run, progress=False).fit(VideoDataset(data_path, "train"))
    with pytest.raises(FileExistsError, match="already holds a checkpoint: resume it"):
        Trainer(config(epochs=1), run_dir=run, progress=False)
    with pytest.raises(SystemExit, match="already holds a checkpoint"):
        bouncing_ball.make_trainer(example_args(tmp_path, data_path))
    fresh = Trainer(config(epochs=1), run_dir=run, progress=False, overwrite=True)
    assert fresh.epoch == 0 and log_epochs(run) == []


# ---------------------------------------------------------------- checkpoints and logs


def run_worker(run_dir, data, epochs):
    cmd = [sys.executable, os.path.join(ROOT, "tests", "train_worker.py"), run_dir, data, str(epochs)]
    # this process's thread count (pytest-xdist workers share the cores), so that the worker's
    # training is bitwise the same as a straight run here
    env = {**os.environ, "TRAIN_WORKER_THREADS": str(torch.get_num_threads())}
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)  # fmt: skip
    line = proc.stdout.readline()
    assert line.startswith("ready"), proc.stderr.read()
    return proc, int(line.split()[1])


def check_run_dir(run_dir, exact):
    """The log holds each epoch once, in order, and only epochs the checkpoint holds (``exact``:
    all of them, with the checkpoint's values); the checkpoint is readable."""
    epochs = log_epochs(run_dir)
    assert epochs == list(range(1, len(epochs) + 1)), epochs
    if not os.path.exists(os.path.join(run_dir, CHECKPOINT)):
        assert epochs == []
        return 0
    state = load_checkpoint(os.path.join(run_dir, CHECKPOINT))
    done = len(history(state))
    assert [h["epoch"] for h in history(state)] == list(range(1, done + 1)) and state["epoch"] == done - 1
    assert len(epochs) <= done
    if exact:
        rows = [json.loads(line) for line in open(os.path.join(run_dir, METRICS))]
        assert rows == history(state)
    return done


def test_kill_at_random_moments_never_breaks_the_run(tmp_path, data_path):
    """kill -9 a real training process at random moments (10 times), checking checkpoint, log and
    run dir after each kill and after each restart; then finish and compare with a straight run."""
    run = str(tmp_path / "run")
    rng = random.Random(0)
    progress, epoch_seconds = [], None
    for _ in range(10):
        proc, start = run_worker(run, data_path, 1000)
        assert temporaries(run) == []  # what the last kill left is gone
        assert check_run_dir(run, exact=True) == start
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().startswith("training"), proc.stderr.read()
        if epoch_seconds is None:  # the first run: time one epoch on this machine as it is loaded now
            t0 = time.perf_counter()
            assert proc.stdout.readline().startswith("epoch 1"), proc.stderr.read()
            epoch_seconds = time.perf_counter() - t0
        time.sleep(rng.uniform(0.0, 3 * epoch_seconds))  # anywhere in the next few epochs
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        progress.append(check_run_dir(run, exact=False))
        assert len(temporaries(run)) <= 1
    assert progress[-1] > 0 and progress == sorted(progress)
    # finish a few epochs past the last kill, uninterrupted, and compare with one straight run
    epochs = progress[-1] + 2
    proc, _ = run_worker(run, data_path, epochs)
    out, err = proc.communicate("go\n", timeout=300)
    assert proc.returncode == 0 and "done" in out, err
    assert temporaries(run) == [] and check_run_dir(run, exact=True) == epochs

    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from train_worker import TINY

    straight = Trainer(KVAEConfig(epochs=epochs, **TINY), progress=False)
    straight.fit(VideoDataset(data_path, "train"))
    resumed = load_checkpoint(os.path.join(run, CHECKPOINT))
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, resumed["state_dict"]["kvae." + k]), k
    assert [h["train_loss"] for h in straight.history] == [h["train_loss"] for h in history(resumed)]


def test_kill_between_checkpoint_and_log_row(tmp_path, data_path, monkeypatch):
    """The moment the old order lost: the checkpoint is written, the process dies before the row."""
    import pyro_kvae.train as train_module

    run = str(tmp_path / "run")
    train = VideoDataset(data_path, "train")
    Trainer(config(epochs=1), run_dir=run, progress=False).fit(train)

    class Killed(Exception):
        pass

    def die(*args):
        raise Killed

    monkeypatch.setattr(train_module, "append_jsonl", die)
    trainer = Trainer.resume(run, changes={"epochs": 2}, progress=False)
    with pytest.raises(Killed):
        trainer.fit(train)
    assert log_epochs(run) == [1] and len(history(load_checkpoint(os.path.join(run, CHECKPOINT)))) == 2
    open(os.path.join(run, ".checkpoint.pt.x1y2.tmp"), "wb").write(b"half a checkpoint")  # as a kill leaves it
    monkeypatch.undo()
    Trainer.resume(run, progress=False)
    assert log_epochs(run) == [1, 2] and temporaries(run) == []


def test_unwritable_checkpoint_stops_before_the_log(tmp_path, data_path, monkeypatch):
    import pyro_kvae.train as train_module

    run = str(tmp_path / "run")
    trainer = Trainer(config(epochs=3), run_dir=run, progress=False)
    saves = []

    def failing_save(obj, path):
        saves.append(path)
        if len(saves) == 2:
            raise OSError(28, "No space left on device")
        torch.save(obj, path)

    monkeypatch.setattr(train_module, "atomic_save", failing_save)
    with pytest.raises(OSError, match="No space left"):
        trainer.fit(VideoDataset(data_path, "train"))
    assert log_epochs(run) == [1] and len(history(load_checkpoint(os.path.join(run, CHECKPOINT)))) == 1


def test_unwritable_run_dir_fails_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OSError, match="cannot write to the run directory"):
        Trainer(config(epochs=1), run_dir=str(blocker / "run"), progress=False)


def test_diverged_training_writes_no_nan(tmp_path, data_path, monkeypatch):
    run = str(tmp_path / "run")
    trainer = Trainer(config(epochs=2), run_dir=run, progress=False)
    trainer.fit(VideoDataset(data_path, "train"), epochs=1)
    nan = torch.tensor(float("nan"), requires_grad=True)
    monkeypatch.setattr(trainer.plan.elbo, "differentiable_loss", lambda *args: nan)
    with pytest.raises(FloatingPointError, match="training diverged in epoch 2.*checkpoint of epoch 1 .*--lr"):
        trainer.fit(VideoDataset(data_path, "train"))
    assert log_epochs(run) == [1] and len(history(load_checkpoint(os.path.join(run, CHECKPOINT)))) == 1
    with pytest.raises(ValueError, match=r"pixel_error is nan; refusing"):
        write_json(str(tmp_path / "m.json"), {"pixel_error": float("nan")})
    with pytest.raises(ValueError, match=r"\[0\].elbo is inf"):
        write_jsonl(str(tmp_path / "m.jsonl"), [{"elbo": float("inf")}])


@pytest.mark.parametrize("content", [b"", b"\x00garbage" * 10, "truncated"])
def test_damaged_checkpoint(tmp_path, data_path, content):
    run = tmp_path / "run"
    Trainer(config(epochs=1), run_dir=str(run), progress=False).fit(VideoDataset(data_path, "train"))
    path = run / CHECKPOINT
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if content == "truncated" else content)
    with pytest.raises(ValueError, match=rf"{path} is not a readable pyro-kvae checkpoint .*delete it"):
        Trainer.resume(str(run))
    torch.save({"weights": torch.zeros(2)}, str(path))
    with pytest.raises(ValueError, match=r"is not a pyro-kvae checkpoint: it lacks \['state_dict'"):
        Trainer.resume(str(run))


@pytest.mark.parametrize("kind", ["empty", "random", "truncated", "pickled", "no config"])
def test_damaged_dataset(tmp_path, data_path, kind):
    path = tmp_path / "box.npz"
    good = open(data_path, "rb").read()
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(5000))
    elif kind == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "pickled":
        np.savez(str(path), config=np.array([{"env": "box"}], dtype=object))
    else:
        np.savez(str(path), **{"train/x": np.zeros((2, 3, 4, 4), np.uint8)})
    with pytest.raises(ValueError, match=rf"{path} is not a (readable )?(pyro-kvae )?dataset.*(Delete it|delete it)"):
        VideoDataset(str(path), "train")


# ---------------------------------------------------------------- frames


def test_frame_checks_stay_on_without_validation(data_path):
    trainer = Trainer(config(epochs=1), progress=False)
    x = VideoDataset(data_path, "train").x[:4]
    pyro.enable_validation(False)
    try:
        with pytest.raises(ValueError, match="x must be binary .* found 255: scale 8-bit frames by 1/255"):
            trainer.loss(255 * x)
        with pytest.raises(ValueError, match=r"mask must be a bool tensor of shape \(4, 8\)"):
            trainer.loss(x, mask=torch.ones(4, 7, dtype=torch.bool))
        with pytest.raises(ValueError, match="x must be finite"):
            trainer.loss(x.masked_fill(x > 0, float("nan")))
        with pytest.raises(ValueError, match=r"x must have shape \(batch, T, 16, 16\)"):
            trainer.loss(x[..., :8])
    finally:
        pyro.enable_validation(True)


def test_grey_and_float64_frames(data_path):
    trainer = Trainer(config(epochs=1), progress=False)
    x = VideoDataset(data_path, "train").x[:4]
    with pytest.raises(ValueError, match=r"binary \(0 or 1\) for the Bernoulli likelihood, found 0.5.*--likelihood"):
        trainer.loss(0.5 * x)
    pyro.set_rng_seed(1)
    loss32 = trainer.loss(x)
    pyro.set_rng_seed(1)
    loss64 = trainer.loss(x.double())  # cast to the model's dtype
    assert loss64.dtype == torch.float32 and torch.allclose(loss32, loss64)
    gaussian = Trainer(config(epochs=1, likelihood="gaussian"), progress=False)
    assert torch.isfinite(gaussian.loss(0.5 * x))  # grey frames are fine for a Gaussian likelihood


def test_empty_and_single_frame_data(tmp_path, capsys):
    path = str(tmp_path / "empty.npz")
    save(path, generate("box", (0, 2, 2), seed=0, progress=False, **SMALL_BOX))
    with pytest.raises(ValueError, match=r"the training data holds no sequences \('train' split of .*empty.npz\)"):
        Trainer(config(epochs=1), progress=False).fit(VideoDataset(path, "train"))

    path = str(tmp_path / "t1.npz")
    save(path, generate("box", (8, 2, 2), seed=0, progress=False, **{**SMALL_BOX, "T": 1}))
    trainer = Trainer(config(epochs=1, batch_size=4), progress=False)  # the model itself handles T = 1
    history = trainer.fit(VideoDataset(path, "train"), VideoDataset(path, "valid"))
    assert np.isfinite(history[-1]["train_loss"]) and np.isfinite(history[-1]["valid_elbo"])
    args = bouncing_ball.parse_args(["--data", path, "--run-dir", str(tmp_path / "run"), "--frame-size", "16"])
    with pytest.raises(SystemExit, match="holds sequences of T=1 frames; .* needs T >= 5"):
        bouncing_ball.load_data(args)


def test_training_data_checked_once_before_training(data_path):
    """fit checks the whole dataset up front (the steps then skip the per-batch check)."""
    train = VideoDataset(data_path, "train")
    train.tensors["x"] = 255 * train.x
    trainer = Trainer(config(epochs=1), progress=False)
    with pytest.raises(ValueError, match=r"the training data \(.*box16.npz\): x must be binary .* found 255"):
        trainer.fit(train)
    assert trainer.model.check_frames and trainer.epoch == 0
