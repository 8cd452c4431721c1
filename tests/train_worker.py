# SPDX-License-Identifier: Apache-2.0
"""
A training process for tests/test_reliability.py to kill: trains a tiny KVAE in RUN_DIR
on DATA, resuming when RUN_DIR holds a checkpoint, and waits for a line on stdin
between "ready" and training so that the test can inspect the run directory first;
prints "training" when the first epoch starts and "epoch N" when one is saved, so that
the test can time its kills by the epochs of this machine, however loaded it is.

    python tests/train_worker.py RUN_DIR DATA EPOCHS
"""

import os
import sys

import lightning
import torch

from pyro_kvae.config import KVAEConfig
from pyro_kvae.data import VideoDataset
from pyro_kvae.train import CHECKPOINT, Trainer

TINY = dict(frame_size=16, vae="mlp", mlp_hidden=(32,), dim_z=3, batch_size=16, kf_update_epochs=2,
            lr=0.01, train_miss_prob=0.3)  # fmt: skip


class Announce(lightning.Callback):
    """Prints "training" when the first epoch starts and "epoch N" after each checkpoint and log row."""

    def on_train_epoch_start(self, trainer, module):
        if not getattr(self, "said", False):
            print("training", flush=True)
            self.said = True

    def on_train_epoch_end(self, trainer, module):  # runs after the trainer's own run log
        print(f"epoch {trainer.current_epoch + 1}", flush=True)


def main(run_dir, data, epochs):
    if "TRAIN_WORKER_THREADS" in os.environ:  # the test's own, for bitwise the same training
        torch.set_num_threads(int(os.environ["TRAIN_WORKER_THREADS"]))
    train = VideoDataset(data, "train")
    if os.path.exists(os.path.join(run_dir, CHECKPOINT)):
        trainer = Trainer.resume(run_dir, changes={"epochs": epochs}, progress=False, callbacks=[Announce()])
    else:
        trainer = Trainer(KVAEConfig(epochs=epochs, **TINY), run_dir=run_dir, progress=False, callbacks=[Announce()])
    print("ready", trainer.epoch, flush=True)
    sys.stdin.readline()
    trainer.fit(train)
    print("done", trainer.epoch, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
