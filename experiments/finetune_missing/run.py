# SPDX-License-Identifier: Apache-2.0
"""
Does the KVAE generate better when its dynamics network has seen its own predictions in training?

The reference recipe trains on fully observed videos (``train_miss_prob`` 0), so the network
that gives ``alpha_{t+1}`` from ``a_0..a_t`` only ever reads encodings of real frames; at a
missing frame it reads the filter's prediction ``C_t mu_{t|t-1}`` instead. Both runs below
continue a finished 80-epoch run for a few epochs, one change apart:

- ``observed``: as it was trained (``train_miss_prob`` 0), the control for the extra epochs;
- ``missing_P``: each frame after the first ``t_init_train_miss`` dropped with probability ``P``,
  so that the filter feeds the network its predictions where frames are missing.

::

    .venv/bin/python experiments/finetune_missing/run.py experiments/authors_box_gravity observed 3
    .venv/bin/python experiments/finetune_missing/run.py experiments/authors_box_gravity missing_0.5 3
    .venv/bin/python experiments/finetune_missing/run.py --table

Each run writes ``experiments/finetune_missing/<env>/<name>/`` (its config, metrics, checkpoint
and ``result.json``: the validation errors at drop probability 0.5 (smoothing) and 1 (4 frames
observed, the rest generated), on the run's validation videos, with one mask per probability).
"""

import argparse
import dataclasses
import glob
import json
import os

import torch

from pyro_kvae.config import KVAEConfig
from pyro_kvae.data import VideoDataset
from pyro_kvae.evaluation import T_INIT, ValidationMonitor
from pyro_kvae.files import write_json
from pyro_kvae.imputation import impute, pixel_error
from pyro_kvae.train import CHECKPOINT, Trainer, load_checkpoint, random_mask

ROOT = os.path.dirname(os.path.abspath(__file__))


def validation_errors(kvae, x):
    """Smoothing error at p = 0.5 and generation error at p = 1 (first ``T_INIT`` frames observed)."""
    out = {}
    with torch.no_grad():
        for p in (0.5, 1.0):
            mask = random_mask(x.shape[:2], p, T_INIT, torch.Generator().manual_seed(1))
            out[f"p{p}_smoothing"] = pixel_error(impute(kvae, x, mask).x, x, mask).item()
            out[f"p{p}_filtering"] = pixel_error(impute(kvae, x, mask, smooth=False).x, x, mask).item()
    return out


def run(args):
    with open(os.path.join(args.run_dir, "results.json")) as f:
        data = json.load(f)["data"]
    out_dir = os.path.join(ROOT, os.path.basename(os.path.normpath(args.run_dir)), args.name)
    train, valid = VideoDataset(data, "train"), VideoDataset(data, "valid")
    monitor = ValidationMonitor.from_dataset(valid)
    record = os.path.join(out_dir, "result.json")
    if os.path.exists(os.path.join(out_dir, CHECKPOINT)):
        trainer = Trainer.resume(out_dir, monitor=monitor)
        with open(record) as f:
            result = json.load(f)
    else:
        state = load_checkpoint(os.path.join(args.run_dir, "kvae", CHECKPOINT))
        start = len(state["pyro_kvae"]["history"])
        p = 0.0 if args.name == "observed" else float(args.name.split("_", 1)[1])
        config = KVAEConfig.from_dict(state["pyro_kvae"]["config"])
        config = dataclasses.replace(config, train_miss_prob=p, epochs=start + args.epochs)
        meta = {**state["pyro_kvae"].get("meta", {}), "continued_from": args.run_dir}
        trainer = Trainer(config, run_dir=out_dir, meta=meta, state=state, monitor=monitor)
        result = {"name": args.name, "train_miss_prob": p, "start_epoch": start,
                  "videos": f"validation: the first {len(valid)} test videos",
                  "before": validation_errors(trainer.model.eval(), valid.x)}  # fmt: skip
        write_json(record, result)
    trainer.fit(train, valid)
    result.update(epochs=trainer.epoch, after=validation_errors(trainer.model.eval(), valid.x))
    write_json(record, result)
    print(json.dumps(result, indent=1))


def table():
    print("| env | run | epochs | p = 0.5 smoothing | p = 1 generation |")
    print("|---|---|---|---|---|")
    started = set()
    for path in sorted(glob.glob(os.path.join(ROOT, "*", "*", "result.json"))):
        with open(path) as f:
            r = json.load(f)
        env = os.path.basename(os.path.dirname(os.path.dirname(path)))
        b = r["before"]
        if env not in started:  # every run of an env starts from the same checkpoint
            started.add(env)
            print(f"| {env} | (start) | {r['start_epoch']} | {b['p0.5_smoothing']:.4f} | {b['p1.0_filtering']:.4f} |")
        if "after" not in r:
            continue
        a = r["after"]
        print(f"| {env} | {r['name']} | {r['epochs']} | {a['p0.5_smoothing']:.4f} | {a['p1.0_filtering']:.4f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", nargs="?")
    parser.add_argument("name", nargs="?", help="observed, or missing_P with P the drop probability")
    parser.add_argument("epochs", nargs="?", type=int, default=3)
    parser.add_argument("--table", action="store_true")
    args = parser.parse_args()
    if args.table:
        table()
    else:
        if args.name != "observed" and not (args.name or "").startswith("missing_"):
            parser.error("name must be observed or missing_P")
        run(args)
