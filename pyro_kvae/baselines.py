# SPDX-License-Identifier: Apache-2.0
"""
The paper's baselines: AE-RNN and VAE-RNN for imputation (section 5.1) and a
deep Markov model for the pendulum ELBO (table 1).

An auto-encoder with the KVAE's architecture (deterministic for AE-RNN, a
VAE with a standard normal prior for VAE-RNN) is trained on single frames;
then an LSTM is trained to predict the next encoding. During imputation the
LSTM reads the encoding of a frame when it is observed and its own previous
prediction otherwise (like filtering in the KVAE), and the decoder draws the
frames.
"""

import math
import os
import time
from typing import Optional

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.nn import PyroModule
from pyro.nn.module import to_pyro_module_
from torch import nn
from tqdm import tqdm

from .nn.vae import PIXEL_VAR_FLOOR, frame_distribution, frame_mask


class RNNBaseline(nn.Module):
    """
    :param encoder: ``x (..., *frame_shape) -> (loc, scale) (..., dim_a)`` (the KVAE's encoder class,
        with its ``frame_shape``).
    :param decoder: ``a (..., dim_a) -> logits (..., *frame_shape)``.
    :param bool variational: VAE-RNN (sampled codes, KL to N(0, I)) instead of AE-RNN.
    :param int hidden: LSTM units.
    """

    def __init__(self, encoder, decoder, variational: bool, dim_a: int = 2, hidden: int = 128, likelihood="bernoulli"):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.variational, self.likelihood = variational, likelihood
        self.frame_shape = tuple(getattr(encoder, "frame_shape", ()))
        self.lstm = nn.LSTM(dim_a, hidden, batch_first=True)
        self.head = nn.Linear(hidden, dim_a)
        self.a0 = nn.Parameter(torch.zeros(dim_a))

    def autoencoder_loss(self, x):
        """Negative (ELBO for VAE, log-likelihood for AE) per frame, ``x (..., H, W)``."""
        loc, scale = self.encoder(x)
        a = loc + scale * torch.randn_like(scale) if self.variational else loc
        nll = -frame_distribution(self.decoder(a), self.likelihood).log_prob(x).flatten(-len(self.frame_shape)).sum(-1)
        if self.variational:
            kl = 0.5 * (loc**2 + scale**2 - 1 - 2 * scale.log()).sum(-1)
            nll = nll + kl
        return nll.mean()

    def predict(self, a, mask=None):
        """
        One-step predictions with observed encodings fed where ``mask`` is True.

        :param torch.Tensor a: ``(batch, T, dim_a)`` encodings (anything where missing).
        :param torch.Tensor mask: bool ``(batch, T)`` (default: all observed, teacher forcing).
        :returns: ``(batch, T, dim_a)``: ``a`` where observed, the LSTM's prediction elsewhere;
            and the raw predictions ``(batch, T, dim_a)`` of ``a_t`` from ``a_{<t}``.
        """
        N, T, _ = a.shape
        if mask is None:  # teacher forcing in one call
            inputs = torch.cat([self.a0.expand(N, 1, -1), a[:, :-1]], 1)
            pred = inputs + self.head(self.lstm(inputs)[0])  # the LSTM predicts the step a_t - a_{t-1}
            return a, pred
        state, prev = None, self.a0.expand(N, -1)
        filled, preds = [], []
        for t in range(T):
            h, state = self.lstm(prev.unsqueeze(1), state)
            p = prev + self.head(h[:, 0])
            prev = torch.where(mask[:, t, None], a[:, t], p)
            filled.append(prev)
            preds.append(p)
        return torch.stack(filled, 1), torch.stack(preds, 1)

    @torch.no_grad()
    def impute(self, x, mask):
        """Frames ``(batch, T, H, W)``: decoded LSTM predictions at missing steps, reconstructions elsewhere."""
        x = torch.where(frame_mask(mask, self.frame_shape), x, x.new_zeros(()))
        a, _ = self.encoder(x)
        filled, _ = self.predict(a, mask)
        return frame_distribution(self.decoder(filled), self.likelihood).mean


def free_running_mask(shape, generator=None, device=None) -> torch.Tensor:
    """
    Training masks for the LSTM: each sequence drops its frames after the first with its own
    probability ``p ~ U(0, 1)``, so the network learns to run on its own predictions for gaps
    of every length, as it must at test time. Bool ``(batch, T)``, True where observed.
    """
    N, T = shape
    p = torch.rand(N, 1, generator=generator)
    mask = torch.rand(N, T, generator=generator) >= p
    mask[:, 0] = True
    return mask.to(device)


@torch.no_grad()
def reconstruction_error(model: RNNBaseline, x: torch.Tensor, batch_size: int = 4096) -> float:
    """Fraction of wrong pixels of the auto-encoder's reconstructions (encoder means) of frames
    ``x (..., *frame_shape)``: the floor under the baseline's imputations."""
    frames = x.flatten(0, x.dim() - len(model.frame_shape) - 1)
    device = next(model.parameters()).device
    wrong = 0.0
    for chunk in frames.split(batch_size):
        chunk = chunk.to(device)
        mean = frame_distribution(model.decoder(model.encoder(chunk)[0]), model.likelihood).mean
        wrong += ((mean > 0.5) != (chunk > 0.5)).float().sum().item()
    return wrong / frames.numel()


@torch.no_grad()
def imputation_error(model: RNNBaseline, x: torch.Tensor, mask: torch.Tensor, batch_size: int = 256,
                     codes: Optional[torch.Tensor] = None) -> float:  # fmt: skip
    """
    Fraction of wrong pixels of :meth:`RNNBaseline.impute` on the frames of ``x (N, T, *frame_shape)``
    where ``mask (N, T)`` is False. ``codes (N, T, dim_a)``, the encodings of ``x``
    (:func:`encode_codes`), spare the encoder when they are known (the LSTM stage, whose
    auto-encoder is fixed); only the missing frames are decoded.
    """
    device = next(model.parameters()).device
    wrong = missing = 0.0
    for i in range(0, len(x), batch_size):
        xb, mb = x[i : i + batch_size].to(device), mask[i : i + batch_size].to(device)
        a = model.encoder(xb)[0] if codes is None else codes[i : i + batch_size].to(device)
        filled, _ = model.predict(a, mb)  # reads a only where observed
        gone = ~mb
        mean = frame_distribution(model.decoder(filled[gone]), model.likelihood).mean
        wrong += ((mean > 0.5) != (xb[gone] > 0.5)).float().flatten(1).mean(-1).sum().item()
        missing += gone.sum().item()
    return wrong / max(missing, 1.0)


def lstm_epoch(model: RNNBaseline, codes: torch.Tensor, optimizer, generator, batch_size: int = 32,
               free_running: bool = False) -> torch.Tensor:  # fmt: skip
    """
    One pass of ``model``'s LSTM over the codes ``codes (N, T, dim_a)`` of its auto-encoder, in
    shuffled batches of ``batch_size`` sequences, each step predicting ``a_t`` from ``a_{<t}``
    (teacher forcing, or :func:`free_running_mask` with ``free_running``). Returns the mean
    squared prediction error of the pass (a 0-d tensor).
    """
    total, n = 0.0, 0
    for idx in torch.randperm(len(codes), generator=generator).split(batch_size):
        a = codes[idx.to(codes.device)]
        mask = free_running_mask(a.shape[:2], generator, a.device) if free_running else None
        _, pred = model.predict(a, mask)
        loss = (pred - a).pow(2).sum(-1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total, n = total + loss.detach(), n + 1
    return total / n


@torch.no_grad()
def encode_codes(model: RNNBaseline, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The auto-encoder's codes (encoder means) of videos ``x (N, T, *frame_shape)``: ``(N, T, dim_a)``
    on the model's device."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    codes = torch.cat([model.encoder(x[i : i + batch_size].to(device))[0] for i in range(0, len(x), batch_size)])
    model.train(was_training)
    return codes


def probe_imputation_error(model: RNNBaseline, x: torch.Tensor, valid: torch.Tensor, valid_mask: torch.Tensor,
                           epochs=(10, 20), seed: int = 0, lr: float = 3e-3) -> float:  # fmt: skip
    """
    How good an auto-encoder's code is for the baseline's dynamics, measured without true
    positions: a fresh LSTM (``model``'s size, initialised from ``seed``) is trained on the codes
    of the videos ``x (N, T, *frame_shape)`` as :func:`train_rnn_baseline`'s second stage does,
    and the lowest validation imputation error (:func:`imputation_error` on ``valid (N', T,
    *frame_shape)`` with the bool ``valid_mask (N', T)``, True where observed) after each number
    of LSTM epochs in ``epochs`` (positive ints) is returned. ``model`` and the global random
    stream are left as they were.
    """
    if not epochs or any(isinstance(e, bool) or not isinstance(e, int) or e < 1 for e in epochs):
        raise ValueError(f"epochs must be a non-empty sequence of positive ints, got {epochs!r}")
    rng, was_training = torch.get_rng_state(), model.training
    torch.manual_seed(seed)
    probe = RNNBaseline(model.encoder, model.decoder, model.variational, model.a0.numel(), model.lstm.hidden_size,
                        model.likelihood).to(model.a0.device)  # fmt: skip
    torch.set_rng_state(rng)
    params = list(probe.lstm.parameters()) + list(probe.head.parameters()) + [probe.a0]
    opt, g = torch.optim.Adam(params, lr=lr), torch.Generator().manual_seed(seed)
    codes, valid_codes, errors = encode_codes(model, x), encode_codes(model, valid), []
    for epoch in range(1, max(epochs) + 1):
        lstm_epoch(probe, codes, opt, g)
        if epoch in epochs:
            probe.eval()
            errors.append(imputation_error(probe, valid, valid_mask, codes=valid_codes))
            probe.train()
    model.train(was_training)  # the probe shares its encoder and decoder
    return min(errors)


def train_rnn_baseline(
    model: RNNBaseline,
    x: torch.Tensor,
    epochs_ae: int = 10,
    epochs_rnn: int = 10,
    batch_size: int = 32,
    lr: float = 1e-3,
    seed: int = 0,
    device: Optional[str] = None,
    progress: bool = True,
    valid: Optional[torch.Tensor] = None,
    checkpoint: Optional[str] = None,
    desc: str = "baseline",
    lr_rnn: float = 3e-3,
    free_running: bool = False,
    patience: Optional[int] = None,
    pause_after: Optional[int] = None,
) -> dict:
    """
    Trains ``model`` on videos ``x (N, T, *frame_shape)`` in two stages (paper section 5.1):

    1. the auto-encoder (VAE for VAE-RNN) on single frames, ``epochs_ae`` passes over all
       frames in batches of ``batch_size`` sequences' frames (``epochs_ae=0``: it is trained
       already, e.g. the KVAE's own, and stays as it is);
    2. the LSTM (learning rate ``lr_rnn``) on the fixed encoder means, predicting ``a_t`` from
       ``a_{<t}`` (teacher forcing); with ``free_running`` each sequence instead drops frames
       with its own probability (:func:`free_running_mask`) and the LSTM reads its own
       prediction where a frame is dropped, as in :meth:`RNNBaseline.impute`. (On the bouncing
       ball, teacher forcing imputes better at every drop rate we tried: 0.0158 against 0.0208
       wrong pixels at p = 0.5 after 60 and 50 epochs.)

    With ``valid (N', T, *frame_shape)`` each stage keeps the weights of its best epoch on it
    (stage 1: reconstruction error; stage 2: imputation error with frames dropped with
    probability 0.5 after the first 4, fixed masks). With ``patience`` the auto-encoder stage
    also ends once its validation error has not improved for ``patience`` epochs (early
    stopping, at most ``epochs_ae`` epochs); the LSTM stage always runs its ``epochs_rnn``.
    With ``checkpoint`` (a path) the state is written atomically after every epoch and an
    interrupted run continues from it. With ``pause_after`` the call returns once the
    auto-encoder has trained that many epochs (if its stage has not ended before), leaving
    ``model`` with its weights of that epoch; called again with the same ``checkpoint`` the
    training goes on (how :func:`~pyro_kvae.experiments.fit_baselines` compares seeds early).

    :returns: ``{"history": [...], "reconstruction_error_valid": ..., "imputation_error_valid": ...,
        "epochs": {"ae": ..., "rnn": ...}, "stage": ...}`` (the validation numbers of the kept weights,
        NaN without ``valid`` or before the stage's end; ``"stage"`` is ``"done"``, or ``"ae"`` when paused).
    """
    from .files import remove_temporaries
    from .train import atomic_save, load_checkpoint, random_mask

    if epochs_ae < 0 or epochs_rnn < 1:
        raise ValueError(f"epochs_ae must be at least 0 and epochs_rnn at least 1, got {epochs_ae} and {epochs_rnn}")
    if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int) or patience < 1):
        raise ValueError(f"patience must be a positive int (epochs without improvement) or None, got {patience!r}")
    device = torch.device(device or "cpu")
    model.to(device)
    g = torch.Generator().manual_seed(seed)
    ae_params = list(model.encoder.parameters()) + list(model.decoder.parameters())
    rnn_params = list(model.lstm.parameters()) + list(model.head.parameters()) + [model.a0]
    state = {"stage": "ae" if epochs_ae else "rnn", "epoch": 0, "history": [], "best": None, "best_score": math.inf,
             "best_epoch": 0}  # fmt: skip
    optimizers = {"ae": torch.optim.Adam(ae_params, lr=lr), "rnn": torch.optim.Adam(rnn_params, lr=lr_rnn)}
    if checkpoint is not None and os.path.exists(checkpoint):
        saved = load_checkpoint(checkpoint, keys=("model", "optimizers", "state", "rng"))
        model.load_state_dict(saved["model"])
        for k, opt in optimizers.items():
            opt.load_state_dict(saved["optimizers"][k])
        state = {"best_epoch": 0, **saved["state"]}
        trained_ae = any(h["stage"] == "ae" for h in state["history"])
        if trained_ae != (epochs_ae > 0):
            raise ValueError(f"checkpoint {checkpoint} was trained {'with' if trained_ae else 'without'} an "
                             f"auto-encoder stage, but epochs_ae={epochs_ae}; remove it to start afresh")  # fmt: skip
        g.set_state(saved["rng"][0])
        torch.set_rng_state(saved["rng"][1])  # the VAE's noise
    if checkpoint is not None:
        remove_temporaries(os.path.dirname(os.path.abspath(checkpoint)))
    g_valid = torch.Generator().manual_seed(seed + 1)
    valid_mask = None if valid is None else random_mask(valid.shape[:2], 0.5, 4, g_valid)
    frames = x.flatten(0, 1)  # (N * T, *frame_shape)
    codes = valid_codes = None

    def score(stage):
        if valid is None:
            return math.inf
        model.eval()
        if stage == "ae":
            out = reconstruction_error(model, valid)
        else:  # the auto-encoder is fixed in the LSTM stage: its validation codes are encoded once
            out = imputation_error(model, valid, valid_mask, codes=valid_codes)
        model.train()
        return out

    if epochs_ae == 0 and "ae_epochs" not in state:  # the auto-encoder came trained: no epoch, its score as it is
        state.update(ae_epochs=0, ae_valid_error=None if valid is None else score("ae"))
    epochs = {"ae": epochs_ae, "rnn": epochs_rnn}
    bar = tqdm(total=epochs_ae + epochs_rnn, initial=len(state["history"]), desc=desc, disable=not progress)
    for stage in ("ae", "rnn"):
        if state["stage"] != stage:
            continue
        if stage == "rnn":
            codes = encode_codes(model, x)
            valid_codes = None if valid is None else encode_codes(model, valid)
        while state["stage"] == stage:
            if stage == "ae" and pause_after is not None and state["epoch"] >= pause_after:
                break
            total, n, started = 0.0, 0, time.perf_counter()
            if stage == "ae":
                for idx in torch.randperm(len(frames), generator=g).split(batch_size * x.shape[1]):
                    loss = model.autoencoder_loss(frames[idx].to(device))
                    optimizers[stage].zero_grad()
                    loss.backward()
                    optimizers[stage].step()
                    total, n = total + loss.detach(), n + 1
            else:
                total, n = lstm_epoch(model, codes, optimizers[stage], g, batch_size, free_running), 1
            state["epoch"] += 1
            s = score(stage)
            row = {
                "stage": stage,
                "epoch": state["epoch"],
                "train_loss": float(total / n),
                "valid_error": s,
                "seconds": round(time.perf_counter() - started, 3),
            }
            state["history"].append({k: (None if v == math.inf else v) for k, v in row.items()})
            if valid is not None and s <= state["best_score"]:
                state["best_score"], state["best_epoch"] = s, state["epoch"]
                state["best"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
            stalled = (stage == "ae" and patience is not None and valid is not None
                       and state["epoch"] - state["best_epoch"] >= patience)  # fmt: skip
            if state["epoch"] == epochs[stage] or stalled:  # the stage is done: keep its best weights, go on
                state[f"{stage}_epochs"] = state["epoch"]
                if state["best"] is not None:
                    model.load_state_dict(state["best"])
                state.update(stage="rnn" if stage == "ae" else "done", epoch=0, best=None, best_score=math.inf,
                             best_epoch=0)  # fmt: skip
                state[f"{stage}_valid_error"] = None if s == math.inf else score(stage)
            if checkpoint is not None:
                atomic_save({"model": model.state_dict(), "optimizers": {k: o.state_dict() for k, o in
                             optimizers.items()}, "state": state, "rng": [g.get_state(), torch.get_rng_state()]},
                            checkpoint)  # fmt: skip
            bar.update()
            bar.set_postfix(stage=stage, loss=f"{row['train_loss']:.3g}")
        if state["stage"] == "ae":  # paused
            break
    bar.close()
    model.eval()
    kept = {k: state.get(f"{k}_valid_error") for k in ("ae", "rnn")}
    return {
        "history": state["history"],
        "reconstruction_error_valid": float("nan") if kept["ae"] is None else kept["ae"],
        "imputation_error_valid": float("nan") if kept["rnn"] is None else kept["rnn"],
        "epochs": {k: state.get(f"{k}_epochs") for k in ("ae", "rnn")},
        "stage": state["stage"],
    }


class SequenceModel(PyroModule):
    """
    What the table 1 baselines share: input checks and the frame likelihood
    (``"bernoulli"``, or ``"gaussian_learned"`` with a learned per-pixel variance floored at
    :data:`~pyro_kvae.nn.vae.PIXEL_VAR_FLOOR`, as the DVBF code and the paper's table 1).
    ``recon_weight`` scales ``log p(x | z)`` (DVBF anneals it; 1 when reporting).
    """

    def __init__(self, frame_size: int, dim_u: int, likelihood: str):
        super().__init__()
        if likelihood not in ("bernoulli", "gaussian_learned"):
            raise ValueError(f"likelihood must be 'bernoulli' or 'gaussian_learned', got {likelihood!r}")
        self.frame_size, self.dim_u, self.likelihood = frame_size, dim_u, likelihood
        self.recon_weight = 1.0
        if likelihood == "gaussian_learned":
            self.pixel_log_var = nn.Parameter(torch.full((frame_size, frame_size), math.log(0.1)))

    def emission(self, out):
        """``p(x_t | z_t)`` from the emitter's output ``(batch, H * W)``: batch shape ``(batch, H, W)``."""
        out = out.unflatten(-1, (self.frame_size, self.frame_size))
        var = PIXEL_VAR_FLOOR + self.pixel_log_var.exp() if self.likelihood == "gaussian_learned" else None
        return frame_distribution(out, self.likelihood, var)

    def check_inputs(self, x, u):
        """Checks frames ``x (batch, T, H, W)`` and controls ``u (batch, T, dim_u)``; returns them."""
        shape = f"(batch, T, {self.frame_size}, {self.frame_size})"
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"x must be a floating point tensor of shape {shape}, got {type(x).__name__}")
        if x.dim() != 4 or x.shape[2:] != (self.frame_size, self.frame_size):
            raise ValueError(f"x must have shape {shape}, got {tuple(x.shape)}")
        if self.dim_u == 0:
            if u is not None and u.size(-1) != 0:
                raise ValueError(f"this model has no controls (dim_u=0), got u of shape {tuple(u.shape)}")
            return None
        want = (x.shape[0], x.shape[1], self.dim_u)
        if not isinstance(u, torch.Tensor) or tuple(u.shape) != want:
            got = tuple(u.shape) if isinstance(u, torch.Tensor) else type(u).__name__
            raise ValueError(f"u must be a tensor of shape (batch, T, dim_u) = {want}, got {got}")
        return u.to(x.dtype)

    def observe(self, t, z, x_t):
        """The frame likelihood ``p(x_t | z_t)`` at step ``t``, observed at ``x_t (batch, H, W)``."""
        with poutine.scale(scale=self.recon_weight):
            pyro.sample(f"x_{t}", self.emission(self.emitter(z)).to_event(2), obs=x_t)


def _mlp(*sizes):
    layers = []
    for n, m in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n, m), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


class DVBF(SequenceModel):
    """
    Deep variational Bayes filter, locally linear variant (Karl et al. 2017), the paper's
    table 1 baseline. With ``alpha_t = softmax(W z_t + b)`` over ``M`` base matrices,

    ``z_{t+1} = z_t + A_t z_t + B_t u_{t+1} + C_t w_{t+1}``,
    ``(A_t, B_t, C_t) = sum_i alpha_t^i (A^i, B^i, C^i)``, ``w_t ~ N(0, I)``,

    ``z_1 = g(w_1)`` (an MLP), ``x_t ~ p(x_t | MLP(z_t))``. Controls follow the KVAE's
    convention: ``u[:, t]`` acts on the step into ``t`` (``u[:, 0]`` is unused).
    The guide: ``w_1`` from a bidirectional LSTM over ``(x, u)``, then
    ``q(w_{t+1} | z_t, x_{t+1}, u_{t+1})`` an MLP; ``z`` follows deterministically.
    The base matrices are point estimates here (the original also puts a prior on them).

    :param int frame_size: ``H == W``.
    :param int dim_z: state dimension (also the dimension of ``w``).
    :param int dim_u: control dimension.
    :param int M: number of base matrices.
    :param int hidden: units of the MLPs and of each direction of the LSTM.
    :param str likelihood: ``"bernoulli"`` or ``"gaussian_learned"``.
    """

    def __init__(self, frame_size=16, dim_z=3, dim_u=0, M=16, hidden=128, likelihood="bernoulli", init_std=0.05):
        super().__init__(frame_size, dim_u, likelihood)
        n = frame_size * frame_size
        self.dim_z = dim_z
        self.A = nn.Parameter(init_std * torch.randn(M, dim_z, dim_z))
        self.B = nn.Parameter(init_std * torch.randn(M, dim_z, dim_u))
        self.C = nn.Parameter(init_std * torch.randn(M, dim_z, dim_z))
        self.alpha = nn.Linear(dim_z, M)
        self.initial = _mlp(dim_z, hidden, dim_z)
        self.emitter = _mlp(dim_z, hidden, n)
        self.rnn = nn.LSTM(n + dim_u, hidden, batch_first=True, bidirectional=True)
        self.q_w1 = nn.Linear(2 * hidden, 2 * dim_z)
        self.q_w = _mlp(dim_z + n + dim_u, hidden, 2 * dim_z)
        to_pyro_module_(self)

    def transition(self, z, u, w):
        """``z_{t+1}`` from ``z (batch, dim_z)``, ``u (batch, dim_u)`` or ``None``, ``w (batch, dim_z)``."""
        alpha = torch.softmax(self.alpha(z), -1)  # (batch, M)
        A = torch.einsum("bm,mij->bij", alpha, self.A)
        C = torch.einsum("bm,mij->bij", alpha, self.C)
        step = (A @ z.unsqueeze(-1) + C @ w.unsqueeze(-1)).squeeze(-1)
        if u is not None:
            step = step + (torch.einsum("bm,mij->bij", alpha, self.B) @ u.unsqueeze(-1)).squeeze(-1)
        return z + step

    def _noise(self, N, t, like):
        return pyro.sample(f"w_{t}", dist.Normal(like.new_zeros(N, self.dim_z), 1.0).to_event(1))

    def model(self, x, u=None, mask=None):
        """``x (batch, T, H, W)`` frames, ``u (batch, T, dim_u)`` controls."""
        u = self.check_inputs(x, u)
        N, T = x.shape[:2]
        with pyro.plate("sequences", N):
            z = self.initial(self._noise(N, 0, x))
            for t in range(T):
                if t > 0:
                    z = self.transition(z, None if u is None else u[:, t], self._noise(N, t, x))
                self.observe(t, z, x[:, t])

    def guide(self, x, u=None, mask=None):
        """The recognition model of the latent sites, for SVI with :meth:`model`."""
        u = self.check_inputs(x, u)
        N, T = x.shape[:2]
        inputs = x.flatten(2) if u is None else torch.cat([x.flatten(2), u], -1)
        h, _ = self.rnn(inputs)
        half = h.size(-1) // 2
        summary = torch.cat([h[:, -1, :half], h[:, 0, half:]], -1)  # forward end, backward start
        with pyro.plate("sequences", N):
            loc, s = self.q_w1(summary).chunk(2, -1)
            w = pyro.sample("w_0", dist.Normal(loc, nn.functional.softplus(s) + 1e-3).to_event(1))
            z = self.initial(w)
            for t in range(1, T):
                loc, s = self.q_w(torch.cat([z, inputs[:, t]], -1)).chunk(2, -1)
                w = pyro.sample(f"w_{t}", dist.Normal(loc, nn.functional.softplus(s) + 1e-3).to_event(1))
                z = self.transition(z, None if u is None else u[:, t], w)


class DMM(SequenceModel):
    """
    Deep Markov model (Krishnan et al. 2017), the paper's table 1 baseline, in the style of
    Pyro's ``examples/dmm.py``: ``z_t ~ N(mu(z_{t-1}, u_t), sigma(z_{t-1}, u_t))`` with a gated
    transition, ``x_t ~ p(x_t | emitter(z_t))``; the guide runs an RNN backwards over the
    frames and combines its state with ``z_{t-1}``.

    :param int frame_size: ``H == W``.
    :param int dim_z: latent dimension.
    :param int dim_u: control dimension (0: none).
    :param str likelihood: ``"bernoulli"`` or ``"gaussian_learned"``.
    """

    def __init__(self, frame_size=16, dim_z=3, dim_u=0, hidden=100, rnn_hidden=100, likelihood="bernoulli"):
        super().__init__(frame_size, dim_u, likelihood)
        n = frame_size * frame_size
        self.dim_z = dim_z
        self.emitter = nn.Sequential(nn.Linear(dim_z, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                     nn.Linear(hidden, n))  # fmt: skip
        self.gate = nn.Sequential(nn.Linear(dim_z + dim_u, hidden), nn.ReLU(), nn.Linear(hidden, dim_z), nn.Sigmoid())
        self.proposed = nn.Sequential(nn.Linear(dim_z + dim_u, hidden), nn.ReLU(), nn.Linear(hidden, dim_z))
        self.linear = nn.Linear(dim_z + dim_u, dim_z)
        self.trans_scale = nn.Sequential(nn.ReLU(), nn.Linear(dim_z, dim_z), nn.Softplus())
        self.rnn = nn.GRU(n, rnn_hidden, batch_first=True)
        self.combine = nn.Sequential(nn.Linear(dim_z + rnn_hidden, hidden), nn.Tanh())
        self.q_loc, self.q_scale = nn.Linear(hidden, dim_z), nn.Sequential(nn.Linear(hidden, dim_z), nn.Softplus())
        self.z0 = nn.Parameter(torch.zeros(dim_z))
        self.zq0 = nn.Parameter(torch.zeros(dim_z))
        to_pyro_module_(self)  # every parameter reaches Pyro's param store (SVI with pyro.optim)

    def _transition(self, z, u_t):
        h = z if u_t is None else torch.cat([z, u_t], -1)
        g = self.gate(h)
        proposed = self.proposed(h)
        loc = (1 - g) * self.linear(h) + g * proposed
        return loc, self.trans_scale(proposed) + 1e-3

    def model(self, x, u=None, mask=None):
        """``x (batch, T, H, W)`` frames, ``u (batch, T, dim_u)`` controls."""
        u = self.check_inputs(x, u)
        N, T = x.shape[:2]
        with pyro.plate("sequences", N):
            z = self.z0.expand(N, -1)
            for t in pyro.markov(range(T)):
                loc, scale = self._transition(z, None if u is None else u[:, t])
                z = pyro.sample(f"z_{t}", dist.Normal(loc, scale).to_event(1))
                self.observe(t, z, x[:, t])

    def guide(self, x, u=None, mask=None):
        """The recognition model of the latent sites, for SVI with :meth:`model`."""
        self.check_inputs(x, u)
        N, T = x.shape[:2]
        h, _ = self.rnn(x.flatten(-2).flip(1))
        h = h.flip(1)  # h_t summarises x_{t:T}
        with pyro.plate("sequences", N):
            z = self.zq0.expand(N, -1)
            for t in pyro.markov(range(T)):
                c = self.combine(torch.cat([z, h[:, t]], -1))
                z = pyro.sample(f"z_{t}", dist.Normal(self.q_loc(c), self.q_scale(c) + 1e-3).to_event(1))


def train_sequence_model(
    model: SequenceModel,
    train,
    epochs: int,
    batch_size: int = 32,
    lr: float = 1e-3,
    clip_norm: float = 10.0,
    anneal: float = 0.5,
    seed: int = 0,
    device: Optional[str] = None,
    valid=None,
    checkpoint: Optional[str] = None,
    progress: bool = True,
    desc: str = "train",
) -> list:
    """
    Trains a :class:`DMM` or :class:`DVBF` on ``train`` (``.x (N, T, H, W)``, ``.u (N, T, dim_u)``)
    by maximising ``Trace_ELBO`` with Adam (gradient norm clipped at ``clip_norm``). The
    reconstruction weight rises linearly from 0.01 to 1 over the first ``anneal`` fraction of
    the steps (DVBF's annealing; 0 turns it off). With ``valid`` the weights of the epoch with
    the best validation ELBO are kept; with ``checkpoint`` the state is written atomically after
    every epoch and an interrupted run continues from it. Returns the per-epoch history.
    """
    from pyro.infer import Trace_ELBO

    from .files import remove_temporaries
    from .train import atomic_save, load_checkpoint

    device = torch.device(device or "cpu")
    model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    state = {"epoch": 0, "history": [], "best": None, "best_elbo": -math.inf}
    if checkpoint is not None and os.path.exists(checkpoint):
        saved = load_checkpoint(checkpoint, keys=("model", "optimizer", "state", "rng"))
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        state = {"best_epoch": 0, **saved["state"]}
        g.set_state(saved["rng"][0])
        torch.set_rng_state(saved["rng"][1])  # Pyro's samples
    if checkpoint is not None:
        remove_temporaries(os.path.dirname(os.path.abspath(checkpoint)))
    elbo = Trace_ELBO()
    steps_per_epoch = -(-len(train) // batch_size)
    ramp = max(1, int(anneal * epochs * steps_per_epoch))

    def controls(data, idx):
        u = data.u[idx].to(device)
        return u if u.size(-1) else None

    def valid_elbo():
        model.recon_weight = 1.0
        with torch.no_grad():
            idx = torch.arange(len(valid))
            return -elbo.loss(model.model, model.guide, valid.x.to(device), controls(valid, idx)) / len(valid)

    for _ in tqdm(range(state["epoch"], epochs), desc=desc, disable=not progress):
        started, total = time.perf_counter(), 0.0
        for i, idx in enumerate(torch.randperm(len(train), generator=g).split(batch_size)):
            step = state["epoch"] * steps_per_epoch + i
            model.recon_weight = min(1.0, 0.01 + 0.99 * step / ramp) if anneal > 0 else 1.0
            loss = elbo.differentiable_loss(model.model, model.guide, train.x[idx].to(device), controls(train, idx))
            opt.zero_grad()
            (loss / len(idx)).backward()
            nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
            opt.step()
            total += loss.item()
        if not math.isfinite(total):
            raise FloatingPointError(f"{desc}: the loss is not finite in epoch {state['epoch'] + 1}; try a lower lr")
        state["epoch"] += 1
        row = {"epoch": state["epoch"], "train_loss": total / len(train), "recon_weight": model.recon_weight}
        if valid is not None and len(valid):
            row["valid_elbo"] = valid_elbo()
            if row["valid_elbo"] >= state["best_elbo"]:
                state["best_elbo"] = row["valid_elbo"]
                state["best"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        row["seconds"] = round(time.perf_counter() - started, 3)
        state["history"].append(row)
        if checkpoint is not None:
            atomic_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "state": state,
                         "rng": [g.get_state(), torch.get_rng_state()]}, checkpoint)  # fmt: skip
    if state["best"] is not None:
        model.load_state_dict(state["best"])
    model.recon_weight = 1.0
    model.eval()
    return state["history"]
