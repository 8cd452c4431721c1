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

from typing import Optional

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from pyro.nn.module import to_pyro_module_
from torch import nn
from tqdm import tqdm

from .nn.vae import frame_distribution, frame_mask


class RNNBaseline(nn.Module):
    """
    :param encoder: ``x (..., *frame_shape) -> (loc, scale) (..., dim_a)`` (the KVAE's encoder class,
        with its ``frame_shape``).
    :param decoder: ``a (..., dim_a) -> logits (..., *frame_shape)``.
    :param bool variational: VAE-RNN (sampled codes, KL to N(0, I)) instead of AE-RNN.
    :param int hidden: LSTM units.
    """

    def __init__(self, encoder, decoder, variational: bool, dim_a: int = 2, hidden: int = 50, likelihood="bernoulli"):
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
            pred = self.head(self.lstm(inputs)[0])
            return a, pred
        state, prev = None, self.a0.expand(N, -1)
        filled, preds = [], []
        for t in range(T):
            h, state = self.lstm(prev.unsqueeze(1), state)
            p = self.head(h[:, 0])
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
):
    """
    Trains ``model`` on videos ``x (N, T, H, W)``: first the (V)AE on all frames,
    then the LSTM on the (fixed) encoder means, predicting ``a_t`` from ``a_{<t}``.
    Returns the final losses ``(autoencoder, rnn)``.
    """
    device = torch.device(device or "cpu")
    model.to(device)
    g = torch.Generator().manual_seed(seed)
    ae_params = list(model.encoder.parameters()) + list(model.decoder.parameters())
    opt = torch.optim.Adam(ae_params, lr=lr)
    frames = x.flatten(0, 1)  # (N * T, *frame_shape)
    ae_loss = rnn_loss = float("nan")
    for _ in tqdm(range(epochs_ae), desc="autoencoder", disable=not progress):
        for idx in torch.randperm(len(frames), generator=g).split(batch_size * x.shape[1]):
            loss = model.autoencoder_loss(frames[idx].to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            ae_loss = loss.item()
    with torch.no_grad():
        codes = torch.cat([model.encoder(x[i : i + 256].to(device))[0] for i in range(0, len(x), 256)])
    rnn_params = list(model.lstm.parameters()) + list(model.head.parameters()) + [model.a0]
    opt = torch.optim.Adam(rnn_params, lr=lr)
    for _ in tqdm(range(epochs_rnn), desc="rnn", disable=not progress):
        for idx in torch.randperm(len(x), generator=g).split(batch_size):
            a = codes[idx.to(device)]
            _, pred = model.predict(a)
            loss = (pred - a).pow(2).sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            rnn_loss = loss.item()
    return ae_loss, rnn_loss


class DMM(PyroModule):
    """
    Deep Markov model (Krishnan et al. 2017), the paper's table 1 baseline, in the style of
    Pyro's ``examples/dmm.py``: ``z_t ~ N(mu(z_{t-1}, u_t), sigma(z_{t-1}, u_t))`` with a gated
    transition, ``x_t ~ Bernoulli(emitter(z_t))``; the guide runs an RNN backwards over the
    frames and combines its state with ``z_{t-1}``.

    :param int frame_size: ``H == W``.
    :param int dim_z: latent dimension.
    :param int dim_u: control dimension (0: none).
    """

    def __init__(self, frame_size=16, dim_z=3, dim_u=0, hidden=100, rnn_hidden=100):
        super().__init__()
        n = frame_size * frame_size
        self.frame_size, self.dim_z, self.dim_u = frame_size, dim_z, dim_u
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
        """``x (batch, T, H, W)`` binary frames, ``u (batch, T, dim_u)`` controls."""
        N, T = x.shape[:2]
        with pyro.plate("sequences", N):
            z = self.z0.expand(N, -1)
            for t in pyro.markov(range(T)):
                loc, scale = self._transition(z, None if u is None else u[:, t])
                z = pyro.sample(f"z_{t}", dist.Normal(loc, scale).to_event(1))
                logits = self.emitter(z).unflatten(-1, (self.frame_size, self.frame_size))
                pyro.sample(f"x_{t}", dist.Bernoulli(logits=logits).to_event(2), obs=x[:, t])

    def guide(self, x, u=None, mask=None):
        N, T = x.shape[:2]
        h, _ = self.rnn(x.flatten(-2).flip(1))
        h = h.flip(1)  # h_t summarises x_{t:T}
        with pyro.plate("sequences", N):
            z = self.zq0.expand(N, -1)
            for t in pyro.markov(range(T)):
                c = self.combine(torch.cat([z, h[:, t]], -1))
                z = pyro.sample(f"z_{t}", dist.Normal(self.q_loc(c), self.q_scale(c) + 1e-3).to_event(1))
