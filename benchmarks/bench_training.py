# SPDX-License-Identifier: Apache-2.0
"""
Seconds per training epoch of the default KVAE (paper settings) on the
bouncing-ball set, and where the time of one training step goes.

    python benchmarks/bench_training.py [--data data/box.npz] [--batches 20] [--full-epoch] [--device cpu]

Component timings are forward + backward for one batch of 32 sequences x 20 frames.
"""

import argparse
import time

import torch
from pyro.infer import Trace_ELBO

from pyro_kvae.config import KVAEConfig
from pyro_kvae.data import VideoDataset
from pyro_kvae.train import Trainer


def timed(fn, device, repeat=5):
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 1e3 * (time.perf_counter() - start) / repeat


def main(args):
    torch.set_num_threads(args.threads)
    data = VideoDataset(args.data, "train", env="box")
    config = KVAEConfig(device=args.device, kf_update_epochs=0)
    trainer = Trainer(config, progress=args.full_epoch)
    model, device = trainer.model, trainer.device
    x = data.x[: config.batch_size].to(device)
    loc, scale = model.encoder(x)
    a = (loc + scale * torch.randn_like(scale)).detach().requires_grad_()
    elbo = Trace_ELBO()

    def step():
        trainer.optimizer.zero_grad()
        elbo.differentiable_loss(model.model, model.guide, x).backward()

    parts = {
        "full training step (ELBO fwd+bwd)": step,
        "encoder": lambda: sum(t.sum() for t in model.encoder(x)).backward(),
        "decoder": lambda: model.decoder(a).sum().backward(),
        "alpha network (LSTM)": lambda: model.prior.dynamics(a).sum().backward(),
        "Kalman log p(a) given alpha": lambda: (
            model.prior.lgssm(model.prior.dynamics(a).detach()).log_prob(a).sum().backward()
        ),
    }
    print(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, batch {config.batch_size} x T 20")
    for name, fn in parts.items():
        print(f"  {name:36s} {timed(fn, device):8.1f} ms")
    n = len(data) // config.batch_size
    if args.full_epoch:
        start = time.perf_counter()
        trainer.train_epoch(data)
        if device.type == "cuda":
            torch.cuda.synchronize()
        print(f"one epoch over {len(data)} sequences: {time.perf_counter() - start:.1f} s")
    else:
        ms = timed(lambda: (step(), trainer.optimizer.step()), device, repeat=args.batches)
        print(f"estimated epoch ({n} batches of {config.batch_size}): {ms * n / 1e3:.1f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/box.npz")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--full-epoch", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    main(parser.parse_args())
