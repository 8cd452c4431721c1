# SPDX-License-Identifier: Apache-2.0
"""
Training a KVAE with SVI on `Lightning <https://lightning.ai>`_, Pyro's own scaling
pattern (``examples/svi_lightning.py``): the loss is a Pyro ELBO, the optimiser a
torch one, and Lightning runs the loop on one or many devices and nodes (DDP),
with mixed precision for the networks.

:class:`KVAETrainingPlan` is the :class:`lightning.LightningModule`: ``training_step``
is the negative ELBO per sequence (:class:`~pyro_kvae.bounds.SyncFreeTrace_ELBO`, Pyro's
``Trace_ELBO`` without host synchronisation), ``configure_optimizers`` the
reference schedule (Adam, ``StepLR`` 0.85 every 20 epochs; Lightning clips the
global gradient norm at 150), and ``on_after_backward`` freezes the dynamics
network for the first ``kf_update_epochs``. :class:`Trainer` keeps this project's
entry point::

    trainer = Trainer(KVAEConfig(epochs=80), run_dir="runs/box")
    trainer.fit(train_set, valid_set)
    trainer = Trainer.resume("runs/box")   # continues where it stopped

A run directory holds ``config.json``, ``checkpoint.pt`` (Lightning's format,
written atomically through :class:`AtomicCheckpointIO`), ``metrics.jsonl`` (one
row per finished epoch) and the Lightning loggers' files under ``logs/``. After
each epoch the checkpoint is replaced first and the row written second, and
every (re)start rewrites the logs from the checkpoint's history, so whenever
the process is killed the logs never hold an epoch that the checkpoint does not,
nor one twice. Only the global rank 0 writes.
"""

import contextlib
import dataclasses
import logging
import math
import os
import pickle
import tempfile
import time
import warnings
from typing import Optional

import lightning
import pyro
import torch
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from pyro.distributions.util import is_validation_enabled

from .bounds import SyncFreeTrace_ELBO, importance_weighted_bound
from .config import KVAEConfig, build_kvae, check_device
from .files import append_jsonl, atomic_write, remove_temporaries, unreadable, write_json, write_jsonl
from .models.kvae import check_frame_values

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
SELECTION = "selection.json"
#: settings that a resumed run may change (the others must match the checkpoint's)
RESUMABLE = frozenset({"epochs", "device", "devices", "num_nodes", "strategy", "precision"})
_STATE_KEYS = ("state_dict", "optimizer_states", "lr_schedulers", "pyro_kvae")


def atomic_save(obj, path: str) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename: never a partial file."""
    atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint(path: str, keys=None) -> dict:
    """
    Reads a checkpoint written by :class:`Trainer` (tensors and plain data only, no code).

    :param keys: the entries it must hold (default: those of a :class:`Trainer` checkpoint).

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
        cause = "its bytes are not a torch.save file"
        raise ValueError(f"{path} is not a readable pyro-kvae checkpoint ({cause}). {fix}") from None
    except Exception as e:  # torch.load raises many types (RuntimeError, ...)
        raise unreadable(path, "pyro-kvae checkpoint", e, fix) from None
    missing = [k for k in (_STATE_KEYS if keys is None else keys) if not isinstance(state, dict) or k not in state]
    if missing:
        raise ValueError(f"{path} is not a pyro-kvae checkpoint: it lacks {missing}. {fix}")
    return state


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with our atomic write (temporary file beside the target, fsync,
    rename; a killed writer's temporary is cleared on the next start) and checked load."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        atomic_save(checkpoint, str(path))

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        return load_checkpoint(str(path))


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


class _Sequences(torch.utils.data.Dataset):
    """``(x, u)`` of a :class:`~pyro_kvae.data.VideoDataset`, fetched a whole batch at a time."""

    def __init__(self, data):
        self.x, self.u = data.x, data.u

    def __len__(self):
        return len(self.x)

    def __getitems__(self, indices):
        idx = torch.as_tensor(indices)
        return self.x[idx], self.u[idx]


def _whole_batch(batch):
    return batch


def _loader(data, batch_size: int, world_size: int, rank: int, seed: int, shuffle: bool):
    """Each rank takes its own shard (``DistributedSampler``; one shard on one device), shuffled
    by ``seed + epoch``; the loader draws its base seed from its own generator, not the global one."""
    sequences = _Sequences(data)
    sampler = torch.utils.data.DistributedSampler(
        sequences, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed
    )
    return torch.utils.data.DataLoader(
        sequences, batch_size=batch_size, sampler=sampler, collate_fn=_whole_batch,
        generator=torch.Generator().manual_seed(seed),
    )  # fmt: skip


class KVAETrainingPlan(lightning.LightningModule):
    """
    The KVAE's training as a :class:`lightning.LightningModule`.

    :param KVAE kvae: the model.
    :param guide: a guide ``guide(x, u, mask)`` for ``"a"`` (a module's parameters are trained too).
    :param KVAEConfig config: the schedule.
    :param owner: the :class:`Trainer` whose ``history`` and ``meta`` go into checkpoints.
    """

    def __init__(self, kvae, guide, config: KVAEConfig, owner: "Trainer"):
        super().__init__()
        self.kvae, self.config, self._owner = kvae, config, owner
        self.guide_module = guide if isinstance(guide, torch.nn.Module) and guide is not kvae else None
        self.guide = guide
        self.elbo = SyncFreeTrace_ELBO()
        self.train_data = self.valid_data = None

    def _split(self, batch):
        x, u = batch
        return x, (u if u.size(-1) else None)

    def training_step(self, batch, batch_idx):
        x, u = self._split(batch)
        c = self.config
        mask = None
        if c.train_miss_prob > 0:
            mask = random_mask(x.shape[:2], c.train_miss_prob, c.t_init_train_miss, device=x.device)
        self.kvae.scale_reconstruction = c.scale_reconstruction
        # Pyro's validation (when on) checks the first step of each epoch; its checks read tensors on
        # the host, and the steps after it do not wait on the device (the frames are checked in fit)
        with pyro.validation_enabled(is_validation_enabled() and batch_idx == 0):
            loss = self.elbo.differentiable_loss(self.kvae.model, self.guide, x, u, mask) / x.shape[0]
        if c.loss_per_frame:
            loss = loss / x.shape[1]
        # accumulated on the device and reduced once per epoch: no host sync per step
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=x.shape[0], sync_dist=True, logger=False)
        return loss

    def validation_step(self, batch, batch_idx):
        x, u = self._split(batch)
        self.kvae.scale_reconstruction = 1.0
        elbo = -self.elbo.differentiable_loss(self.kvae.model, self.guide, x, u) / x.shape[0]
        self.log("valid_elbo", elbo, on_epoch=True, batch_size=x.shape[0], sync_dist=True, logger=False)

    def on_train_epoch_end(self):
        self.kvae.scale_reconstruction = 1.0

    def on_after_backward(self):
        # the alpha network is frozen for the first kf_update_epochs (reference kf_update_steps);
        # before clipping, so that its gradients do not count towards the global norm
        if self.current_epoch < self.config.kf_update_epochs:
            for p in self.kvae.prior.dynamics.parameters():
                p.grad = None
        if self.current_epoch < self.config.transition_frozen_epochs:
            self.kvae.prior.A.grad = None  # the transition modes stay at their initial identity

    def configure_optimizers(self):
        c = self.config
        optimizer = torch.optim.Adam(self.parameters(), lr=c.lr)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, c.lr_decay_every, c.lr_decay)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def _world(self):
        return self.trainer.world_size, self.trainer.global_rank

    def train_dataloader(self):
        world, rank = self._world()
        c = self.config
        return _loader(self.train_data, c.batch_size // world, world, rank, c.seed, c.shuffle)

    def val_dataloader(self):
        if self.valid_data is None:
            return []
        world, rank = self._world()
        return _loader(self.valid_data, 256, world, rank, self.config.seed, False)

    def on_save_checkpoint(self, checkpoint):
        o = self._owner
        checkpoint["pyro_kvae"] = {
            "config": self.config.to_dict(),
            "meta": o.meta,
            "history": list(o.history),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }

    def on_load_checkpoint(self, checkpoint):
        extra = checkpoint["pyro_kvae"]
        torch.set_rng_state(extra["rng"])
        if extra.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(extra["cuda_rng"])


class _RunLog(lightning.Callback):
    """At each epoch's end: check the metrics, record them, write the checkpoint, then the log rows."""

    def __init__(self, owner: "Trainer"):
        self.owner = owner
        self.started = None

    def on_train_epoch_start(self, trainer, plan):
        self.started = time.perf_counter()

    def on_train_epoch_end(self, trainer, plan):
        o = self.owner
        m = trainer.callback_metrics  # reduced over the epoch and the ranks; one host sync per epoch
        record = {"epoch": trainer.current_epoch + 1, "train_loss": float(m["train_loss"])}
        record["lr"] = trainer.optimizers[0].param_groups[0]["lr"]
        if "valid_elbo" in m:
            record["valid_elbo"] = float(m["valid_elbo"])
        if o.monitor is not None:
            record.update(o.monitor(o.model))
        record["seconds"] = round(time.perf_counter() - self.started, 3)  # wall time of the epoch (with validation)
        bad = {k: v for k, v in record.items() if not all(math.isfinite(x) for x in _numbers(v))}
        if bad:
            n = record["epoch"]
            kept = f"the checkpoint of epoch {n - 1} in {o.run_dir} is kept; " if o.run_dir else ""
            raise FloatingPointError(
                f"training diverged in epoch {n}: {bad}; {kept}"
                f"try a lower --lr (now {o.config.lr}) or --clip-norm (now {o.config.clip_norm})"
            )
        o.history.append(record)
        o.epoch = record["epoch"]
        trainer.save_checkpoint(o.checkpoint_path, weights_only=False)  # every rank calls it; rank 0 writes
        if trainer.is_global_zero and o.run_dir is not None:
            append_jsonl(o._path(METRICS), record)
            for logger in trainer.loggers:
                logger.log_metrics(record, step=record["epoch"])
                logger.save()


def _numbers(value):
    return value if isinstance(value, (list, tuple)) else (value,)


def _is_global_zero() -> bool:
    """Rank 0 before Lightning has set up its processes (it launches the others with these set)."""
    return int(os.environ.get("NODE_RANK", 0)) == 0 and int(os.environ.get("LOCAL_RANK", 0)) == 0


class Trainer:
    """
    Trains a KVAE on Lightning with the reference schedule, on one device or many.

    :param KVAEConfig config: model and training settings, including the hardware
        (``device``, ``devices``, ``num_nodes``, ``strategy``, ``precision``).
    :param str run_dir: where ``config.json``, checkpoints and logs go (``None``: nothing is kept).
    :param model: an already built :class:`~pyro_kvae.models.KVAE` (default: ``build_kvae(config)``).
    :param guide: a guide ``guide(x, u, mask)`` for the ``"a"`` site (default: ``model.guide``);
        if it is a module, its parameters are trained with the model's.
    :param bool progress: show progress bars.
    :param dict meta: run settings outside ``config`` that are stored in the checkpoint and must
        not change on resume (e.g. the dataset path), JSON values.
    :param bool overwrite: start afresh in a ``run_dir`` that already holds a checkpoint (else
        ``FileExistsError``: an existing run is never replaced by accident).
    :param dict state: a checkpoint to start from (:func:`load_checkpoint`). The run continues
        from it with ``config`` (which may differ from the checkpoint's: a fork, e.g. the same
        weights trained on with missing frames) and writes it, under ``config``, as the first
        checkpoint of ``run_dir``, which must not hold another run (see ``overwrite``).
        :meth:`resume` continues a run in its own directory.
    :param callbacks: extra :class:`lightning.Callback` objects for :meth:`fit`.
    :param monitor: called as ``monitor(model)`` after each epoch; the numbers (or lists of
        numbers) of the dict it returns join the epoch's row of ``metrics.jsonl`` and the
        history, e.g. :class:`pyro_kvae.evaluation.ValidationMonitor` (the validation
        imputation error and the a-space R^2).
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
        callbacks=(),
        monitor=None,
        _resumed: bool = False,
    ):
        self.config, self.run_dir, self.progress = config, run_dir, progress
        self.monitor = monitor
        self.callbacks = list(callbacks)
        self.meta = dict(meta or {})
        self.device = check_device(config.device)
        if run_dir is not None and not _resumed and not overwrite:
            held = [name for name in (CHECKPOINT, METRICS) if _holds_data(self._path(name))]
            if held:
                what = "a checkpoint" if CHECKPOINT in held else f"an earlier run's {METRICS} (and no checkpoint)"
                raise FileExistsError(
                    f"{run_dir} already holds {what}: resume it (Trainer.resume, --resume), "
                    "choose another run directory (--run-dir), or pass overwrite=True to start afresh"
                )
        pyro.set_rng_seed(config.seed)
        self.model = (model if model is not None else build_kvae(config)).to(self.device)
        self.guide = guide if guide is not None else self.model.guide
        self.plan = KVAETrainingPlan(self.model, self.guide, config, self)
        self.elbo = SyncFreeTrace_ELBO()
        self.epoch = 0
        self.history = []
        self._scratch = None
        self._lightning = None
        self.loggers = []
        if state is not None:
            self.load_state_dict(state)
        if run_dir is not None and _is_global_zero():
            self._open_run_dir()
        self._fork = None
        if state is not None and not _resumed:
            # a fork: fit continues from a checkpoint file, so the state becomes this run's first one,
            # under this run's settings (a resume of it, before an epoch has finished, must get them);
            # written now into run_dir (replacing what overwrite allows), into a private file at fit without
            self._fork = {**state, "pyro_kvae": {**state["pyro_kvae"], "config": config.to_dict(), "meta": self.meta}}
            if run_dir is not None and _is_global_zero():
                atomic_save(self._fork, self.checkpoint_path)
                self._fork = None

    def _path(self, name: str) -> str:
        return os.path.join(self.run_dir, name)

    @property
    def checkpoint_path(self) -> str:
        """``run_dir/checkpoint.pt``, or a private temporary file for a run without ``run_dir``."""
        if self.run_dir is not None:
            return self._path(CHECKPOINT)
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="pyro_kvae_")
        return os.path.join(self._scratch.name, CHECKPOINT)

    @property
    def is_global_zero(self) -> bool:
        """Whether this process is the global rank 0 (the one that writes, and that should report)."""
        return self._lightning.is_global_zero if self._lightning is not None else _is_global_zero()

    def _open_run_dir(self) -> None:
        """Writes config.json and logs that agree with the history, and clears temporaries left by
        a killed run; fails here, before any training, if the directory is not writable."""
        try:
            os.makedirs(self.run_dir, exist_ok=True)
            remove_temporaries(self.run_dir)
            write_json(self._path("config.json"), {**self.config.to_dict(), **self.meta})
            write_jsonl(self._path(METRICS), self.history)
            logs = self._path("logs")
            os.makedirs(logs, exist_ok=True)
            for name in os.listdir(logs):  # rewritten below from the checkpoint's history
                if name == "metrics.csv" or name.startswith("events.out.tfevents"):
                    os.unlink(os.path.join(logs, name))
            self.loggers = [CSVLogger(self.run_dir, name="logs", version="")]
            if _has_tensorboard():
                from lightning.pytorch.loggers import TensorBoardLogger

                self.loggers.append(TensorBoardLogger(self.run_dir, name="logs", version="", default_hp_metric=False))
            for logger in self.loggers:
                for record in self.history:
                    logger.log_metrics(record, step=record["epoch"])
                logger.save()
        except OSError as e:
            raise OSError(
                e.errno, f"cannot write to the run directory {self.run_dir} ({e.strerror or e}); choose a writable one"
            ) from None

    def loss(self, x, u=None, mask=None) -> torch.Tensor:
        """Differentiable negative ELBO per sequence of a batch ``x (batch, T, H, W)``."""
        return self.elbo.differentiable_loss(self.model.model, self.guide, x, u, mask) / x.shape[0]

    def train_epoch(self, data) -> float:
        """Trains one more epoch on ``data``; returns its mean training loss."""
        self.fit(data, epochs=self.epoch + 1)
        return self.history[-1]["train_loss"]

    @torch.no_grad()
    def evaluate(self, data, mask=None, batch_size: int = 256, num_particles: int = 1) -> float:
        """
        Mean ELBO per sequence on ``data`` with the reconstruction term at full weight
        (one sample of ``a`` per sequence), or with ``num_particles = K > 1`` the mean
        importance-weighted bound ``log (1/K) sum_k p(x, a_k) / q(a_k | x)``, tighter
        with ``K`` (:func:`pyro_kvae.bounds.importance_weighted_bound`). ``mask (N, T)``
        drops frames.
        """
        _check_nonempty(data, "the evaluation data")
        self.model.eval()
        self.model.scale_reconstruction = 1.0
        total = 0.0
        for idx in torch.arange(len(data)).split(max(1, batch_size // num_particles)):
            x, u = _batch(data, idx, self.device)
            m = None if mask is None else mask[idx].to(self.device)
            if num_particles == 1:
                total += -self.elbo.loss(self.model.model, self.guide, x, u, m)
            else:
                bound = importance_weighted_bound(self.model.model, self.guide, num_particles, x, u, m)
                total += bound.sum().item()
        return total / len(data)

    def lightning_trainer(self, epochs: int) -> lightning.Trainer:
        """The :class:`lightning.Trainer` that :meth:`fit` runs: the config's hardware, the
        reference clipping, our atomic checkpoints and run log, the loggers of ``run_dir``."""
        c = self.config
        accelerator = "gpu" if self.device.type == "cuda" else "cpu"
        devices = [self.device.index] if self.device.index is not None else c.devices
        return lightning.Trainer(
            accelerator=accelerator,
            devices=devices,
            num_nodes=c.num_nodes,
            strategy=c.strategy,
            precision=c.precision,
            max_epochs=epochs,
            gradient_clip_val=c.clip_norm,
            gradient_clip_algorithm="norm",
            logger=self.loggers or False,
            callbacks=[_RunLog(self), *self.callbacks],
            enable_checkpointing=False,  # _RunLog writes the checkpoint, before the log rows
            enable_progress_bar=self.progress,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            use_distributed_sampler=False,  # KVAETrainingPlan shards the data itself
            plugins=[AtomicCheckpointIO()],
            inference_mode=False,  # Pyro samples in validation
            default_root_dir=self.run_dir or os.path.dirname(self.checkpoint_path),
        )

    def fit(self, train, valid=None, epochs: Optional[int] = None):
        """
        Trains up to ``epochs`` (default ``config.epochs``) in total, continuing from the last
        checkpoint. After each epoch the checkpoint is written, then the log rows.

        :raises FloatingPointError: if the loss or the validation ELBO is not finite; the
            last good checkpoint is kept and nothing non-finite is logged.
        """
        _check_nonempty(train, "the training data")
        c = self.config
        epochs = c.epochs if epochs is None else epochs  # a resumed run can be extended
        world = c.devices * c.num_nodes
        if c.batch_size % world:
            raise ValueError(
                f"batch_size {c.batch_size} (the global batch) must be divisible by devices x num_nodes = {world}"
            )
        if self.epoch >= epochs:
            return self.history
        self.plan.train_data = train
        self.plan.valid_data = valid if valid is not None and len(valid) else None
        for name, data in (("the training data", train), ("the validation data", self.plan.valid_data)):
            if data is not None:  # once here, so that the steps need no host synchronisation for it
                try:
                    check_frame_values(data.x, self.model.likelihood)
                except ValueError as e:
                    raise ValueError(f"{name} ({getattr(data, 'path', 'in memory')}): {e}") from None
        ckpt_path = self.checkpoint_path if self.epoch > 0 else None
        if self._fork is not None and ckpt_path is not None:
            atomic_save(self._fork, ckpt_path)
            self._fork = None
        self.plan.train()
        self.model.check_frames = False
        try:
            with warnings.catch_warnings(), _lightning_info(self.progress):
                for message in _QUIET:
                    warnings.filterwarnings("ignore", message=message)
                trainer = self.lightning_trainer(epochs)
                trainer.fit(self.plan, ckpt_path=ckpt_path)
        finally:
            self.model.check_frames = True
            # Lightning's teardown leaves the module on the CPU; the trained model stays on its device
            self.plan.to(self.device)
        self._lightning = trainer
        self.model.scale_reconstruction = 1.0
        return self.history

    def load_state_dict(self, state: dict) -> None:
        """Model (and guide) weights, history and meta from a checkpoint; optimiser, schedule and
        loops are restored by Lightning when :meth:`fit` continues from it."""
        extra = state["pyro_kvae"]
        self.plan.load_state_dict(state["state_dict"])
        self.history = list(extra["history"])
        self.epoch = len(self.history)
        self.meta = {**extra.get("meta", {}), **self.meta}

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
        extra = state["pyro_kvae"]
        changes = dict(changes or {})
        if device is not None:
            changes["device"] = device
        # a checkpoint written before a setting existed ran with that setting's default
        saved = {**KVAEConfig().to_dict(), **extra["config"], **extra.get("meta", {})}
        diffs = {k: (_plain(saved.get(k)), _plain(v)) for k, v in changes.items() if _plain(saved.get(k)) != _plain(v)}
        refused = {k: d for k, d in diffs.items() if k not in RESUMABLE}
        if refused:
            lines = "; ".join(f"{k}: the run has {old!r}, asked for {new!r}" for k, (old, new) in refused.items())
            raise ValueError(
                f"cannot resume {run_dir} with different settings ({lines}). Leave these out to continue "
                f"the run as it was, or start a new run in another run directory. Only {sorted(RESUMABLE)} may change."
            )
        new = {k: value for k, (_, value) in diffs.items()}
        config = KVAEConfig.from_dict({**extra["config"], **{k: v for k, v in new.items() if k in extra["config"]}})
        meta = {**extra.get("meta", {}), **{k: v for k, v in new.items() if k not in extra["config"]}}
        trainer = cls(config, run_dir=run_dir, meta=meta, state=state, _resumed=True, **kwargs)
        trainer.resume_changes = diffs
        return trainer


#: Lightning's advice that does not apply here (in-memory tensors need no loader workers; the
#: logs directory is rewritten on purpose)
_QUIET = (
    ".*does not have many workers.*",
    ".*Experiment logs directory.*",
    ".*The number of training batches.*",
    ".*Total length of .* across ranks is zero.*",
    ".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*",
)


class _NoAdvert(logging.Filter):
    """Drops Lightning's advertisement for its cloud logger, printed on every run, and its tip to
    allow TF32 matmuls on CUDA: a KVAE step is launch-bound there (bf16 gave 1.03x on an H200), and
    lower-precision products would cost the float32 parts of the filter accuracy."""

    def filter(self, record):
        message = record.getMessage()
        return "litlogger" not in message and "set_float32_matmul_precision" not in message


@contextlib.contextmanager
def _lightning_info(show: bool):
    """Lightning's INFO lines (devices found) only when progress is shown, and never its adverts."""
    names = ("lightning.pytorch", "lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")
    loggers = [logging.getLogger(n) for n in names]
    levels = [logger.level for logger in loggers]
    advert = _NoAdvert()
    for logger in loggers:
        logger.addFilter(advert)
        if not show:
            logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
            logger.removeFilter(advert)


def _has_tensorboard() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None or importlib.util.find_spec("tensorboardX") is not None


def _holds_data(path: str) -> bool:
    """Whether ``path`` is a file with something in it (an earlier run's checkpoint or log rows)."""
    return os.path.isfile(path) and os.path.getsize(path) > 0


def _check_nonempty(data, what: str) -> None:
    if len(data) == 0:
        where = getattr(data, "path", None)
        split = getattr(data, "split", "")
        raise ValueError(f"{what} holds no sequences ({split!r} split of {where})" if where else f"{what} is empty")


def run_settings(config: KVAEConfig, meta=None) -> dict:
    """The settings a run in a run directory must have to be continued as ``config`` (the
    ``changes`` of :meth:`Trainer.resume`): the config's fields and ``meta``, less the seed
    where the run chose its own among ``select_seeds`` (:func:`fit_selecting_seed`)."""
    fields = {k: v for k, v in config.to_dict().items() if k != "seed" or config.select_seeds == 1}
    return {**fields, **(meta or {})}


def fit_selecting_seed(config: KVAEConfig, train, valid, run_dir: str, monitor, meta=None, key="valid_p05_error",
                       **kwargs) -> Trainer:  # fmt: skip
    """
    Model selection among seeds on validation data: trains ``config.select_seeds`` runs (seeds
    ``config.seed``, ``config.seed + 1``, ...) for ``config.select_epochs`` epochs each in
    ``run_dir/seeds/seed<N>``, then continues the one whose ``monitor`` gave the lowest ``key``
    (by default the validation imputation error of
    :class:`~pyro_kvae.evaluation.ValidationMonitor`, which needs no true positions) at its last
    selection epoch, in ``run_dir``, to ``config.epochs``. ``run_dir/selection.json`` records the
    scores and the seed chosen.

    A run whose a-space folds early (the authors' box: about 0.025 against 0.017 wrong pixels
    at p = 0.5 after 3 epochs) is dropped here. Every step resumes: finished candidates are not
    trained again, and once the choice is made the run continues as any other
    (:meth:`Trainer.resume`).

    :param monitor: called after each epoch with the model (see :class:`Trainer`); required.
    :param kwargs: passed to every :class:`Trainer` (e.g. ``progress``).
    :returns: the chosen run's trainer, trained to ``config.epochs``.
    """
    if monitor is None:
        raise ValueError(
            "fit_selecting_seed needs a monitor (e.g. pyro_kvae.evaluation.ValidationMonitor) to score seeds"
        )
    if config.select_seeds < 2:
        raise ValueError(f"fit_selecting_seed needs config.select_seeds >= 2, got {config.select_seeds}")
    settings = run_settings(config, meta)  # a run there with other settings is refused (Trainer.resume)
    if not os.path.exists(os.path.join(run_dir, CHECKPOINT)):
        scores = {}
        for seed in range(config.seed, config.seed + config.select_seeds):
            seed_dir = os.path.join(run_dir, "seeds", f"seed{seed}")
            if os.path.exists(os.path.join(seed_dir, CHECKPOINT)):
                candidate = Trainer.resume(seed_dir, changes=settings, monitor=monitor, **kwargs)
            else:
                candidate = Trainer(dataclasses.replace(config, seed=seed), run_dir=seed_dir, meta=meta,
                                    monitor=monitor, overwrite=True, **kwargs)  # fmt: skip
            candidate.fit(train, valid, epochs=config.select_epochs)
            row = candidate.history[config.select_epochs - 1]
            if key not in row:
                raise ValueError(f"the monitor gave no {key!r} to select on (it gave {sorted(row)})")
            scores[seed] = row[key]
        chosen = min(scores, key=scores.get)
        source = os.path.join(run_dir, "seeds", f"seed{chosen}", CHECKPOINT)
        with open(source, "rb") as f:
            atomic_write(os.path.join(run_dir, CHECKPOINT), lambda out: out.write(f.read()))
        write_json(os.path.join(run_dir, SELECTION), {"key": key, "epoch": config.select_epochs,
                                                      "scores": {str(k): v for k, v in scores.items()},
                                                      "chosen_seed": chosen})  # fmt: skip
    trainer = Trainer.resume(run_dir, changes=settings, monitor=monitor, **kwargs)
    trainer.fit(train, valid)
    return trainer
