# SPDX-License-Identifier: Apache-2.0
"""
Trains a tiny KVAE with Lightning DDP (2 CPU processes, gloo) for tests/test_lightning.py.
Lightning starts the second process by running this script again. Each rank writes
``OUT/rank<r>.json``: the indices of the sequences it was given and the files it wrote.

    python tests/ddp_worker.py DATA RUN_DIR OUT DEVICES
"""

import json
import os
import sys

import pyro
import torch

import pyro_kvae.files as files
import pyro_kvae.train as train_module
from pyro_kvae.config import KVAEConfig
from pyro_kvae.data import VideoDataset
from pyro_kvae.models import EncoderMeanGuide

TINY = dict(frame_size=16, vae="mlp", mlp_hidden=(32,), dim_z=3, batch_size=16, kf_update_epochs=1, lr=0.01,
            epochs=2, train_miss_prob=0.0, dynamics="lstm")  # fmt: skip


def trainer(run_dir, devices):
    from pyro_kvae.config import build_kvae

    # a deterministic loss, comparable across process counts; the point-mass guide leaves
    # the encoder's variance head unused
    strategy = "ddp_find_unused_parameters_true" if devices > 1 else "auto"
    config = KVAEConfig(devices=devices, strategy=strategy, **TINY)
    pyro.set_rng_seed(config.seed)
    kvae = build_kvae(config)
    return train_module.Trainer(config, run_dir=run_dir, model=kvae, guide=EncoderMeanGuide(kvae), progress=False)


def main(data, run_dir, out, devices):
    seen, written = [], []
    getitems = train_module._Sequences.__getitems__
    train_module._Sequences.__getitems__ = lambda self, idx: (seen.extend(int(i) for i in idx), getitems(self, idx))[1]
    for name in ("atomic_write", "append_jsonl"):
        original = getattr(files, name)

        def spy(path, *args, _original=original, **kwargs):
            written.append(os.path.basename(str(path)))
            return _original(path, *args, **kwargs)

        setattr(files, name, spy)
        if hasattr(train_module, name):
            setattr(train_module, name, spy)
    t = trainer(run_dir, devices)
    t.fit(VideoDataset(data, "train"))
    rank = t._lightning.global_rank
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"seen": seen, "written": written, "world_size": t._lightning.world_size}, f)
    if rank == 0:
        torch.save(t.model.state_dict(), os.path.join(out, "params.pt"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
