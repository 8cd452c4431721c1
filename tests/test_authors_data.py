# SPDX-License-Identifier: Apache-2.0
"""The KVAE authors' datasets as a data source, runs that move with the repository, trained models."""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from pyro_kvae.data import VideoDataset, load_videos
from pyro_kvae.data.__main__ import main as data_main
from pyro_kvae.data.datasets import from_videos
from pyro_kvae.train import CHECKPOINT, Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AUTHORS = os.path.join(ROOT, "datasets", "authors")


def authors_like(path, n, T=6, size=8, seed=0):
    """A file laid out as the authors' (key ``images`` (n, T, H, W) uint8 with shades, key ``state``)."""
    rng = np.random.default_rng(seed)
    images = rng.choice(np.array([0, 0, 0, 44, 230, 255], np.uint8), size=(n, T, size, size))
    state = rng.uniform(0, size, size=(n, T, 4)).astype(np.float32)  # positions inside the frame
    np.savez(path, images=images, state=state)
    return images


def test_npz_of_videos_and_the_binarisation_rule(tmp_path):
    images = authors_like(tmp_path / "v.npz", 5)
    scaled = load_videos(str(tmp_path / "v.npz"))
    assert scaled.shape == (5, 6, 8, 8) and scaled.dtype == np.float32
    np.testing.assert_allclose(scaled, images / 255.0, rtol=1e-6)
    binary = load_videos(str(tmp_path / "v.npz"), binarize=0.0)  # the authors' images > 0
    assert np.array_equal(binary, (images > 0).astype(np.float32))
    assert np.array_equal(load_videos(str(tmp_path / "v.npz"), binarize=0.5), (images > 127.5).astype(np.float32))
    with pytest.raises(ValueError, match=r"binarize must be a threshold in \[0, 1\)"):
        load_videos(str(tmp_path / "v.npz"), binarize=1.0)
    ds = VideoDataset(str(tmp_path / "v.npz"), "all", binarize=0.0)
    assert torch.equal(ds.x, torch.from_numpy((images > 0).astype(np.float32)))


def test_real_authors_files_read_as_their_readme_says():
    x = load_videos(os.path.join(AUTHORS, "box_test.npz"), binarize=0.0)
    assert x.shape == (1000, 20, 32, 32) and set(np.unique(x)) == {0.0, 1.0}
    walls = x[:, :, 2, 2:30].mean()  # the top wall, inset 2 px, is lit in every frame
    assert walls == 1.0


def test_dataset_from_separate_train_and_test_files(tmp_path):
    train = authors_like(tmp_path / "box_train.npz", 7, seed=1)
    test = authors_like(tmp_path / "box_test.npz", 4, seed=2)
    data = from_videos(str(tmp_path / "box_train.npz"), str(tmp_path / "box_test.npz"), n_valid=3, binarize=0.0)
    assert np.array_equal(data["train/x"], train > 0) and np.array_equal(data["test/x"], test > 0)
    assert np.array_equal(data["valid/x"], test[:3] > 0)
    assert json.loads(str(data["config"]))["sizes"] == [7, 3, 4]
    with pytest.raises(ValueError, match=r"n_valid must be an int in \[0, 4\]"):
        from_videos(str(tmp_path / "box_train.npz"), str(tmp_path / "box_test.npz"), n_valid=5)
    out = tmp_path / "authors_box.npz"
    data_main(["box", "--authors", str(tmp_path), "--n-valid", "2", "--out", str(out)])
    ds = VideoDataset(str(out), "valid")
    assert ds.x.shape == (2, 6, 8, 8) and torch.equal(ds.x, torch.from_numpy((test[:2] > 0).astype(np.float32)))
    with pytest.raises(SystemExit):
        data_main(["polygon", "--authors", str(tmp_path)])  # no polygon files there


def test_bouncing_ball_with_separate_test_file(tmp_path):
    authors_like(tmp_path / "train.npz", 20, T=6, size=16, seed=3)
    authors_like(tmp_path / "test.npz", 6, T=6, size=16, seed=4)
    run_dir = tmp_path / "run"
    cmd = [sys.executable, os.path.join(ROOT, "examples", "bouncing_ball.py"), "--data", str(tmp_path / "train.npz"),
           "--test-data", str(tmp_path / "test.npz"), "--binarize", "0", "--epochs", "1", "--batch-size", "4",
           "--conv-filters", "4", "4", "--run-dir", str(run_dir)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "data: 18 train, 2 valid, 6 test sequences" in out.stdout
    assert "litlogger" not in out.stdout + out.stderr  # no advertising from Lightning
    config = json.load(open(run_dir / "config.json"))
    assert config["binarize"] == 0.0 and config["test_data"].endswith("test.npz")


def test_committed_state_resumes_bit_identical_in_a_fresh_directory(tmp_path):
    """What experiments/ commits of a run (all but logs/ and temporaries), copied elsewhere, continues it exactly."""
    from test_train import SMALL_BOX, config, params

    from pyro_kvae.data import generate, save

    save(str(tmp_path / "d.npz"), generate("box", (32, 0, 0), seed=0, progress=False, **{**SMALL_BOX, "T": 6}))
    train = VideoDataset(str(tmp_path / "d.npz"), "train")
    straight = Trainer(config(epochs=2, train_miss_prob=0.3), progress=False)
    straight.fit(train)
    first = Trainer(config(epochs=2, train_miss_prob=0.3), run_dir=str(tmp_path / "a"), progress=False)
    first.fit(train, epochs=1)
    committed = tmp_path / "clone" / "run"
    shutil.copytree(tmp_path / "a", committed, ignore=shutil.ignore_patterns("logs", "*.tmp"))
    shutil.rmtree(tmp_path / "a")
    resumed = Trainer.resume(str(committed), progress=False)
    assert resumed.epoch == 1
    resumed.fit(train)
    a, b = params(straight), params(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["train_loss"] for h in straight.history] == [h["train_loss"] for h in resumed.history]
    size = os.path.getsize(committed / CHECKPOINT)
    n = sum(v.numel() for v in resumed.model.state_dict().values())
    assert size < 4 * n * 3 + 100_000  # float32 weights and Adam's two moments, no other copy


@pytest.mark.parametrize("name", ["box", "polygon", "box_gravity"])
def test_pretrained_model_imputes_the_authors_test_sequences(name):
    from pyro_kvae import pretrained
    from pyro_kvae.imputation import impute, pixel_error
    from pyro_kvae.train import random_mask

    kvae = pretrained.load(name)
    assert not kvae.training and next(kvae.parameters()).dtype == torch.float32
    info = pretrained.info(name)
    assert info["config"]["conv_filters"] == [32, 32, 32] and "epochs" in info["training"]
    x = torch.from_numpy(load_videos(os.path.join(AUTHORS, f"{name}_test.npz"), binarize=0.0)[:16])
    mask = random_mask(x.shape[:2], 0.5, 4, torch.Generator().manual_seed(0))
    errors = {smooth: pixel_error(impute(kvae, x, mask, smooth=smooth).x, x, mask).item() for smooth in (True, False)}
    blank = pixel_error(torch.zeros_like(x), x, mask).item()
    print(name, errors, blank)
    assert errors[True] < errors[False] < blank


def test_pretrained_unknown_name():
    from pyro_kvae import pretrained

    assert {"box", "polygon", "box_gravity"} <= set(pretrained.names())
    message = f"no pretrained model called 'ball'; the names are {pretrained.names()}"
    with pytest.raises(ValueError, match=re.escape(message)):
        pretrained.load("ball")
    with pytest.raises(TypeError, match="name must be a str"):
        pretrained.load(3)


def test_pretrained_gravity_is_box_gravity(tmp_path, monkeypatch):
    import shutil

    from pyro_kvae import pretrained

    for suffix in (".json", ".pt"):  # the box's files under the name of the box with gravity
        shutil.copy(os.path.join(pretrained.HERE, "box" + suffix), tmp_path / f"box_gravity{suffix}")
    monkeypatch.setattr(pretrained, "HERE", str(tmp_path))
    assert pretrained.names() == ("box_gravity",)
    assert pretrained.info("gravity") == pretrained.info("box_gravity")
    a, b = pretrained.load("gravity").state_dict(), pretrained.load("box_gravity").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="no pretrained model called 'box'"):
        pretrained.load("box")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_pretrained_on_cuda():
    from pyro_kvae import pretrained
    from pyro_kvae.imputation import impute

    kvae = pretrained.load("box", device="cuda")
    x = torch.from_numpy(load_videos(os.path.join(AUTHORS, "box_test.npz"), binarize=0.0)[:4]).cuda()
    assert impute(kvae, x).x.is_cuda


def test_paper_summary_puts_the_papers_numbers_beside_ours():
    from pyro_kvae.experiments.report import paper_summary

    rows = [{"experiment": "missing_at_random", "setting": 0.5, "method": "KVAE smoothing", "pixel_error": 0.01},
            {"experiment": "missing_in_middle", "setting": 9, "method": "AE-RNN", "pixel_error": 0.02}]  # fmt: skip
    table = paper_summary({"box": {"env": "box", "rows": rows}, "polygon": {"env": "polygon", "rows": rows}})
    lines = table.splitlines()
    assert lines[0] == "| environment | method | p = 0.5 | p = 0.8 | gap 5 | gap 9 |"
    assert "| box | KVAE smoothing | 0.0100 / 0.0075 | n/a / 0.0129 | n/a / 0.0098 | n/a / 0.0148 |" in lines
    assert "| box | AE-RNN | n/a / 0.0096 | n/a / 0.0172 | n/a / 0.0148 | 0.0200 / 0.0200 |" in lines
    assert "| polygon | KVAE smoothing | 0.0100 | n/a | n/a | n/a |" in lines  # no paper numbers for polygon


def test_authors_dataset_carries_positions_and_its_sources_checksums(tmp_path):
    from pyro_kvae.data.datasets import built_from, from_authors, save

    authors_like(tmp_path / "box_train.npz", 7, seed=1)
    images = authors_like(tmp_path / "box_test.npz", 4, seed=2)
    state = np.load(tmp_path / "box_test.npz")["state"]
    state[1, 2, 1] = -3.0  # the ball has fallen through the floor: out of the 8 x 8 frame
    np.savez(tmp_path / "box_test.npz", images=images, state=state)
    files = [str(tmp_path / "box_train.npz"), str(tmp_path / "box_test.npz")]
    out = str(tmp_path / "authors_box.npz")
    save(out, from_authors("box", str(tmp_path), n_valid=2))
    position = VideoDataset(out, "valid").tensors["position"]
    # state[:, t] is recorded after the step that follows frame t: frame t's position is state[:, t - 1]
    assert position[1, 3].isnan().all()
    position[1, 3] = torch.from_numpy(state[1, 2, :2])
    assert torch.equal(position[:, 1:], torch.from_numpy(state[:2, :-1, :2]))
    assert position[:, 0].isnan().all()
    assert built_from(out, *files)
    authors_like(tmp_path / "box_test.npz", 4, seed=3)  # other bytes under the same name
    assert not built_from(out, *files)


def test_authors_positions_are_where_the_ball_is_drawn():
    """On the authors' own box test file: the centre of the lit pixels inside the walls is an
    affine function of the position given for the same frame (R^2 > 0.99); one frame off it is not."""
    from pyro_kvae.data.datasets import ball_centre, from_authors
    from pyro_kvae.evaluation import affine_r2

    data = from_authors("box", AUTHORS, n_valid=100)
    centre = torch.from_numpy(ball_centre(data["valid/x"], (slice(3, -3), slice(3, -3)))).double()  # no walls
    position = torch.from_numpy(data["valid/position"]).double()
    assert (affine_r2(centre, position) > 0.99).all()  # frame 0, whose position is NaN, left out
    assert (affine_r2(centre[:, 2:], position[:, 1:-1]) < 0.95).all()  # one frame off


def test_ball_centre_is_the_centre_of_the_lit_pixels_with_y_up():
    from pyro_kvae.data.datasets import ball_centre

    x = np.zeros((2, 8, 8), np.uint8)
    x[0, 0, 5] = x[0, 1, 5] = 1  # column 5, rows 0 and 1 (the top of the frame)
    x[1, :, 0] = 1  # a paddle in column 0, left out by the window
    centre = ball_centre(x, (slice(None), slice(1, None)))
    np.testing.assert_allclose(centre[0], [5.5, 7.0])
    assert np.isnan(centre[1]).all()  # nothing lit inside the window


def test_authors_pong_positions_are_estimated_from_the_frames():
    """The authors' pong files have no state: the positions are the ball's centre in each frame,
    finite everywhere (the ball never leaves their frames) and moving less than 4 pixels a frame,
    as the ball does (never jumping to a paddle or the floor)."""
    from pyro_kvae.data.datasets import from_authors

    data = from_authors("pong", AUTHORS)
    assert json.loads(str(data["config"]))["position"] == "estimated from the frames"
    for split in ("train", "valid", "test"):
        position = data[f"{split}/position"]
        assert position.shape == data[f"{split}/x"].shape[:2] + (2,) and np.isfinite(position).all()
        assert ((position > 2) & (position < 30)).all()
        assert np.linalg.norm(np.diff(position, axis=1), axis=-1).max() < 4


def test_authors_gravity_positions_are_unknown_where_the_ball_has_left_the_frame():
    """The authors' box_gravity test file has sequences where the ball falls through the floor:
    exactly the frames that show nothing but the walls get no position."""
    from pyro_kvae.data.datasets import from_authors

    data = from_authors("box_gravity", AUTHORS)
    x = torch.from_numpy(data["test/x"]) > 0
    walls = x.flatten(0, 1).float().mean(0) > 0.999  # lit in (nearly) every frame
    ball = (x & ~walls).sum((-1, -2))  # (N, T) the ball's pixels
    unknown = torch.from_numpy(data["test/position"]).isnan().any(-1)
    assert unknown[:, 0].all()
    assert 0 < unknown[:, 1:].sum() < 0.01 * unknown[:, 1:].numel()
    assert torch.equal(unknown[:, 1:], ball[:, 1:] == 0)


def test_a_cached_authors_dataset_of_another_version_is_rebuilt(tmp_path, capsys):
    from pyro_kvae.data.datasets import AUTHORS_FORMAT, authors_dataset, from_authors, save

    authors_like(tmp_path / "box_train.npz", 7, seed=1)
    authors_like(tmp_path / "box_test.npz", 501, seed=2)  # authors_dataset keeps 500 for validation
    out = str(tmp_path / "authors_box.npz")
    old = from_authors("box", str(tmp_path))
    config = json.loads(str(old["config"]))
    del config["authors_format"]  # as written before positions were aligned with the frames
    save(out, {**old, "config": np.array(json.dumps(config))})
    authors_dataset("box", str(tmp_path), out)
    assert "rebuilding it" in capsys.readouterr().out
    assert json.loads(str(np.load(out)["config"]))["authors_format"] == AUTHORS_FORMAT
    authors_dataset("box", str(tmp_path), out)
    assert "rebuilding" not in capsys.readouterr().out


def test_experiment_refuses_an_authors_folder_that_is_not_there_even_with_a_cached_dataset(tmp_path, monkeypatch):
    from pyro_kvae.experiments import main

    monkeypatch.chdir(tmp_path)
    os.makedirs("data")
    authors_like(tmp_path / "box_train.npz", 7, seed=1)
    authors_like(tmp_path / "box_test.npz", 4, seed=2)
    data_main(["box", "--authors", str(tmp_path), "--n-valid", "2", "--out", "data/authors_box.npz"])
    with pytest.raises(SystemExit, match=r"--authors: /no/such/folder is not a folder"):
        main(["box", "--paper", "--authors", "/no/such/folder", "--run-dir", str(tmp_path / "run")])
    assert not os.path.exists(tmp_path / "run" / "kvae")  # nothing was trained
