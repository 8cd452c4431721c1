# SPDX-License-Identifier: Apache-2.0
"""
A training process for tests/test_reliability.py to kill: trains a tiny KVAE in RUN_DIR
on DATA, resuming when RUN_DIR holds a checkpoint, and waits for a line on stdin
between "ready" and training so that the test can inspect the run directory first.

    python tests/train_worker.py RUN_DIR DATA EPOCHS
"""

import os
import sys

from pyro_kvae.config import KVAEConfig
from pyro_kvae.data import VideoDataset
from pyro_kvae.train import CHECKPOINT, Trainer

TINY = dict(frame_size=16, vae="mlp", mlp_hidden=(32,), dim_z=3, batch_size=16, kf_update_epochs=2,
            lr=0.01, train_miss_prob=0.3)  # fmt: skip


def main(run_dir, data, epochs):
    train = VideoDataset(data, "train")
    if os.path.exists(os.path.join(run_dir, CHECKPOINT)):
        trainer = Trainer.resume(run_dir, changes={"epochs": epochs}, progress=False)
    else:
        trainer = Trainer(KVAEConfig(epochs=epochs, **TINY), run_dir=run_dir, progress=False)
    print("ready", trainer.epoch, flush=True)
    sys.stdin.readline()
    trainer.fit(train)
    print("done", trainer.epoch, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
