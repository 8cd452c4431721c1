# SPDX-License-Identifier: Apache-2.0
"""
Training speed of the default KVAE (paper settings) on the bouncing-ball set.

Where the time of one training step goes (forward + backward for one batch of
32 sequences x 20 frames, each part timed alone, with its share of the step, its
FLOP rate and its operator calls: on a GPU nearly each is a kernel launch), and
the epoch time against the matmul roofline of its FLOPs (a
2048 x 2048 float32 product, timed in alternation with ``--batches`` training steps)::

    python benchmarks/bench_training.py [--data data/box.npz] [--batches 20] [--device cpu]

One training step with every frame observed against one with 30 % of frames
missing (after the first 4), same run: time, and the profiler's count of
operator calls and of leaf compute operators (ops that do arithmetic themselves,
not through other ops; views and allocations excluded), each a kernel launch on
a GPU::

    python benchmarks/bench_training.py --missing [--threads 2]

Host reads in one training step (loss, backward, clipping, Adam; all frames observed and
30 % missing), Pyro's ``Trace_ELBO`` against ``SyncFreeTrace_ELBO``, Pyro's validation on
and off: Python-level reads of a tensor's value (``item``, ``bool``, ``float``, ...), each
a wait on the device on a GPU (Adam's step counters live on the host and are left out;
``benchmarks/gpu_check.py`` counts every synchronisation on a GPU)::

    python benchmarks/bench_training.py --host-reads

Throughput of the real training loop (Lightning), in sequences per second over
the last of ``--epochs`` epochs, on ``--devices`` processes (DDP when more than one;
``--threads`` is shared out between them)::

    python benchmarks/bench_training.py --throughput --devices 1 [--n-train 1024] [--precision 32]
    python benchmarks/bench_training.py --throughput --devices 2
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")  # as the training entry points (examples/bouncing_ball.py)

import lightning  # noqa: E402
import torch  # noqa: E402

from pyro_kvae.bounds import SyncFreeTrace_ELBO  # noqa: E402
from pyro_kvae.config import KVAEConfig  # noqa: E402
from pyro_kvae.data import VideoDataset  # noqa: E402
from pyro_kvae.train import Trainer  # noqa: E402


def timed(fn, device, repeat=5, warm=True):
    if warm:
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 1e3 * (time.perf_counter() - start) / repeat


def components(args, data):
    config = KVAEConfig(device=args.device, kf_update_epochs=0)
    trainer = Trainer(config, progress=False)
    model, device = trainer.model, trainer.device
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    x = data.x[: config.batch_size].to(device)
    loc, scale = model.encoder(x)
    a = (loc + scale * torch.randn_like(scale)).detach().requires_grad_()
    elbo = SyncFreeTrace_ELBO()

    def step():
        optimizer.zero_grad()
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
    peak = matmul_gflops(device)
    print(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, batch {config.batch_size} x T 20, "
          f"{config.conv_filters} filters; float32 matmul 2048 x 2048 at the start: {peak:.0f} GFLOPS")  # fmt: skip
    print("| part (forward + backward) | ms | share of the step | GFLOP | GFLOPS | operator calls | leaf compute ops |")
    print("|---|---|---|---|---|---|---|")
    full = None
    for name, fn in parts.items():
        ms, gflop, (calls, leaves) = timed(fn, device), flops(fn) / 1e9, count_ops(fn)
        full = full or (ms, calls, leaves)
        print(
            f"| {name} | {ms:.1f} | {100 * ms / full[0]:.0f} % | {gflop:.2f} | {gflop / ms * 1e3:.0f} | "
            f"{calls} ({100 * calls / full[1]:.0f} %) | {leaves} ({100 * leaves / full[2]:.0f} %) |"
        )
    n, step_flops = len(data) // config.batch_size, flops(step)
    # the step (+ Adam) and the matmul in alternation, one of each per round, so that both see the same load
    # (this machine's matmul alone measured 110 to 160 GFLOPS in runs minutes apart)
    rounds = [(timed(lambda: (step(), optimizer.step()), device, repeat=1, warm=False), matmul_gflops(device, repeat=3))
              for _ in range(args.batches)]  # fmt: skip
    ms, gflops = (statistics.median(x) for x in zip(*rounds))
    ratio = statistics.median(m * 1e-3 * g * 1e9 / step_flops for m, g in rounds)  # epoch time / roofline time
    roofline = step_flops * n / gflops / 1e9
    print(f"epoch of {n} batches of {config.batch_size} (step + Adam {ms:.0f} ms): {ms * n / 1e3:.1f} s; the matmul "
          f"roofline of its FLOPs ({gflops:.0f} GFLOPS, median of the same rounds): {roofline:.1f} s; "
          f"ratio {ratio:.2f}x (median of {args.batches} alternating rounds)")  # fmt: skip


def matmul_gflops(device, n=2048, repeat=10):
    """Float32 GFLOPS of an ``n x n`` matrix product on ``device`` with the threads torch has now."""
    a, b = (torch.randn(n, n, device=device) for _ in range(2))
    return 2 * n**3 / timed(lambda: a @ b, device, repeat=repeat) / 1e6


def flops(fn) -> int:
    """FLOPs of the matrix products and convolutions that ``fn()`` runs, forward and backward
    (``torch.utils.flop_counter``; elementwise work is not counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


# operators that only make views, allocate or dispatch: not compute
NOT_COMPUTE = {
    "aten::" + name
    for name in (
        "view as_strided slice select transpose expand unsqueeze squeeze permute t detach alias empty "
        "empty_like empty_strided new_empty resize_ _reshape_alias reshape _unsafe_view unbind split chunk "
        "narrow diagonal expand_as view_as mT mH adjoint numpy_T matrix_H lift_fresh result_type is_nonzero "
        "item _local_scalar_dense conj resolve_conj resolve_neg contiguous to _to_copy type_as flatten "
        "unflatten movedim split_with_sizes scalar_tensor cudnn_is_acceptable broadcast_tensors"
    ).split()
}


def count_ops(fn):
    """``(operator calls, leaf compute operators)`` that the profiler records while ``fn()`` runs."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    ops = [e for e in prof.events() if e.name.startswith("aten::")]

    def computes_below(e):
        return any((c.name.startswith("aten::") and c.name not in NOT_COMPUTE) or computes_below(c)
                   for c in e.cpu_children)  # fmt: skip

    return len(ops), sum(1 for e in ops if e.name not in NOT_COMPUTE and not computes_below(e))


def missing(args, data):
    """A training step (ELBO forward + backward, batch 32 x T 20) with and without 30 % of frames missing."""
    from pyro_kvae.train import random_mask

    config = KVAEConfig(device=args.device, kf_update_epochs=0)
    model = Trainer(config, progress=False).model
    device = torch.device(config.device)
    x = data.x[: config.batch_size].to(device)
    mask = random_mask(x.shape[:2], 0.3, 4, generator=torch.Generator().manual_seed(0), device=device)
    elbo = SyncFreeTrace_ELBO()
    print(f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, batch {config.batch_size} x T 20")
    print("| frames | step (ms) | operator calls | leaf compute ops |")
    print("|---|---|---|---|")
    steps = {}
    for name, m in (("all observed", None), ("30 % missing", mask)):

        def step(m=m):
            model.zero_grad()
            elbo.differentiable_loss(model.model, model.guide, x, None, m).backward()

        steps[name] = step
    counts = {name: count_ops(step) for name, step in steps.items()}
    times = {name: [] for name in steps}
    for _ in range(args.batches):  # in alternation, so that both see the same load
        for name, step in steps.items():
            times[name].append(timed(step, device, repeat=1))
    for name in steps:
        print(f"| {name} | {statistics.median(times[name]):.0f} | {counts[name][0]} | {counts[name][1]} |")
    (c0, l0), (c1, l1) = counts.values()
    ratio = statistics.median(b / a for a, b in zip(*times.values()))
    fastest = min(times["30 % missing"]) / min(times["all observed"])  # less sensitive to a drifting machine
    print(
        f"missing / observed: step {ratio:.2f}x (median of {args.batches} alternating pairs; "
        f"{fastest:.2f}x between the fastest steps), "
        f"operator calls {c1 / c0:.2f}x, leaf compute ops {l1 / l0:.2f}x"
    )


def host_reads(args, data):
    import collections
    import traceback

    import pyro
    from pyro.infer import Trace_ELBO

    from pyro_kvae.train import random_mask

    config = KVAEConfig(device=args.device, kf_update_epochs=0)
    model = Trainer(config, progress=False).model
    model.check_frames = False  # the Trainer checks a dataset's frames once, before its steps
    x = data.x[: config.batch_size]
    masks = {"all observed": None, "30 % missing": random_mask(x.shape[:2], 0.3, 4, torch.Generator().manual_seed(0))}
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    names = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__")
    originals = {name: getattr(torch.Tensor, name) for name in names}
    reads = collections.Counter()

    def spy(name):
        def read(self, *a, **k):
            where = traceback.extract_stack(limit=3)[0]
            if "torch/optim" not in where.filename:
                reads[f"{os.path.relpath(where.filename)}:{where.lineno}"] += 1
            return originals[name](self, *a, **k)

        return read

    def step(elbo, mask):
        (elbo.differentiable_loss(model.model, model.guide, x, None, mask) / x.shape[0]).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm, foreach=True)
        optimizer.step()
        optimizer.zero_grad()

    print(f"torch {torch.__version__}, pyro {pyro.__version__}, batch {config.batch_size} x T 20")
    print("| ELBO | Pyro validation | all observed | 30 % missing |")
    print("|---|---|---|---|")
    for elbo in (Trace_ELBO(), SyncFreeTrace_ELBO()):
        for validate in (True, False):
            counts = []
            for mask in masks.values():
                with pyro.validation_enabled(validate):
                    step(elbo, mask)  # lazy initialisations
                    reads.clear()
                    try:
                        for name in names:
                            setattr(torch.Tensor, name, spy(name))
                        step(elbo, mask)
                    finally:
                        for name, fn in originals.items():
                            setattr(torch.Tensor, name, fn)
                counts.append(sum(reads.values()))
            print(f"| {type(elbo).__name__} | {'on' if validate else 'off'} | {counts[0]} | {counts[1]} |")


class EpochTimer(lightning.Callback):
    def on_train_epoch_start(self, trainer, module):
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer, module):
        self.seconds = time.perf_counter() - self.start


def throughput(args, data):
    data = data.take(args.n_train)
    strategy = "ddp" if args.devices > 1 else "auto"
    config = KVAEConfig(epochs=args.epochs, device=args.device, devices=args.devices, strategy=strategy,
                        precision=args.precision, kf_update_epochs=0)  # fmt: skip
    timer = EpochTimer()
    trainer = Trainer(config, progress=False, callbacks=[timer])
    trainer.fit(data)
    if trainer.is_global_zero:
        print(
            f"torch {torch.__version__}, {trainer.device}, {args.devices} process(es) x {torch.get_num_threads()} "
            f"thread(s), precision {args.precision}, global batch {config.batch_size}: last epoch over "
            f"{len(data)} sequences {timer.seconds:.1f} s = {len(data) / timer.seconds:.1f} sequences/s"
        )


def main(args):
    torch.set_num_threads(max(1, args.threads // args.devices))
    data = VideoDataset(args.data, "train", env="box")
    if args.throughput:
        throughput(args, data)
    elif args.missing:
        missing(args, data)
    elif args.host_reads:
        host_reads(args, data)
    else:
        components(args, data)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/box.npz")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--throughput", action="store_true", help="time the real training loop instead")
    parser.add_argument("--missing", action="store_true", help="a step with 30 %% of frames missing against none")
    parser.add_argument("--host-reads", action="store_true", help="count a step's reads of tensors on the host")
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--n-train", type=int, default=1024)
    parser.add_argument("--precision", default="32")
    main(parser.parse_args())
