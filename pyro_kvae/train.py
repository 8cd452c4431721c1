# SPDX-License-Identifier: Apache-2.0
"""
Training a KVAE with SVI (``Trace_ELBO``) on the reference schedule.

:class:`Trainer` owns the model, optimiser and learning-rate schedule; it
trains epoch by epoch, evaluates the ELBO, and writes an atomic checkpoint
after every epoch so that a run can be resumed exactly::

    trainer = Trainer(KVAEConfig(epochs=80), run_dir="runs/box")
    trainer.fit(train_set, valid_set)
    trainer = Trainer.resume("runs/box")   # continues where it stopped
"""

import json
import os
import tempfile
from typing import Optional

import pyro
import torch
from pyro.infer import Trace_ELBO
from tqdm import tqdm

from .config import KVAEConfig, build_kvae

CHECKPOINT = "checkpoint.pt"


def atomic_save(obj, path: str) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename: never a partial file."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def random_mask(shape, miss_prob: float, t_init: int, generator=None, device=None) -> torch.Tensor:
    """Bool mask of ``shape = (batch, T)``, True where observed: the first ``t_init`` frames are
    observed, each later one is dropped with probability ``miss_prob`` (missing at random)."""
    mask = torch.rand(shape, generator=generator).to(device) >= miss_prob
    mask[:, :t_init] = True
    return mask


def _batch(data, idx, device):
    x = data.x[idx].to(device)
    u = data.u[idx].to(device) if data.u.size(-1) else None
    return x, u


class Trainer:
    """
    :param KVAEConfig config: model and training settings.
    :param str run_dir: where checkpoints and ``metrics.jsonl`` go (``None``: nothing written).
    :param model: an already built :class:`~pyro_kvae.models.KVAE` (default: ``build_kvae(config)``).
    :param guide: a guide ``guide(x, u, mask)`` for the ``"a"`` site (default: ``model.guide``).
    :param bool progress: show tqdm progress bars.
    """

    def __init__(self, config: KVAEConfig, run_dir: Optional[str] = None, model=None, guide=None, progress=True):
        self.config, self.run_dir, self.progress = config, run_dir, progress
        pyro.set_rng_seed(config.seed)
        self.device = torch.device(config.device)
        self.model = (model if model is not None else build_kvae(config)).to(self.device)
        self.guide = guide if guide is not None else self.model.guide
        self.elbo = Trace_ELBO()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, config.lr_decay_every, config.lr_decay)
        self.epoch = 0
        self.history = []
        if run_dir is not None:
            os.makedirs(run_dir, exist_ok=True)
            with open(os.path.join(run_dir, "config.json"), "w") as f:
                json.dump(config.to_dict(), f, indent=2)

    def loss(self, x, u=None, mask=None) -> torch.Tensor:
        """Differentiable negative ELBO per sequence of a batch ``x (batch, T, H, W)``."""
        return self.elbo.differentiable_loss(self.model.model, self.guide, x, u, mask) / x.shape[0]

    def train_epoch(self, data) -> float:
        """One pass over ``data`` (a :class:`~pyro_kvae.data.VideoDataset`); returns the mean training loss."""
        c = self.config
        self.model.train()
        self.model.scale_reconstruction = c.scale_reconstruction
        # the alpha network is frozen for the first kf_update_epochs (reference kf_update_steps)
        frozen = list(self.model.prior.dynamics.parameters()) if self.epoch < c.kf_update_epochs else []
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(c.seed * 100003 + self.epoch))
        batches = order.split(c.batch_size)
        total, count = 0.0, 0
        bar = tqdm(batches, desc=f"epoch {self.epoch + 1}", leave=False, disable=not self.progress)
        for idx in bar:
            x, u = _batch(data, idx, self.device)
            mask = None
            if c.train_miss_prob > 0:
                mask = random_mask(x.shape[:2], c.train_miss_prob, c.t_init_train_miss, device=self.device)
            loss = self.loss(x, u, mask)
            self.optimizer.zero_grad()
            loss.backward()
            for p in frozen:
                p.grad = None
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.clip_norm)
            self.optimizer.step()
            total += loss.item() * len(idx)
            count += len(idx)
            bar.set_postfix(loss=f"{loss.item():.1f}")
        self.scheduler.step()
        self.model.scale_reconstruction = 1.0
        self.epoch += 1
        return total / max(count, 1)

    @torch.no_grad()
    def evaluate(self, data, mask=None, batch_size: int = 256) -> float:
        """
        Mean ELBO per sequence on ``data`` with the reconstruction term at full weight
        (one sample of ``a`` per sequence). ``mask (N, T)`` drops frames.
        """
        self.model.eval()
        self.model.scale_reconstruction = 1.0
        total = 0.0
        for idx in torch.arange(len(data)).split(batch_size):
            x, u = _batch(data, idx, self.device)
            m = None if mask is None else mask[idx].to(self.device)
            total += -self.elbo.loss(self.model.model, self.guide, x, u, m)
        return total / len(data)

    def fit(self, train, valid=None, epochs: Optional[int] = None):
        """Trains up to ``epochs`` (default ``config.epochs``) in total, checkpointing after each epoch."""
        epochs = self.config.epochs if epochs is None else epochs  # a resumed run can be extended
        bar = tqdm(
            range(self.epoch, epochs), desc="training", disable=not self.progress, initial=self.epoch, total=epochs
        )
        for _ in bar:
            record = {
                "epoch": self.epoch + 1,
                "train_loss": self.train_epoch(train),
                "lr": self.scheduler.get_last_lr()[0],
            }
            if valid is not None:
                record["valid_elbo"] = self.evaluate(valid)
            self.history.append(record)
            bar.set_postfix({k: f"{v:.2f}" for k, v in record.items() if k != "epoch" and k != "lr"})
            if self.run_dir is not None:
                with open(os.path.join(self.run_dir, "metrics.jsonl"), "a") as f:
                    f.write(json.dumps(record) + "\n")
                self.save(os.path.join(self.run_dir, CHECKPOINT))
        return self.history

    def state_dict(self) -> dict:
        return {
            "config": self.config.to_dict(),
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "history": self.history,
        }

    def save(self, path: str) -> None:
        """Writes a checkpoint atomically."""
        atomic_save(self.state_dict(), path)

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.history = state["epoch"], list(state["history"])
        torch.set_rng_state(state["rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])

    @classmethod
    def resume(cls, run_dir: str, device: Optional[str] = None, **kwargs) -> "Trainer":
        """A trainer restored from ``run_dir/checkpoint.pt`` (optionally on another ``device``)."""
        path = os.path.join(run_dir, CHECKPOINT)
        if not os.path.exists(path):
            raise FileNotFoundError(f"no checkpoint to resume from at {path}")
        state = torch.load(path, map_location="cpu", weights_only=False)
        config = KVAEConfig.from_dict(state["config"])
        if device is not None:
            config.device = device
        trainer = cls(config, run_dir=run_dir, **kwargs)
        trainer.load_state_dict(state)
        return trainer
