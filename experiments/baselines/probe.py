# SPDX-License-Identifier: Apache-2.0
"""
Short runs of the baselines' auto-encoders on the authors' box: when does the AE-RNN's 2-d code
fold, does it depend on the seed, and does a short LSTM on the early code already tell a good
seed from a bad one (as the validation imputation error does for the KVAE)?

    .venv/bin/python experiments/baselines/probe.py KIND SEED [--epochs 5] [--lr 0.001]   # KIND: ae or vae
    .venv/bin/python experiments/baselines/probe.py --table

Each run builds the baseline exactly as ``python -m pyro_kvae.experiments box --paper --authors``
does for seed ``SEED`` (``torch.manual_seed(SEED)``, the KVAE's encoder and decoder with 32
filters, the same shuffling generator), trains the auto-encoder on all 5000 training sequences'
frames, and after every epoch logs to ``experiments/baselines/KIND/seedN/metrics.jsonl``:

- ``recon``: the validation reconstruction error (wrong pixels, every frame observed);
- ``r2``: the affine R^2 of the codes (encoder means) on the true ball positions, validation;
- ``probe``: the validation imputation error at p = 0.5 (first 4 frames observed) of a fresh
  LSTM trained for 20 epochs on the codes, as the package's LSTM stage (teacher forcing, Adam
  0.003), the better of its errors after 10 and 20 epochs.

The validation split is the first 500 of the authors' test sequences (the package's). The
auto-encoder trains by the package's own ``train_rnn_baseline``, paused after every epoch; an
unfinished run continues from its ``baseline.pt``.
"""

import argparse
import json
import os

import torch

from pyro_kvae.baselines import RNNBaseline, encode_codes, probe_imputation_error, train_rnn_baseline
from pyro_kvae.config import KVAEConfig, build_kvae
from pyro_kvae.data import VideoDataset
from pyro_kvae.data.datasets import authors_dataset
from pyro_kvae.evaluation import affine_r2
from pyro_kvae.files import append_jsonl
from pyro_kvae.train import random_mask

ROOT = os.path.dirname(os.path.abspath(__file__))
DATA = "data/authors_box.npz"
PROBE_EPOCHS = (10, 20)


def run(kind, seed, epochs, n_train=None, lr=None, weight_init=None, decoder_bias=None):
    change = "" if lr is None else f"_lr{lr:g}"
    change += "" if weight_init is None else f"_{weight_init}"
    change += "" if decoder_bias is None else f"_bias{decoder_bias:g}"
    run_dir = os.path.join(ROOT, kind + change, f"seed{seed}")
    os.makedirs(run_dir, exist_ok=True)
    torch.set_flush_denormal(True)
    path = authors_dataset("box", "datasets/authors", DATA)
    train, valid = VideoDataset(path, "train"), VideoDataset(path, "valid")
    train = train.take(n_train) if n_train else train
    position = valid.tensors["position"]
    valid_mask = random_mask(valid.x.shape[:2], 0.5, 4, torch.Generator().manual_seed(seed + 1))
    config = KVAEConfig(conv_filters=(32, 32, 32), weight_init=weight_init or KVAEConfig.weight_init,
                        decoder_bias_std=decoder_bias or 0.0, **KVAEConfig.frame_fields(train.frame_shape))  # fmt: skip
    torch.manual_seed(seed)  # as fit_baselines: the same initial weights as the package's seed
    ref = build_kvae(config)
    model = RNNBaseline(ref.encoder, ref.decoder, kind == "vae", config.dim_a, likelihood=config.likelihood)
    checkpoint, metrics = os.path.join(run_dir, "baseline.pt"), os.path.join(run_dir, "metrics.jsonl")
    done = len(logged(metrics)) if os.path.exists(metrics) else 0
    for epoch in range(done + 1, epochs + 1):
        # the package's training, paused after each epoch (it never reaches its LSTM stage here)
        info = train_rnn_baseline(model, train.x, epochs_ae=10**6, epochs_rnn=1, seed=seed, valid=valid.x,
                                  lr=config.lr if lr is None else lr, checkpoint=checkpoint, pause_after=epoch,
                                  progress=False)  # fmt: skip
        last = info["history"][-1]
        model.train()
        row = {
            "epoch": last["epoch"],
            "train_loss": round(last["train_loss"], 3),
            "recon": last["valid_error"],
            "r2": [round(v, 4) for v in affine_r2(encode_codes(model, valid.x), position).tolist()],
            "probe": probe_imputation_error(model, train.x, valid.x, valid_mask, PROBE_EPOCHS, seed=1000 + seed),
            "seconds": last["seconds"],
        }
        append_jsonl(metrics, row)
        print(json.dumps(row), flush=True)


def logged(path):
    """The rows of ``metrics.jsonl``, the last of each epoch."""
    with open(path) as f:
        return list({r["epoch"]: r for r in map(json.loads, filter(str.strip, f))}.values())


def table():
    lines = ["| kind | seed | epoch: R^2 a[0]/a[1], reconstruction error, probe imputation error |", "|---|---|---|"]
    kinds = sorted(d for d in os.listdir(ROOT) if os.path.isdir(os.path.join(ROOT, d)))
    for kind in kinds:
        for name in sorted(os.listdir(os.path.join(ROOT, kind))):
            path = os.path.join(ROOT, kind, name, "metrics.jsonl")
            if not os.path.exists(path):  # started, no epoch finished yet
                continue
            rows = logged(path)
            cells = "; ".join(f"{r['epoch']}: {r['r2'][0]:.2f}/{r['r2'][1]:.2f}, {r['recon']:.4f}, {r['probe']:.4f}"
                              for r in rows)  # fmt: skip
            base, *changes = kind.split("_")
            names = {"lr": "lr ", "bias": "decoder bias std "}
            label = ", ".join([f"{base.upper()}-RNN"] + [next((c.replace(k, v, 1) for k, v in names.items()
                                                                if c.startswith(k)), c) for c in changes])  # fmt: skip
            lines.append(f"| {label} | {name[4:]} | {cells} |")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", nargs="?", choices=("ae", "vae"))
    parser.add_argument("seed", nargs="?", type=int)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--table", action="store_true")
    parser.add_argument("--n-train", type=int, help="training sequences (a smoke test takes fewer)")
    parser.add_argument("--lr", type=float, help="the auto-encoder's learning rate (default: the KVAE's, 0.007, "
                        "as the package); runs go to KIND_lrLR/")  # fmt: skip
    parser.add_argument(
        "--weight-init",
        choices=("he", "glorot"),
        help="the auto-encoder's initialisation (default: the package's, he); runs go to KIND_INIT/",
    )
    parser.add_argument("--decoder-bias", type=float,
                        help="std of the decoder's first-layer initial bias (default 0, the package's); runs go to "
                        "KIND_biasSTD/")  # fmt: skip
    args = parser.parse_args()
    if args.table:
        print(table())
    else:
        run(args.kind, args.seed, args.epochs, args.n_train, args.lr, args.weight_init, args.decoder_bias)
