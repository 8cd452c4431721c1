# SPDX-License-Identifier: Apache-2.0
"""SyncFreeTrace_ELBO: Pyro's Trace_ELBO, same values and gradients, no host reads in a training step."""

import collections
import traceback

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO

from pyro_kvae.bounds import SyncFreeTrace_ELBO
from pyro_kvae.config import KVAEConfig, build_kvae


def small_kvae():
    torch.manual_seed(0)
    kvae = build_kvae(KVAEConfig(frame_size=16, conv_filters=(8, 8, 8), dynamics="lstm"))
    kvae.check_frames = False  # the Trainer checks a dataset's frames once, before its steps
    return kvae


def frames_and_mask():
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(4, 8, 16, 16, generator=g) > 0.8).float()
    mask = torch.rand(4, 8, generator=g) > 0.3
    mask[:, :4] = True
    return x, mask


def loss_and_grads(elbo, model, guide, params, *args):
    pyro.set_rng_seed(3)
    loss = elbo.differentiable_loss(model, guide, *args)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return loss.detach(), grads


@pytest.mark.parametrize("num_particles", [1, 3])
def test_kvae_loss_and_gradients_are_pyros(num_particles):
    kvae = small_kvae()
    x, mask = frames_and_mask()
    params = [p for p in kvae.parameters()]
    elbos = [
        E(num_particles=num_particles, vectorize_particles=num_particles > 1) for E in (Trace_ELBO, SyncFreeTrace_ELBO)
    ]
    (ref, ref_grads), (ours, our_grads) = (
        loss_and_grads(e, kvae.model, kvae.guide, params, x, None, mask) for e in elbos
    )
    assert torch.allclose(ours, ref, rtol=1e-6)
    used = 0
    for g, h in zip(our_grads, ref_grads):
        assert (g is None) == (h is None)
        if g is not None:
            used += 1
            assert torch.allclose(g, h, rtol=1e-5, atol=1e-6 * h.abs().max().item())
    assert used > 10


def test_score_function_sites_get_pyros_surrogate():
    """A discrete latent (no reparameterised sampler): Pyro's score-function gradient, same value."""
    data = torch.tensor([0.3, 1.2, -0.4])
    probs = torch.tensor(0.4, requires_grad=True)
    loc = torch.tensor(0.5, requires_grad=True)

    def model():
        s = pyro.sample("s", dist.Bernoulli(0.5))
        with pyro.plate("data", 3):
            pyro.sample("y", dist.Normal(loc * s, 1.0), obs=data)

    def guide():
        pyro.sample("s", dist.Bernoulli(probs))

    for num_particles in (1, 5):
        elbos = [E(num_particles=num_particles) for E in (Trace_ELBO, SyncFreeTrace_ELBO)]
        (ref, ref_grads), (ours, our_grads) = (loss_and_grads(e, model, guide, [probs, loc]) for e in elbos)
        assert torch.allclose(ours, ref, rtol=1e-6)
        for g, h in zip(our_grads, ref_grads):
            assert torch.allclose(g, h, rtol=1e-5, atol=1e-7)
        assert our_grads[0].abs() > 0  # the score-function term reached the guide's parameter


def test_a_training_step_reads_nothing_on_the_host():
    """With Pyro's validation off, no Python-level read of a tensor (item, bool, float, ...) in the
    loss, backward, clipping or Adam's update: on a GPU each would wait on the device. Adam's step
    counters are host tensors by design (torch.optim) and are left out. The CUDA test in
    test_train.py checks the whole step, kernels included, under torch.cuda.set_sync_debug_mode."""
    kvae = small_kvae()
    x, mask = frames_and_mask()
    opt = torch.optim.Adam(kvae.parameters(), lr=1e-3)
    elbo = SyncFreeTrace_ELBO()

    def step():
        loss = elbo.differentiable_loss(kvae.model, kvae.guide, x, None, mask) / x.shape[0]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(kvae.parameters(), 150.0, foreach=True)
        opt.step()
        opt.zero_grad()

    reads = collections.Counter()
    names = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__")
    originals = {name: getattr(torch.Tensor, name) for name in names}

    def spy(name):
        def read(self, *args, **kwargs):
            stack = traceback.format_stack(limit=6)[:-1]
            if not any("torch/optim" in frame for frame in stack[-2:]):
                reads[(name, stack[-1].strip())] += 1
            return originals[name](self, *args, **kwargs)

        return read

    with pyro.validation_enabled(False):
        step()  # lazy initialisations
        try:
            for name in names:
                setattr(torch.Tensor, name, spy(name))
            step()
        finally:
            for name, fn in originals.items():
                setattr(torch.Tensor, name, fn)
    assert not reads, f"host reads in a training step: {dict(reads)}"

    # and Pyro's own Trace_ELBO does read (the spy can see what it is meant to catch)
    try:
        for name in names:
            setattr(torch.Tensor, name, spy(name))
        with pyro.validation_enabled(False):
            Trace_ELBO().differentiable_loss(kvae.model, kvae.guide, x, None, mask)
    finally:
        for name, fn in originals.items():
            setattr(torch.Tensor, name, fn)
    assert sum(reads.values()) >= 4
