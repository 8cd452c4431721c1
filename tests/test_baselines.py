# SPDX-License-Identifier: Apache-2.0
"""The table 1 baselines (DVBF, DMM) and the imputation baselines' training."""

import contextlib
import math
import os

import pyro
import pytest
import torch
from pyro import poutine

from pyro_kvae.baselines import (
    DMM,
    DVBF,
    RNNBaseline,
    encode_codes,
    free_running_mask,
    imputation_error,
    probe_imputation_error,
    reconstruction_error,
    train_rnn_baseline,
    train_sequence_model,
)
from pyro_kvae.data import VideoDataset, generate, save
from pyro_kvae.nn import MLPDecoder, MLPEncoder
from pyro_kvae.nn.vae import PIXEL_VAR_FLOOR


def frames(N=3, T=5, size=4, likelihood="bernoulli", seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(N, T, size, size, generator=g)
    return (x > 0.6).float() if likelihood == "bernoulli" else x


def test_dvbf_transition_known_answer():
    torch.manual_seed(0)
    m = DVBF(4, dim_z=3, dim_u=2, M=4, hidden=8)
    z, u, w = torch.randn(5, 3), torch.randn(5, 2), torch.randn(5, 3)
    alpha = torch.softmax(m.alpha(z), -1)
    expected = z.clone()
    for i in range(4):  # sum_i alpha^i (A^i z + B^i u + C^i w), written out
        expected += alpha[:, i, None] * (z @ m.A[i].T + u @ m.B[i].T + w @ m.C[i].T)
    assert torch.allclose(m.transition(z, u, w), expected, atol=1e-6)
    with torch.no_grad():  # one mode only: exactly the locally linear step of that mode
        m.alpha.weight.zero_()
        m.alpha.bias.copy_(torch.tensor([0.0, 100.0, 0.0, 0.0]))
    one = z + z @ m.A[1].T + u @ m.B[1].T + w @ m.C[1].T
    assert torch.allclose(m.transition(z, u, w), one, atol=1e-5)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian_learned"])
def test_dvbf_joint_density_against_a_hand_written_one(likelihood):
    """log p(x, w) of the model, replayed on a guide sample, equals a float64 computation
    written out here from the DVBF's equations (N(0, I) noise, z_1 = g(w_1), the emission)."""
    torch.manual_seed(1)
    m = DVBF(4, dim_z=2, dim_u=1, M=3, hidden=8, likelihood=likelihood).double()
    if likelihood == "gaussian_learned":
        with torch.no_grad():
            m.pixel_log_var.copy_(torch.randn(4, 4))
    x, u = frames(2, 4, 4, likelihood).double(), torch.randn(2, 4, 1, dtype=torch.float64)
    guide = poutine.trace(m.guide).get_trace(x, u)
    model = poutine.trace(poutine.replay(m.model, trace=guide)).get_trace(x, u)
    w = [guide.nodes[f"w_{t}"]["value"] for t in range(4)]
    expected = 0.0
    with torch.no_grad():
        z = m.initial(w[0])
        for t in range(4):
            if t > 0:
                z = m.transition(z, u[:, t], w[t])
            expected += (-0.5 * w[t] ** 2 - 0.5 * math.log(2 * math.pi)).sum()
            out = m.emitter(z).reshape(2, 4, 4)
            if likelihood == "bernoulli":
                p = torch.sigmoid(out)
                expected += (x[:, t] * p.log() + (1 - x[:, t]) * (1 - p).log()).sum()
            else:
                var = PIXEL_VAR_FLOOR + m.pixel_log_var.exp()
                expected += (-0.5 * (x[:, t] - out) ** 2 / var - 0.5 * torch.log(2 * math.pi * var)).sum()
    assert model.log_prob_sum().item() == pytest.approx(expected.item(), rel=1e-10)


@pytest.mark.parametrize("cls", [DVBF, DMM])
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian_learned"])
def test_gradients_reach_every_parameter(cls, likelihood):
    torch.manual_seed(0)
    m = cls(4, dim_z=2, dim_u=1, likelihood=likelihood)
    x, u = frames(3, 5, 4, likelihood), torch.randn(3, 5, 1)
    loss = pyro.infer.Trace_ELBO().differentiable_loss(m.model, m.guide, x, u)
    loss.backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    # DMM's z_0 prior loc is z0 and guide start is zq0; both are used. Every parameter must train.
    assert missing == [], missing
    assert torch.isfinite(loss)


@pytest.mark.parametrize("cls", [DVBF, DMM])
def test_bad_input_gives_a_clear_error(cls):
    m = cls(4, dim_z=2, dim_u=1)
    x = frames(2, 5, 4)
    with pytest.raises(ValueError, match=r"x must have shape \(batch, T, 4, 4\), got \(2, 5, 16\)"):
        m.model(x.flatten(2), torch.zeros(2, 5, 1))
    with pytest.raises(ValueError, match=r"u must be a tensor of shape \(batch, T, dim_u\) = \(2, 5, 1\), got None"):
        m.guide(x, None)
    with pytest.raises(ValueError, match=r"got \(2, 4, 1\)"):
        m.model(x, torch.zeros(2, 4, 1))
    with pytest.raises(TypeError, match="x must be a floating point tensor"):
        m.model(x.long(), torch.zeros(2, 5, 1))
    with pytest.raises(ValueError, match="likelihood must be 'bernoulli' or 'gaussian_learned'"):
        cls(4, likelihood="poisson")


def test_sequence_model_training_improves_and_resumes_exactly(tmp_path, monkeypatch):
    path = str(tmp_path / "pendulum.npz")
    save(path, generate("pendulum", (16, 8, 1), seed=0, progress=False, size=8, T=5))
    train, valid = VideoDataset(path, "train"), VideoDataset(path, "valid")

    def run(epochs, checkpoint):
        torch.manual_seed(0)
        m = DVBF(8, dim_z=2, dim_u=1, M=2, hidden=16, likelihood="gaussian_learned")
        history = train_sequence_model(m, train, epochs, batch_size=8, lr=3e-3, valid=valid,
                                       checkpoint=checkpoint, progress=False)  # fmt: skip
        return m, history

    m, history = run(6, str(tmp_path / "straight.pt"))
    assert len(history) == 6 and history[-1]["valid_elbo"] > history[0]["valid_elbo"]
    assert history[0]["recon_weight"] < history[-1]["recon_weight"] == 1.0  # annealed
    assert m.recon_weight == 1.0 and not m.training
    with interrupted_after(3, monkeypatch):  # interrupted after 3 epochs ...
        run(6, str(tmp_path / "pieces.pt"))
    resumed, again = run(6, str(tmp_path / "pieces.pt"))  # ... and continued
    assert [h["train_loss"] for h in again] == [h["train_loss"] for h in history]
    for a, b in zip(m.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    assert sorted(os.listdir(tmp_path)) == ["pendulum.npz", "pieces.pt", "straight.pt"]


def test_free_running_masks_cover_every_drop_rate():
    m = free_running_mask((2000, 20), torch.Generator().manual_seed(0))
    assert m[:, 0].all()
    observed = m[:, 1:].float().mean(1)
    assert observed.min() < 0.1 and observed.max() > 0.9 and abs(observed.mean().item() - 0.5) < 0.03


@contextlib.contextmanager
def interrupted_after(saves, monkeypatch):
    """Stops training (KeyboardInterrupt) right after its ``saves``-th checkpoint."""
    import pyro_kvae.train

    real, count = pyro_kvae.train.atomic_save, [0]

    def save(obj, path):
        real(obj, path)
        count[0] += 1
        if count[0] == saves:
            raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(pyro_kvae.train, "atomic_save", save)
        with pytest.raises(KeyboardInterrupt):
            yield


def test_rnn_baseline_training_selects_on_validation_and_resumes(tmp_path, monkeypatch):
    torch.manual_seed(0)
    x = (torch.rand(32, 6, 4, 4) > 0.7).float()
    valid = (torch.rand(8, 6, 4, 4) > 0.7).float()

    def run(epochs, checkpoint, variational):
        torch.manual_seed(0)
        model = RNNBaseline(MLPEncoder(4, 2, (16,)), MLPDecoder(4, 2, (16,)), variational)
        info = train_rnn_baseline(model, x, epochs, epochs, batch_size=8, lr=1e-2, progress=False, valid=valid,
                                  checkpoint=checkpoint)  # fmt: skip
        return model, info

    for variational in (False, True):
        before = reconstruction_error(RNNBaseline(MLPEncoder(4, 2, (16,)), MLPDecoder(4, 2, (16,)), variational), x)
        model, info = run(4, None, variational)
        stages = [h["stage"] for h in info["history"]]
        assert stages == ["ae"] * 4 + ["rnn"] * 4 and not model.training
        best_ae = min(h["valid_error"] for h in info["history"] if h["stage"] == "ae")
        assert info["reconstruction_error_valid"] == pytest.approx(best_ae)  # the kept weights are the best
        assert reconstruction_error(model, valid) == pytest.approx(best_ae)
        assert reconstruction_error(model, x) < before
    for variational in (False, True):
        straight, info = run(4, str(tmp_path / f"a{variational}.pt"), variational)
        for stop in (2, 6):  # interrupted in the auto-encoder stage, and in the LSTM stage
            path = str(tmp_path / f"b{variational}{stop}.pt")
            with interrupted_after(stop, monkeypatch):
                run(4, path, variational)
            resumed, info2 = run(4, path, variational)
            assert [h["train_loss"] for h in info2["history"]] == [h["train_loss"] for h in info["history"]]
            for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
                assert torch.equal(a, b)


def test_probe_imputation_error_scores_the_code_and_changes_nothing():
    torch.manual_seed(0)
    x = (torch.rand(32, 6, 4, 4) > 0.7).float()
    valid = (torch.rand(8, 6, 4, 4) > 0.7).float()
    mask = torch.rand(8, 6) > 0.5
    mask[:, 0] = True
    model = RNNBaseline(MLPEncoder(4, 2, (16,)), MLPDecoder(4, 2, (16,)), variational=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    error = probe_imputation_error(model, x, valid, mask, epochs=(1, 3), seed=5)
    assert 0.0 <= error <= 1.0 and model.training
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert probe_imputation_error(model, x, valid, mask, epochs=(1, 3), seed=5) == error  # deterministic
    # the same probe on another code (the encoder's output layer scaled) measures something else
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.mul_(3.0)
    assert probe_imputation_error(model, x, valid, mask, epochs=(1, 3), seed=5) != error


def test_rnn_baseline_training_pauses_and_goes_on_as_if_never_paused(tmp_path):
    torch.manual_seed(0)
    x = (torch.rand(32, 6, 4, 4) > 0.7).float()
    valid = (torch.rand(8, 6, 4, 4) > 0.7).float()

    def run(checkpoint, pause_after=None):
        torch.manual_seed(0)
        model = RNNBaseline(MLPEncoder(4, 2, (16,)), MLPDecoder(4, 2, (16,)), variational=True)
        info = train_rnn_baseline(model, x, 4, 3, batch_size=8, lr=1e-2, progress=False, valid=valid,
                                  checkpoint=checkpoint, pause_after=pause_after)  # fmt: skip
        return model, info

    straight, info = run(str(tmp_path / "a.pt"))
    path = str(tmp_path / "b.pt")
    paused, first = run(path, pause_after=2)
    assert first["stage"] == "ae" and [h["stage"] for h in first["history"]] == ["ae", "ae"]
    assert math.isnan(first["imputation_error_valid"])
    again, second = run(path, pause_after=2)  # already there: no epoch more
    assert len(second["history"]) == 2
    assert all(torch.equal(a, b) for a, b in zip(paused.state_dict().values(), again.state_dict().values()))
    resumed, rest = run(path)
    assert rest["stage"] == info["stage"] == "done"
    assert [h["train_loss"] for h in rest["history"]] == [h["train_loss"] for h in info["history"]]
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()))


def test_rnn_baseline_on_a_trained_autoencoder_trains_only_its_lstm(tmp_path):
    """epochs_ae=0 (the AE-RNN on the KVAE's auto-encoder): the encoder and decoder stay as they
    came, the LSTM trains, and a checkpoint of the other kind is refused by name."""
    torch.manual_seed(0)
    x = (torch.rand(32, 6, 4, 4) > 0.7).float()
    valid = (torch.rand(8, 6, 4, 4) > 0.7).float()
    model = RNNBaseline(MLPEncoder(4, 2, (16,)), MLPDecoder(4, 2, (16,)), variational=False)
    autoencoder = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(("encoder", "decoder"))}
    lstm = model.lstm.weight_ih_l0.detach().clone()
    path = str(tmp_path / "kvae-ae.pt")
    info = train_rnn_baseline(model, x, 0, 3, batch_size=8, progress=False, valid=valid, checkpoint=path)
    assert [h["stage"] for h in info["history"]] == ["rnn"] * 3 and info["epochs"] == {"ae": 0, "rnn": 3}
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in autoencoder.items())
    assert not torch.equal(lstm, model.lstm.weight_ih_l0)
    assert info["reconstruction_error_valid"] == pytest.approx(reconstruction_error(model, valid))
    assert 0.0 <= info["imputation_error_valid"] <= 1.0
    with pytest.raises(ValueError, match=r"kvae-ae.pt was trained without an auto-encoder stage, but epochs_ae=2"):
        train_rnn_baseline(model, x, 2, 3, progress=False, checkpoint=path)
    with pytest.raises(ValueError, match="epochs_ae must be at least 0"):
        train_rnn_baseline(model, x, -1, 3, progress=False)


@pytest.mark.parametrize("variational", [False, True])
def test_imputation_error_is_that_of_impute_with_or_without_the_codes(variational):
    torch.manual_seed(0)
    x = (torch.rand(10, 6, 4, 4) > 0.7).float()
    mask = torch.rand(10, 6) > 0.5
    mask[:, 0] = True
    model = RNNBaseline(MLPEncoder(4, 2, (16,)), MLPDecoder(4, 2, (16,)), variational).eval()
    imputed = model.impute(x, mask)
    by_frame = ((imputed > 0.5) != (x > 0.5)).float().flatten(2).mean(-1)
    expected = (by_frame[~mask].sum() / (~mask).sum()).item()
    assert imputation_error(model, x, mask, batch_size=3) == pytest.approx(expected, abs=1e-7)
    codes = encode_codes(model, x)
    assert imputation_error(model, x, mask, batch_size=4, codes=codes) == pytest.approx(expected, abs=1e-7)
