# SPDX-License-Identifier: Apache-2.0
"""
Training a KVAE with SVI (``Trace_ELBO``) on the reference schedule.

:class:`Trainer` owns the model, optimiser and learning-rate schedule; it
trains epoch by epoch, evaluates the ELBO, and writes an atomic checkpoint
after every epoch so that a run can be resumed exactly::

    trainer = Trainer(KVAEConfig(epochs=80), run_dir="runs/box")
    trainer.fit(train_set, valid_set)
    trainer = Trainer.resume("runs/box")   # continues where it stopped

A run directory holds ``config.json``, ``checkpoint.pt`` and ``metrics.jsonl``
(one row per finished epoch). After each epoch the checkpoint is replaced
first and the row appended second, and every (re)start rewrites the log from
the checkpoint's history, so whenever the process is killed the log never
holds an epoch that the checkpoint does not, nor one twice.
"""

import math
import os
import pickle
from typing import Optional

import pyro
import torch
from pyro.infer import Trace_ELBO
from tqdm import tqdm

from .config import KVAEConfig, build_kvae, check_device
from .files import append_jsonl, atomic_write, remove_temporaries, unreadable, write_json, write_jsonl

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
#: settings that a resumed run may change (the others must match the checkpoint's)
RESUMABLE = frozenset({"epochs", "device"})
_STATE_KEYS = ("config", "epoch", "model", "optimizer", "scheduler", "rng", "history")


def atomic_save(obj, path: str) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename: never a partial file."""
    atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint(path: str) -> dict:
    """
    Reads a checkpoint written by :meth:`Trainer.save` (tensors and plain data only, no code).

    :raises FileNotFoundError: if there is none.
    :raises ValueError: naming the file and the fix if it is damaged or not a checkpoint.
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint to resume from at {path}")
    fix = (
        "Checkpoints are replaced whole, so this one was damaged or overwritten after it was written: "
        "delete it to start the run again, or train into another --run-dir."
    )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except EOFError:
        raise ValueError(f"{path} is not a readable pyro-kvae checkpoint (it is empty or truncated). {fix}") from None
    except pickle.UnpicklingError:  # torch's message here suggests weights_only=False: not for a damaged file
        raise ValueError(
            f"{path} is not a readable pyro-kvae checkpoint (its bytes are not a torch.save file). {fix}"
        ) from None
    except Exception as e:  # torch.load raises many types (EOFError, RuntimeError, ...)
        raise unreadable(path, "pyro-kvae checkpoint", e, fix) from None
    missing = [k for k in _STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise ValueError(f"{path} is not a pyro-kvae checkpoint: it lacks {missing}. {fix}")
    return state


def _plain(value):
    return tuple(value) if isinstance(value, (list, tuple)) else value


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
    :param str run_dir: where ``config.json``, checkpoints and ``metrics.jsonl`` go (``None``: nothing written).
    :param model: an already built :class:`~pyro_kvae.models.KVAE` (default: ``build_kvae(config)``).
    :param guide: a guide ``guide(x, u, mask)`` for the ``"a"`` site (default: ``model.guide``).
    :param bool progress: show tqdm progress bars.
    :param dict meta: run settings outside ``config`` that are stored in the checkpoint and must
        not change on resume (e.g. the dataset path), JSON values.
    :param bool overwrite: start afresh in a ``run_dir`` that already holds a checkpoint (else
        ``FileExistsError``: an existing run is never replaced by accident).
    :param dict state: a checkpoint's state to start from (what :meth:`resume` passes).
    """

    def __init__(
        self,
        config: KVAEConfig,
        run_dir: Optional[str] = None,
        model=None,
        guide=None,
        progress=True,
        meta: Optional[dict] = None,
        overwrite: bool = False,
        state: Optional[dict] = None,
    ):
        self.config, self.run_dir, self.progress = config, run_dir, progress
        self.meta = dict(meta or {})
        self.device = check_device(config.device)
        if run_dir is not None and state is None and not overwrite and os.path.exists(self._path(CHECKPOINT)):
            raise FileExistsError(
                f"{run_dir} already holds a checkpoint: resume it (Trainer.resume, --resume), "
                "choose another run directory (--run-dir), or pass overwrite=True to start afresh"
            )
        pyro.set_rng_seed(config.seed)
        self.model = (model if model is not None else build_kvae(config)).to(self.device)
        self.guide = guide if guide is not None else self.model.guide
        self.elbo = Trace_ELBO()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, config.lr_decay_every, config.lr_decay)
        self.epoch = 0
        self.history = []
        if state is not None:
            self.load_state_dict(state)
        if run_dir is not None:
            self._open_run_dir()

    def _path(self, name: str) -> str:
        return os.path.join(self.run_dir, name)

    def _open_run_dir(self) -> None:
        """Writes config.json and a log that agrees with the history, and clears temporaries
        left by a killed run; fails here, before any training, if the directory is not writable."""
        try:
            os.makedirs(self.run_dir, exist_ok=True)
            remove_temporaries(self.run_dir)
            write_json(self._path("config.json"), {**self.config.to_dict(), **self.meta})
            write_jsonl(self._path(METRICS), self.history)
        except OSError as e:
            raise OSError(
                e.errno, f"cannot write to the run directory {self.run_dir} ({e.strerror or e}); choose a writable one"
            ) from None

    def loss(self, x, u=None, mask=None) -> torch.Tensor:
        """Differentiable negative ELBO per sequence of a batch ``x (batch, T, H, W)``."""
        return self.elbo.differentiable_loss(self.model.model, self.guide, x, u, mask) / x.shape[0]

    def train_epoch(self, data) -> float:
        """One pass over ``data`` (a :class:`~pyro_kvae.data.VideoDataset`); returns the mean training loss."""
        _check_nonempty(data, "the training data")
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
        return total / count

    @torch.no_grad()
    def evaluate(self, data, mask=None, batch_size: int = 256) -> float:
        """
        Mean ELBO per sequence on ``data`` with the reconstruction term at full weight
        (one sample of ``a`` per sequence). ``mask (N, T)`` drops frames.
        """
        _check_nonempty(data, "the evaluation data")
        self.model.eval()
        self.model.scale_reconstruction = 1.0
        total = 0.0
        for idx in torch.arange(len(data)).split(batch_size):
            x, u = _batch(data, idx, self.device)
            m = None if mask is None else mask[idx].to(self.device)
            total += -self.elbo.loss(self.model.model, self.guide, x, u, m)
        return total / len(data)

    def fit(self, train, valid=None, epochs: Optional[int] = None):
        """
        Trains up to ``epochs`` (default ``config.epochs``) in total. After each epoch the
        checkpoint is written, then its row is appended to ``metrics.jsonl``.

        :raises FloatingPointError: if the loss or the validation ELBO is not finite; the
            last good checkpoint is kept and nothing non-finite is logged.
        """
        _check_nonempty(train, "the training data")
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
            bad = {k: v for k, v in record.items() if not math.isfinite(v)}
            if bad:
                n = record["epoch"]
                kept = f"the checkpoint of epoch {n - 1} in {self.run_dir} is kept; " if self.run_dir else ""
                raise FloatingPointError(
                    f"training diverged in epoch {n}: {bad}; {kept}"
                    f"try a lower --lr (now {self.config.lr}) or --clip-norm (now {self.config.clip_norm})"
                )
            self.history.append(record)
            bar.set_postfix({k: f"{v:.2f}" for k, v in record.items() if k != "epoch" and k != "lr"})
            if self.run_dir is not None:
                self.save(self._path(CHECKPOINT))
                append_jsonl(self._path(METRICS), record)
        return self.history

    def state_dict(self) -> dict:
        return {
            "config": self.config.to_dict(),
            "meta": self.meta,
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
    def resume(cls, run_dir: str, device: Optional[str] = None, changes: Optional[dict] = None, **kwargs) -> "Trainer":
        """
        A trainer restored from ``run_dir/checkpoint.pt``.

        :param str device: move the run to another device (same as ``changes={"device": ...}``).
        :param dict changes: settings the user asked for (config fields or ``meta`` keys). Those in
            :data:`RESUMABLE` are applied and listed in ``trainer.resume_changes``; any other that
            differs from the checkpoint's raises ``ValueError`` listing every difference.
        """
        state = load_checkpoint(os.path.join(run_dir, CHECKPOINT))
        changes = dict(changes or {})
        if device is not None:
            changes["device"] = device
        saved = {**state["config"], **state.get("meta", {})}
        diffs = {k: (_plain(saved.get(k)), _plain(v)) for k, v in changes.items() if _plain(saved.get(k)) != _plain(v)}
        refused = {k: d for k, d in diffs.items() if k not in RESUMABLE}
        if refused:
            lines = "; ".join(f"{k}: the run has {old!r}, asked for {new!r}" for k, (old, new) in refused.items())
            raise ValueError(
                f"cannot resume {run_dir} with different settings ({lines}). Leave these out to continue "
                f"the run as it was, or start a new run in another run directory. Only {sorted(RESUMABLE)} may change."
            )
        new = {k: value for k, (_, value) in diffs.items()}
        config = KVAEConfig.from_dict({**state["config"], **{k: v for k, v in new.items() if k in state["config"]}})
        meta = {**state.get("meta", {}), **{k: v for k, v in new.items() if k not in state["config"]}}
        trainer = cls(config, run_dir=run_dir, meta=meta, state=state, **kwargs)
        trainer.resume_changes = diffs
        return trainer


def _check_nonempty(data, what: str) -> None:
    if len(data) == 0:
        where = getattr(data, "path", None)
        split = getattr(data, "split", "")
        raise ValueError(f"{what} holds no sequences ({split!r} split of {where})" if where else f"{what} is empty")
