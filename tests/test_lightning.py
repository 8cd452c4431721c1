# SPDX-License-Identifier: Apache-2.0
"""Training on Lightning: DDP on CPU (2 processes, gloo), rank-0 writes, loggers, determinism."""

import csv
import json
import os
import subprocess
import sys

import pytest
import torch
from test_train import config

from pyro_kvae.data import VideoDataset
from pyro_kvae.train import METRICS, Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))


def test_ddp_matches_one_process_on_the_same_global_batch(tmp_path, data_path):
    """2 DDP processes with 8 sequences each take the same steps as 1 process with 16: the
    parameters agree to float32 round-off; each rank sees its own shard; only rank 0 writes."""
    import ddp_worker

    out, run = tmp_path / "out", tmp_path / "run"
    out.mkdir()
    cmd = [sys.executable, os.path.join(ROOT, "tests", "ddp_worker.py"), data_path, str(run), str(out), "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.load(open(out / f"rank{r}.json")) for r in (0, 1)]
    assert all(r["world_size"] == 2 for r in ranks)
    n, epochs = 32, ddp_worker.TINY["epochs"]
    for e in range(epochs):  # per epoch: disjoint halves that together cover the data
        shards = [set(r["seen"][e * n // 2 : (e + 1) * n // 2]) for r in ranks]
        assert not shards[0] & shards[1] and shards[0] | shards[1] == set(range(n))
    assert ranks[1]["written"] == []
    assert {"checkpoint.pt", "config.json", METRICS} <= set(ranks[0]["written"])
    assert [json.loads(line)["epoch"] for line in open(run / METRICS)] == [1, 2]

    single = ddp_worker.trainer(str(tmp_path / "single"), 1)
    single.fit(VideoDataset(data_path, "train"))
    ddp = torch.load(out / "params.pt")
    worst = max(
        (ddp[k] - v).abs().max().item() / (v.abs().max().item() + 1e-6) for k, v in single.model.state_dict().items()
    )
    print(f"largest relative parameter difference, DDP vs one process: {worst:.2e}")
    assert worst < 1e-4
    rows = [json.loads(line) for line in open(tmp_path / "single" / METRICS)]
    ddp_rows = [json.loads(line) for line in open(run / METRICS)]
    for a, b in zip(rows, ddp_rows):
        assert abs(a["train_loss"] - b["train_loss"]) < 1e-4 * abs(a["train_loss"])


def test_loggers_hold_the_run_log(tmp_path, data_path):
    run = tmp_path / "run"
    train = VideoDataset(data_path, "train")
    Trainer(config(epochs=2), run_dir=str(run), progress=False).fit(train, VideoDataset(data_path, "valid"))
    Trainer.resume(str(run), changes={"epochs": 3}, progress=False).fit(train, VideoDataset(data_path, "valid"))
    rows = [json.loads(line) for line in open(run / METRICS)]
    with open(run / "logs" / "metrics.csv") as f:
        logged = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in logged] == [r["epoch"] for r in rows] == [1, 2, 3]
    for a, b in zip(logged, rows):
        assert float(a["train_loss"]) == pytest.approx(b["train_loss"]) and float(a["valid_elbo"]) == pytest.approx(
            b["valid_elbo"]
        )


def test_same_seed_same_run(data_path):
    train = VideoDataset(data_path, "train")
    runs = []
    for _ in range(2):
        runs.append(Trainer(config(epochs=2, train_miss_prob=0.3), progress=False))
        runs[-1].fit(train)
    a, b = (t.model.state_dict() for t in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_global_batch_must_split_over_devices(data_path):
    with pytest.raises(ValueError, match="batch_size 15 .* divisible by devices x num_nodes = 2"):
        Trainer(config(epochs=1, batch_size=15, devices=2), progress=False).fit(VideoDataset(data_path, "train"))


def test_gpu_check_dry_run(tmp_path):
    """benchmarks/gpu_check.py runs every step on the CPU, so that it keeps working without a GPU."""
    script = os.path.join(ROOT, "benchmarks", "gpu_check.py")
    out = subprocess.run(
        [sys.executable, script, "--dry-run", "--no-pytest", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "[ok] loss of one batch" in out.stdout and "sequences/s" in out.stdout and "Kalman log p(a)" in out.stdout
    assert "5 of 5 checks passed" in out.stdout
