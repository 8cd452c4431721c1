# SPDX-License-Identifier: Apache-2.0
"""Bad input gets a clear error naming the argument, never a silent wrong answer (one test per case found)."""

import json
import os

import numpy as np
import pyro
import pytest
import torch

from pyro_kvae.data import load_videos
from pyro_kvae.distributions import LinearGaussianSSM
from pyro_kvae.models import KVAE
from pyro_kvae.models.prior import KalmanPrior
from pyro_kvae.nn import LSTMDynamics
from pyro_kvae.nn.dynamics import RNNDynamics
from pyro_kvae.nn.vae import MLPDecoder, MLPEncoder
from pyro_kvae.ops.kalman import _same_shape, affine_steps

f64 = torch.float64


def model(**kw):
    e = torch.eye(2, dtype=f64)
    A = e.expand(5, 2, 2)
    args = dict(mu0=torch.zeros(2, dtype=f64), Sigma0=e, A=A, Q=0.1 * e, C=A, R=0.1 * e)
    args.update(kw)
    return LinearGaussianSSM(**args)


def numpy_log_prob(a, Q, R):
    """log p(a) of the model above by dense Gaussian conditioning: a = C z + v, z stacked."""
    T, n = a.shape
    cov_z = np.zeros((T * n, T * n))
    # z_1 ~ N(0, I), z_t = z_{t-1} + w_t: Cov(z_s, z_t) = I + min(s, t) Q (0-based s, t)
    for s in range(T):
        for t in range(T):
            cov_z[s * n : (s + 1) * n, t * n : (t + 1) * n] = np.eye(n) + min(s, t) * Q
    cov = cov_z + np.kron(np.eye(T), R)
    x = a.reshape(-1)
    _, logdet = np.linalg.slogdet(cov)
    return -0.5 * (x @ np.linalg.solve(cov, x) + logdet + len(x) * np.log(2 * np.pi))


def test_lgssm_float64_log_prob_checks_values_under_validation():
    e = torch.eye(2, dtype=f64)
    a = torch.randn(5, 2, dtype=f64)
    with pytest.raises(ValueError, match="R must be positive definite"):
        model(R=-0.1 * e).log_prob(a)
    Q = torch.tensor([[0.1, 0.05], [0.0, 0.1]], dtype=f64)
    with pytest.raises(ValueError, match="Q must be symmetric"):
        model(Q=Q).log_prob(a)
    with pytest.raises(ValueError, match="Sigma0 must be a finite symmetric positive definite"):
        model(Sigma0=torch.tensor([[float("inf"), 0.0], [0.0, 1.0]], dtype=f64)).log_prob(a)
    with pytest.raises(ValueError, match=r"A must be finite, with shape \(\.\.\., T, dim_z, dim_z\)"):
        model(A=torch.full((5, 2, 2), float("nan"), dtype=f64)).log_prob(a)
    bad = a.clone()
    bad[2, 0] = float("nan")
    mask = torch.ones(5, dtype=torch.bool)
    with pytest.raises(ValueError, match="a must be finite wherever mask is True"):
        model(mask=mask).log_prob(bad)
    mask[2] = False  # a missing step may hold NaN
    assert torch.isfinite(model(mask=mask).log_prob(bad))
    # the symmetric Q's answer equals a dense Gaussian's
    Qs = 0.5 * (Q + Q.mT)
    expected = numpy_log_prob(a.numpy(), Qs.numpy(), 0.1 * np.eye(2))
    assert abs(model(Q=Qs).log_prob(a).item() - expected) < 1e-8 * abs(expected)
    with pyro.validation_enabled(False):  # skipped for speed, as torch distributions do
        assert model(Q=Q).log_prob(a).dtype == f64


def test_lgssm_integer_value_is_not_truncated():
    ones = torch.ones(5, 2, dtype=torch.long)
    lp = model().log_prob(ones)
    assert lp.dtype == f64
    expected = numpy_log_prob(np.ones((5, 2)), 0.1 * np.eye(2), 0.1 * np.eye(2))
    assert abs(lp.item() - expected) < 1e-8 * abs(expected)
    assert abs(expected - (-4.988)) < 1e-3  # the value quoted in the issue


@pytest.mark.parametrize("arg", ["Q", "R", "Sigma0", "init_std"])
@pytest.mark.parametrize("value", [-0.08, 0.0, float("nan"), float("inf")])
def test_kalman_prior_refuses_non_positive_noise(arg, value):
    with pytest.raises(ValueError, match=f"{arg} must be a positive finite number"):
        KalmanPrior(LSTMDynamics(2, 2, 8), 3, **{arg: value})
    with pytest.raises(ValueError, match="dim_z must be an int >= 1"):
        KalmanPrior(LSTMDynamics(2, 2, 8), 0)


def test_npz_of_grey_videos_is_not_one_video_with_channels(tmp_path):
    np.savez(tmp_path / "c.npz", x=np.zeros((3, 5, 8, 8), np.uint8))
    with pytest.raises(ValueError, match=r"c.npz: a video \(T, H, W, C\) has C in \(1, 3, 4\), got shape"):
        load_videos(str(tmp_path / "c.npz"))
    np.savez(tmp_path / "v.npz", images=np.zeros((3, 5, 8, 8), np.uint8))
    assert load_videos(str(tmp_path / "v.npz")).shape == (3, 5, 8, 8)


def test_rgba_npy_of_videos_drops_alpha(tmp_path):
    np.save(tmp_path / "v.npy", np.zeros((2, 4, 6, 5, 4), np.uint8))
    assert load_videos(str(tmp_path / "v.npy")).shape == (2, 4, 3, 6, 5)
    np.savez(tmp_path / "v.npz", images=np.zeros((2, 4, 6, 5, 4), np.uint8))
    assert load_videos(str(tmp_path / "v.npz")).shape == (2, 4, 3, 6, 5)


def test_trainer_never_empties_an_earlier_runs_log(tmp_path):
    from pyro_kvae.config import KVAEConfig
    from pyro_kvae.train import Trainer

    run = tmp_path / "r"
    run.mkdir()
    rows = '{"epoch": 1, "train_loss": 3.0}\n'
    (run / "metrics.jsonl").write_text(rows)
    (run / "config.json").write_text(json.dumps({"K": 7}))
    config = KVAEConfig(frame_size=16, vae="mlp", mlp_hidden=(8,))
    with pytest.raises(FileExistsError, match=r"already holds an earlier run's metrics.jsonl \(and no checkpoint\)"):
        Trainer(config, run_dir=str(run), progress=False)
    assert (run / "metrics.jsonl").read_text() == rows and json.loads((run / "config.json").read_text()) == {"K": 7}
    Trainer(config, run_dir=str(run), progress=False, overwrite=True)  # asked for: starts afresh
    assert (run / "metrics.jsonl").read_text() == ""
    Trainer(config, run_dir=str(tmp_path / "new"), progress=False)  # a new directory is fine
    Trainer(config, run_dir=str(tmp_path / "new"), progress=False)  # and one whose run never finished an epoch


def test_kvae_parts_must_agree_on_dim_a():
    prior = KalmanPrior(LSTMDynamics(2, 2, 8), 3)
    with pytest.raises(ValueError, match=r"the encoder gives a of shape \(1, 2, 3\) .* the prior's dim_a is 2"):
        KVAE(MLPEncoder(8, 3, (16,)), MLPDecoder(8, 2, (16,)), prior, frame_size=8)
    with pytest.raises(ValueError, match=r"the decoder does not take a of the prior's dim_a = 2"):
        KVAE(MLPEncoder(8, 2, (16,)), MLPDecoder(8, 3, (16,)), prior, frame_size=8)
    with pytest.raises(ValueError, match=r"the encoder does not take frames \(batch, T, 16, 16\)"):
        KVAE(MLPEncoder(8, 2, (16,)), MLPDecoder(8, 2, (16,)), prior, frame_size=16)
    with pytest.raises(ValueError, match=r"the decoder must give frames \(batch, T, 8, 8\)"):
        KVAE(MLPEncoder(8, 2, (16,)), MLPDecoder(4, 2, (16,)), prior, frame_size=8)
    KVAE(MLPEncoder(8, 2, (16,)), MLPDecoder(8, 2, (16,)), prior, frame_size=8)


def test_affine_steps_checks_its_inputs():
    F, g, m0 = torch.eye(2).expand(4, 2, 2), torch.zeros(4, 2), torch.zeros(2)
    assert affine_steps(F, g, m0).shape == (5, 2)
    with pytest.raises(ValueError, match=r"F must have shape \(\.\.\., T-1 or 1, 2, 2\) and g \(\.\.\., T-1, 2\)"):
        affine_steps(torch.eye(3).expand(4, 3, 3), g, m0)
    with pytest.raises(ValueError, match="F must have a time dim of 1 or 4"):
        affine_steps(torch.eye(2).expand(3, 2, 2), g, m0)
    with pytest.raises(TypeError, match="g must be a floating point tensor"):
        affine_steps(F, torch.zeros(4, 2, dtype=torch.long), m0)
    with pytest.raises(ValueError, match="m0 must have at least 1 dims"):
        affine_steps(F, g, torch.tensor(0.0))
    with pytest.raises(ValueError, match="do not broadcast"):
        affine_steps(torch.eye(2).expand(3, 4, 2, 2), g.expand(5, 4, 2), m0)


def test_same_shape_checks_every_element():
    assert [x.shape for x in _same_shape([torch.zeros(1, 2), torch.zeros(3, 2)])] == [(3, 2), (3, 2)]
    with pytest.raises(RuntimeError):  # leading elements that disagree with each other no longer pass
        _same_shape([torch.zeros(2, 2), torch.zeros(3, 2), torch.zeros(1, 2)])


class SkipLSTM(RNNDynamics):
    """A researcher's own step on the LSTM's weights (a_prev added to the output), no init_state of its own."""

    def step(self, a_prev, state):
        dtype = self.a0.dtype  # a_prev and the state may come in float64 (the filter's dtype)
        x, state = a_prev.reshape(-1, self.dim_a).to(dtype), tuple(s.to(dtype) for s in state)
        h, c = torch.lstm_cell(x, state, *self.rnn._flat_weights)
        logits = self.out(h).to(a_prev.dtype) + a_prev.reshape(-1, self.dim_a).sum(-1, keepdim=True)
        return torch.softmax(logits, -1).reshape(a_prev.shape[:-1] + (self.K,)), (h, c)


def test_custom_rnn_step_gets_a_state_that_fits():
    from pyro_kvae.imputation import generate, impute

    dyn = SkipLSTM(2, 3, 8)
    h, c = dyn.init_state((4,))
    assert h.shape == c.shape == (4, 8)
    prior = KalmanPrior(dyn, 3)
    kvae = KVAE(MLPEncoder(8, 2, (16,)), MLPDecoder(8, 2, (16,)), prior, frame_size=8)
    x = (torch.rand(4, 6, 8, 8) > 0.5).float()
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[:, 3] = False
    out = impute(kvae, x, mask)
    assert out.x.shape == x.shape and torch.isfinite(out.a).all()
    assert generate(kvae, x[:, :2], 8).x.shape == (4, 8, 8, 8)


def test_more_bad_inputs_of_the_public_api():
    """Found by a round of bad inputs beyond the issue's ten (the rest already gave clear errors)."""
    from pyro_kvae import pretrained
    from pyro_kvae.config import ConfigError, KVAEConfig, build_kvae
    from pyro_kvae.imputation import generate, impute

    kvae = build_kvae(KVAEConfig(frame_size=8, vae="mlp", mlp_hidden=(8,))).eval()
    x = (torch.rand(3, 6, 8, 8) > 0.5).float()
    with pytest.raises(ValueError, match=r"x must hold at least one sequence of at least one frame"):
        impute(kvae, x[:0])
    with pytest.raises(TypeError, match="T must be an int"):
        generate(kvae, x, 7.5)
    with pytest.raises(ConfigError, match="device must be a torch device such as 'cpu' or 'cuda', got 'tpu'"):
        pretrained.load("box", device="tpu")
    h = torch.float16  # half-precision parameters: checked (in float32) and computed in float64
    e = torch.eye(2, dtype=h)
    lp = LinearGaussianSSM(torch.zeros(2, dtype=h), e, e.expand(5, 2, 2), 0.1 * e, e.expand(5, 2, 2), 0.1 * e)
    assert torch.isfinite(lp.log_prob(torch.zeros(5, 2, dtype=h)))


def test_example_flags_for_own_test_videos(tmp_path):
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = os.path.join(root, "examples", "bouncing_ball.py")
    out = subprocess.run([sys.executable, script, "--test-data", str(tmp_path / "none.npz")], capture_output=True,
                         text=True, cwd=tmp_path)  # fmt: skip
    assert out.returncode == 2 and "argument --test-data: no videos at" in out.stderr
    out = subprocess.run([sys.executable, script, "--binarize", "2"], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 2 and "argument --binarize: must be in [0, 1), got 2.0" in out.stderr
    np.savez(tmp_path / "grey.npz", images=np.full((12, 6, 8, 8), 100, np.uint8))
    out = subprocess.run([sys.executable, script, "--data", str(tmp_path / "grey.npz"), "--run-dir",
                          str(tmp_path / "r")], capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert out.returncode == 1 and "--binarize 0.5 thresholds your own videos" in out.stderr
    assert "Traceback" not in out.stderr


def test_lgssm_mask_with_a_step_too_many_is_named():
    with pytest.raises(ValueError, match=r"mask must have shape \(\.\.\., 5\)"):
        model(mask=torch.ones(6, dtype=torch.bool))


def test_lgssm_value_whose_batch_does_not_broadcast_is_named():
    with pytest.raises(ValueError, match=r"value must have shape .* batch_shape \(2,\)"):
        model(mask=torch.ones(2, 5, dtype=torch.bool)).log_prob(torch.zeros(3, 5, 2, dtype=f64))
    d = model(A=torch.eye(2, dtype=f64).expand(2, 5, 2, 2))
    for method in (d.log_prob, d.filter, d.smooth, d.rsample_posterior):
        with pytest.raises(ValueError, match=r"value must have shape .* batch_shape \(2,\)"):
            method(torch.zeros(3, 5, 2, dtype=f64))


@pytest.mark.parametrize("compute_dtype", [torch.float64, None])
def test_lgssm_with_no_sequences_gives_empty_results(compute_dtype):
    empty = model(A=torch.eye(2, dtype=f64).expand(0, 5, 2, 2), compute_dtype=compute_dtype)
    assert empty.sample().shape == (0, 5, 2)
    assert empty.sample((3,)).shape == (3, 0, 5, 2)
    assert empty.rsample_posterior(torch.zeros(0, 5, 2, dtype=f64)).shape == (0, 5, 2)
    assert empty.log_prob(torch.zeros(0, 5, 2, dtype=f64)).shape == (0,)
    assert model().rsample_posterior(torch.zeros(0, 5, 2, dtype=f64)).shape == (0, 5, 2)


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_lgssm_half_precision_without_compute_dtype_computes_in_float32(half):
    e = torch.eye(2, dtype=half)
    d = LinearGaussianSSM(torch.zeros(2, dtype=half), e, e.expand(5, 2, 2), 0.1 * e, e.expand(5, 2, 2), 0.1 * e,
                          compute_dtype=None)  # fmt: skip
    a = torch.linspace(-1, 1, 10).reshape(5, 2)
    exact = model().log_prob(a.to(f64))
    assert d.log_prob(a.to(half)).dtype == half
    assert d.log_prob(a.to(half)).double().item() == pytest.approx(exact.item(), rel=2e-2)
    assert d.sample().dtype == half and d.sample().shape == (5, 2)
    assert d.smooth(a.to(half)).loc.dtype == half
    assert d.rsample_posterior(a.to(half)).dtype == half


def test_generate_names_x_init_and_its_shape():
    from pyro_kvae.config import KVAEConfig, build_kvae
    from pyro_kvae.imputation import generate

    kvae = build_kvae(KVAEConfig(frame_size=8, vae="mlp", mlp_hidden=(8,))).eval()
    with pytest.raises(ValueError, match=r"x_init must be a tensor of frames \(batch, T0, 8, 8\), got \(4, 8, 8\)"):
        generate(kvae, torch.zeros(4, 8, 8), 10)


ARGS = dict(A=(5, 2, 2), C=(5, 2, 2), Q=(2, 2), R=(2, 2), mu0=(2,), Sigma0=(2, 2))


@pytest.mark.parametrize("name", list(ARGS) + ["mask", "B", "u"])
@pytest.mark.parametrize("wrong", ["event", "time", "batch", "dtype"])
def test_lgssm_every_argument_against_the_others(name, wrong):
    """Each argument with a wrong event size, time dim, batch dim or dtype, the others right (two
    sequences): an error naming it (or the non-broadcasting batch dims), never a torch internal."""
    e = torch.eye(2, dtype=f64)
    args = dict(mu0=torch.zeros(2, 2, dtype=f64), Sigma0=e.expand(2, 2, 2), A=e.expand(2, 5, 2, 2), Q=0.1 * e,
                C=e.expand(2, 5, 2, 2), R=0.1 * e, B=torch.ones(2, 5, 2, 1, dtype=f64),
                u=torch.ones(2, 5, 1, dtype=f64), mask=torch.ones(2, 5, dtype=torch.bool))  # fmt: skip
    x = args[name]
    time_dim = {"A": -3, "C": -3, "B": -3, "u": -2, "mask": -1}.get(name)
    if wrong == "event":
        if name == "mask":
            return
        args[name] = torch.cat([x, x[..., :1]], -1)
    elif wrong == "time":
        if time_dim is None:
            return
        args[name] = torch.cat([x, x.narrow(time_dim, 0, 1)], time_dim)
    elif wrong == "batch":
        args[name] = torch.cat([x, x[:1]], 0) if x.dim() > len(ARGS.get(name, ())) and name not in ("Q", "R") else x
        if args[name] is x:
            args[name] = x.expand((3,) + x.shape)
    else:
        args[name] = x.to(torch.int64) if name != "mask" else x.to(torch.uint8)
    with pytest.raises((ValueError, TypeError), match=rf"\b{name}\b|do not broadcast"):
        d = LinearGaussianSSM(**args)
        d.log_prob(torch.zeros(2, 5, 2, dtype=f64))
