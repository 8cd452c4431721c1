# SPDX-License-Identifier: Apache-2.0
"""
One command that checks the GPU path and measures it::

    python benchmarks/gpu_check.py             # on a CUDA machine
    python benchmarks/gpu_check.py --dry-run   # the same steps on the CPU, tiny (CI runs this)

1. the loss of one batch on the device against the CPU (same weights, the
   deterministic EncoderMeanGuide), relative difference below --tolerance;
2. host synchronisations in one training step (``torch.cuda.set_sync_debug_mode``): Pyro's
   Trace_ELBO, and SyncFreeTrace_ELBO with Pyro's validation on and off (off: must be 0);
3. the test suite's CUDA tests (``pytest -k cuda``);
4. the quick demo's training (Lightning) on 1 device, precision 32 and bf16-mixed:
   sequences per second over the last of two epochs;
5. the share of a training step spent in the Kalman part (the prior's log p(a)
   given alpha), each part timed alone with device synchronisation.

Exit status 1 if a check fails.
"""

import argparse
import os
import subprocess
import sys
import time
import warnings

import pyro
import torch
from pyro.infer import Trace_ELBO

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_training import EpochTimer, timed  # noqa: E402

from pyro_kvae.bounds import SyncFreeTrace_ELBO  # noqa: E402
from pyro_kvae.config import KVAEConfig, build_kvae  # noqa: E402
from pyro_kvae.data import VideoDataset, generate, save  # noqa: E402
from pyro_kvae.models import EncoderMeanGuide  # noqa: E402
from pyro_kvae.train import Trainer, random_mask  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICK = dict(conv_filters=(16, 16, 16), kf_update_epochs=1)  # the demo's network
TINY = dict(frame_size=16, conv_filters=(8, 8, 8), kf_update_epochs=1, batch_size=16)


def data_for(args):
    if args.dry_run:
        path = os.path.join(args.workdir, "box_tiny.npz")
        if not os.path.exists(path):
            save(path, generate("box", (64, 16, 16), seed=0, progress=False, size=16, T=8, radius=2.0, inset=1.0))
        return VideoDataset(path, "train")
    return VideoDataset(args.data, "train", env="box").take(args.n_train)


def loss_agreement(args, data, device, settings):
    pyro.set_rng_seed(0)
    kvae = build_kvae(KVAEConfig(**settings))
    x = data.x[:32]
    losses = {}
    for where in ("cpu", device):
        model = kvae.to(where)
        losses[where] = Trace_ELBO().loss(model.model, EncoderMeanGuide(model), x.to(where))
    rel = abs(losses[device] - losses["cpu"]) / abs(losses["cpu"])
    ok = rel < args.tolerance
    print(f"[{'ok' if ok else 'FAIL'}] loss of one batch: cpu {losses['cpu']:.4f}, {device} {losses[device]:.4f}, "
          f"relative difference {rel:.1e} (tolerance {args.tolerance:g})")  # fmt: skip
    return ok


def host_syncs(data, device, settings):
    """Host synchronisations in one training step (ELBO, backward, clipping, Adam) with 30 % of frames
    missing: Pyro's Trace_ELBO with validation on (as before), the package's SyncFreeTrace_ELBO with
    validation on (the Trainer's first step of an epoch) and off (its other steps; must be 0)."""
    if device == "cpu":
        print("[skip] host synchronisations: counted on CUDA only")
        return True
    kvae = build_kvae(KVAEConfig(**settings)).to(device)
    kvae.check_frames = False  # the Trainer checks a dataset's frames once, before its steps
    x = data.x[:32].to(device)
    mask = random_mask(x.shape[:2], 0.3, 4, generator=torch.Generator().manual_seed(0), device=device)
    opt = torch.optim.Adam(kvae.parameters(), lr=1e-3)

    def step(elbo):
        (elbo.differentiable_loss(kvae.model, kvae.guide, x, None, mask) / x.shape[0]).backward()
        torch.nn.utils.clip_grad_norm_(kvae.parameters(), 150.0, foreach=True)
        opt.step()
        opt.zero_grad()

    ok = True
    for name, elbo, validate in (("Trace_ELBO, validation on", Trace_ELBO(), True),
                                 ("SyncFreeTrace_ELBO, validation on", SyncFreeTrace_ELBO(), True),
                                 ("SyncFreeTrace_ELBO, validation off", SyncFreeTrace_ELBO(), False)):  # fmt: skip
        with pyro.validation_enabled(validate):
            step(elbo)  # warm up
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("warn")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                step(elbo)
            torch.cuda.set_sync_debug_mode("default")
        syncs = [w for w in caught if "synchroniz" in str(w.message)]
        bad = not validate and syncs
        ok = ok and not bad
        print(f"[{'FAIL' if bad else 'info'}] host synchronisations in one training step ({name}): {len(syncs)}")
        for w in syncs[:10]:
            print(f"         {w.filename}:{w.lineno}")
    return ok


def cuda_tests(args):
    if args.no_pytest:
        print("[skip] CUDA tests (--no-pytest)")
        return True
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-k", "cuda", os.path.join(ROOT, "tests")],
                         capture_output=True, text=True)  # fmt: skip
    last = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr[-300:]
    ok = out.returncode in (0, 5)  # 5: none collected
    print(f"[{'ok' if ok else 'FAIL'}] pytest -k cuda: {last}")
    return ok


def throughput(args, data, device, settings):
    rates = {}
    for precision in ("32", "bf16-mixed"):
        if precision == "bf16-mixed" and device != "cpu" and not torch.cuda.is_bf16_supported():
            continue
        timer = EpochTimer()
        config = KVAEConfig(epochs=2, device=device, precision=precision, **settings)
        trainer = Trainer(config, progress=False, callbacks=[timer])
        trainer.fit(data)
        rates[precision] = len(data) / timer.seconds
        loss = trainer.history[-1]["train_loss"]
        print(f"[info] training, precision {precision}: {rates[precision]:.1f} sequences/s "
              f"({len(data)} sequences in {timer.seconds:.2f} s, train loss {loss:.1f})")  # fmt: skip
    if len(rates) == 2:
        print(f"[info] bf16-mixed / 32 speed-up: {rates['bf16-mixed'] / rates['32']:.2f}x")
    return True


def kalman_share(data, device, settings):
    kvae = build_kvae(KVAEConfig(**{**settings, "kf_update_epochs": 0})).to(device)
    x = data.x[:32].to(device)
    loc, scale = kvae.encoder(x)
    a = (loc + scale * torch.randn_like(scale)).detach().requires_grad_()
    step = timed(
        lambda: SyncFreeTrace_ELBO().differentiable_loss(kvae.model, kvae.guide, x).backward(), torch.device(device)
    )
    alpha = kvae.prior.dynamics(a).detach()
    kalman = timed(lambda: kvae.prior.lgssm(alpha).log_prob(a).sum().backward(), torch.device(device))
    print(
        f"[info] training step {step:.1f} ms, of which the Kalman log p(a) {kalman:.1f} ms "
        f"({100 * kalman / step:.0f} %)"
    )
    return True


def main(args):
    device = "cpu" if args.dry_run else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device; run with --dry-run to exercise the steps on the CPU")
    os.makedirs(args.workdir, exist_ok=True)
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU (dry run)"
    print(f"gpu_check on {name}, torch {torch.__version__}")
    start = time.perf_counter()
    data = data_for(args)
    settings = TINY if args.dry_run else QUICK
    checks = [
        loss_agreement(args, data, device, settings),
        host_syncs(data, device, settings),
        cuda_tests(args),
        throughput(args, data, device, settings),
        kalman_share(data, device, settings),
    ]
    print(f"{sum(checks)} of {len(checks)} checks passed in {time.perf_counter() - start:.0f} s")
    raise SystemExit(0 if all(checks) else 1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="run every step on the CPU at a tiny size")
    parser.add_argument("--data", default="data/box.npz")
    parser.add_argument("--n-train", type=int, default=2000, help="sequences for the throughput epochs")
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("--no-pytest", action="store_true")
    parser.add_argument("--workdir", default="runs/gpu_check")
    main(parser.parse_args())
