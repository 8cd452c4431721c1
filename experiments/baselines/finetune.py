# SPDX-License-Identifier: Apache-2.0
"""
Does training the baseline end to end unfold its code? The paper's AE-RNN and VAE-RNN follow
[29] (an LSTM auto-encoder of video, trained end to end) and [6] (VRNN, trained end to end), while
the package trains the auto-encoder first and the LSTM on its frozen codes. Here a finished
two-stage baseline is trained further with every weight free, on

    loss = -log p(x_t | a_t) - log p(x_t | a_hat_t)   (+ the VAE's KL)

per frame, where ``a_t`` is the frame's code and ``a_hat_t`` the LSTM's prediction of it from the
codes of the earlier frames (teacher forcing): the prediction is judged by the frame it decodes
to, so the encoder is pulled towards codes the LSTM can predict, which a loss on the codes
themselves would reach by shrinking them.

    .venv/bin/python experiments/baselines/finetune.py KIND SEED \
        --start experiments/authors_box/ae-rnn-own.pt --epochs 3
    .venv/bin/python experiments/baselines/finetune.py --table

After every epoch it logs to ``experiments/baselines/finetune_KIND/seedN/metrics.jsonl`` the
validation imputation error at p = 0.5 (first 4 frames observed; the mask of the package's
baseline training), the reconstruction error and the affine R^2 of the codes on the true ball
positions. Epoch 0 is the starting model. An unfinished run continues from ``checkpoint.pt``.
"""

import argparse
import json
import os
import time

import torch
from probe import logged  # this folder's probe script

from pyro_kvae.baselines import RNNBaseline, encode_codes, imputation_error, reconstruction_error
from pyro_kvae.config import KVAEConfig, build_kvae
from pyro_kvae.data import VideoDataset
from pyro_kvae.data.datasets import authors_dataset
from pyro_kvae.evaluation import affine_r2
from pyro_kvae.files import append_jsonl
from pyro_kvae.nn.vae import frame_distribution
from pyro_kvae.train import atomic_save, load_checkpoint, random_mask

ROOT = os.path.dirname(os.path.abspath(__file__))
DATA = "data/authors_box.npz"


def joint_loss(model, x):
    """Per-frame negative log-likelihood of the frames ``x (N, T, H, W)`` from their codes and from
    the LSTM's predictions of their codes (+ KL for the VAE), averaged over frames."""
    loc, scale = model.encoder(x)
    a = loc + scale * torch.randn_like(scale) if model.variational else loc
    _, pred = model.predict(a)
    nll = 0.0
    for code in (a, pred):
        nll = nll - frame_distribution(model.decoder(code), model.likelihood).log_prob(x).flatten(2).sum(-1)
    if model.variational:
        nll = nll + 0.5 * (loc**2 + scale**2 - 1 - 2 * scale.log()).sum(-1)
    return nll.mean()


def run(kind, seed, start, epochs, lr):
    run_dir = os.path.join(ROOT, f"finetune_{kind}" + ("" if lr == 1e-3 else f"_lr{lr:g}"), f"seed{seed}")
    os.makedirs(run_dir, exist_ok=True)
    torch.set_flush_denormal(True)
    path = authors_dataset("box", "datasets/authors", DATA)
    train, valid = VideoDataset(path, "train"), VideoDataset(path, "valid")
    position = valid.tensors["position"]
    valid_mask = random_mask(valid.x.shape[:2], 0.5, 4, torch.Generator().manual_seed(seed + 1))
    config = KVAEConfig(conv_filters=(32, 32, 32), **KVAEConfig.frame_fields(train.frame_shape))
    torch.manual_seed(seed)
    ref = build_kvae(config)
    model = RNNBaseline(ref.encoder, ref.decoder, kind == "vae", config.dim_a, likelihood=config.likelihood)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    epoch, checkpoint = 0, os.path.join(run_dir, "checkpoint.pt")
    if os.path.exists(checkpoint):
        saved = torch.load(checkpoint, weights_only=False)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        g.set_state(saved["rng"][0])
        torch.set_rng_state(saved["rng"][1])
        epoch = saved["epoch"]
    else:
        model.load_state_dict(load_checkpoint(start, keys=("model",))["model"])
    metrics = os.path.join(run_dir, "metrics.jsonl")

    def log(total, n, started):
        model.eval()
        row = {
            "epoch": epoch,
            "train_loss": round(float(total / max(n, 1)), 3),
            "imputation": imputation_error(model, valid.x, valid_mask),
            "recon": reconstruction_error(model, valid.x),
            "r2": [round(v, 4) for v in affine_r2(encode_codes(model, valid.x), position).tolist()],
            "seconds": round(time.perf_counter() - started, 1),
        }
        model.train()
        append_jsonl(metrics, row)
        rng = [g.get_state(), torch.get_rng_state()]
        atomic_save({"model": model.state_dict(), "opt": opt.state_dict(), "rng": rng, "epoch": epoch,
                     "start": start}, checkpoint)  # fmt: skip
        print(json.dumps(row), flush=True)

    if not os.path.exists(metrics):  # epoch 0: the starting model
        log(0.0, 0, time.perf_counter())
    while epoch < epochs:
        started, total, n = time.perf_counter(), 0.0, 0
        for idx in torch.randperm(len(train.x), generator=g).split(32):
            loss = joint_loss(model, train.x[idx])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 150.0)
            opt.step()
            total, n = total + loss.detach(), n + 1
        epoch += 1
        log(total, n, started)


def table():
    lines = ["| run | seed | epoch: imputation error p = 0.5, reconstruction error, R^2 a[0]/a[1] |", "|---|---|---|"]
    for kind in sorted(d for d in os.listdir(ROOT) if d.startswith("finetune_")):
        for name in sorted(os.listdir(os.path.join(ROOT, kind))):
            path = os.path.join(ROOT, kind, name, "metrics.jsonl")
            if not os.path.exists(path):
                continue
            cells = "; ".join(f"{r['epoch']}: {r['imputation']:.4f}, {r['recon']:.4f}, "
                              f"{r['r2'][0]:.2f}/{r['r2'][1]:.2f}" for r in logged(path))  # fmt: skip
            lines.append(f"| {kind} | {name[4:]} | {cells} |")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", nargs="?", choices=("ae", "vae"))
    parser.add_argument("seed", nargs="?", type=int)
    parser.add_argument("--start", help="a finished two-stage baseline checkpoint (its 'model' state)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, help="torch threads (1 beside another run)")
    parser.add_argument("--table", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.table:
        print(table())
    else:
        run(args.kind, args.seed, args.start, args.epochs, args.lr)
