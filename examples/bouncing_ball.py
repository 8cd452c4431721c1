# SPDX-License-Identifier: Apache-2.0
"""
The KVAE on videos of a ball bouncing in a box (paper section 5.1).

Trains the model with SVI, reports the test ELBO, imputes missing frames by
Kalman filtering and smoothing, and writes config, checkpoints, metrics,
figures and GIFs to the run directory.

    python examples/bouncing_ball.py                 # quick run on the CPU (minutes)
    python examples/bouncing_ball.py --full --cuda   # the paper's settings on a GPU
    python examples/bouncing_ball.py --full --cuda --devices 4 --strategy ddp   # 4 GPUs (Lightning DDP)
    python examples/bouncing_ball.py --resume        # continue an interrupted run (flags that
                                                     # change the model or data are refused)

The default is a reduced run (2000 training sequences, 10 epochs, 16 conv
filters); ``--full`` uses 5000 sequences, 80 epochs and the reference network.
Every field of :class:`pyro_kvae.config.KVAEConfig` is also a flag.
"""

import argparse
import json
import os
import time

# large CPU tensors on transparent huge pages; torch reads this at its first allocation, so before it is imported
# (a CPU training step takes 10-15 % less time here; THP_MEM_ALLOC_ENABLE=0 turns it off)
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

import torch  # noqa: E402

from pyro_kvae.cli import add_config_args, config_from_args, explicit_dests, positive_int, probability  # noqa: E402
from pyro_kvae.config import KVAEConfig  # noqa: E402
from pyro_kvae.data import VideoDataset  # noqa: E402
from pyro_kvae.evaluation import ValidationMonitor, plot_a_space  # noqa: E402
from pyro_kvae.files import write_json  # noqa: E402
from pyro_kvae.imputation import generate, impute, pixel_error  # noqa: E402
from pyro_kvae.plotting import plot_imputation, plot_training, plot_trajectories, save_gif  # noqa: E402
from pyro_kvae.train import CHECKPOINT, Trainer, random_mask  # noqa: E402

QUICK = dict(epochs=10, conv_filters=(16, 16, 16), kf_update_epochs=3)
T_OBSERVED = 4  # frames always observed in the imputation evaluation
META = ("data", "n_train", "test_data", "binarize")  # data settings a resumed run keeps


def parse_args(argv=None, env="box", doc=__doc__, model=None):
    """
    Flags of the example for environment ``env``; ``model`` overrides KVAEConfig defaults (e.g. the
    pendulum's). Every value is checked here, before any data is loaded or generated.
    """
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    parser.add_argument("--env", default=env, help=argparse.SUPPRESS)
    parser.add_argument(
        "--data",
        default=f"data/{env}.npz",
        help="dataset .npz (generated if missing), or your own videos: a folder of .npy/.npz/.gif/.mp4 "
        "files, a .gif/.mp4, or a .npy of shape (N, T, H, W[, C]); the frame shape is read from them",
    )
    parser.add_argument(
        "--test-data",
        help="your own test videos, kept apart from --data (then --data is cut 90/10 into train and valid), e.g. "
        "the KVAE authors' datasets/authors/box_test.npz beside --data datasets/authors/box_train.npz",
    )
    parser.add_argument(
        "--binarize",
        type=float,
        help="your own videos: pixels above this value (in [0, 1)) become 1, the rest 0; 0 is the KVAE "
        "authors' rule (images > 0) for their datasets (default: keep the values)",
    )
    parser.add_argument("--run-dir", default=f"runs/{'bouncing_ball' if env == 'box' else env}")
    parser.add_argument("--full", action="store_true", help="paper settings instead of the quick run")
    parser.add_argument("--n-train", type=positive_int, help="training sequences (quick: 2000, full: all)")
    parser.add_argument("--n-test", type=positive_int, help="test sequences (quick: 200, full: all)")
    parser.add_argument("--cuda", action="store_true", help="train on the GPU")
    parser.add_argument("--resume", action="store_true", help="continue run-dir/checkpoint.pt if there is one")
    parser.add_argument("--overwrite", action="store_true", help="start afresh in a run-dir that holds a checkpoint")
    parser.add_argument(
        "--drop-prob", type=probability, default=0.5, help="frames dropped at random for imputation, in (0, 1]"
    )
    add_config_args(parser, KVAEConfig(**(model or {})))
    args = parser.parse_args(argv)
    args.explicit = explicit_dests(parser, argv)
    if args.resume and args.overwrite:
        parser.error("--resume and --overwrite exclude each other")
    if args.cuda:
        if not torch.cuda.is_available():
            parser.error("--cuda given but torch.cuda.is_available() is False")
        args.device = "cuda"
        args.explicit.add("device")
    if not args.full:  # quick defaults where the user gave no value
        for k, v in QUICK.items():
            if k not in args.explicit:
                setattr(args, k, v)
        args.n_train = args.n_train or 2000
        args.n_test = args.n_test or 200
    args.data = os.path.abspath(args.data)
    if args.binarize is not None and not 0 <= args.binarize < 1:
        parser.error(f"argument --binarize: must be in [0, 1), got {args.binarize}")
    if args.test_data is not None:
        args.test_data = os.path.abspath(args.test_data)
        if not os.path.exists(args.test_data):
            parser.error(f"argument --test-data: no videos at {args.test_data}")
    args.config = config_from_args(args, parser)
    return args


def make_trainer(args):
    """A new trainer, or with ``--resume`` the run in ``--run-dir`` with only the flags given changed."""
    if args.resume and os.path.exists(os.path.join(args.run_dir, CHECKPOINT)):
        fields = set(args.config.to_dict()) | set(META)
        changes = {k: getattr(args, k) for k in args.explicit & fields}
        try:
            trainer = Trainer.resume(args.run_dir, changes=changes)
        except ValueError as e:
            raise SystemExit(f"error: {e}") from None
        print(f"resumed {args.run_dir} at epoch {trainer.epoch}")
        for k, (old, new) in trainer.resume_changes.items():
            print(f"  {k}: {old!r} -> {new!r} (changed on resume)")
        for k in META:  # the run's own data settings, unless given (and then equal)
            setattr(args, k, trainer.meta.get(k, getattr(args, k)))
        return trainer
    try:
        return Trainer(args.config, run_dir=args.run_dir, meta={k: getattr(args, k) for k in META},
                       overwrite=args.overwrite)  # fmt: skip
    except FileExistsError as e:
        raise SystemExit(f"error: {e}") from None


def evaluate(trainer, test, args):
    """Test ELBO and imputation errors at one drop probability (first 4 frames observed)."""
    model, device = trainer.model, trainer.device
    x = test.x.to(device)
    u = test.u.to(device) if test.u.size(-1) else None
    mask = random_mask(x.shape[:2], args.drop_prob, T_OBSERVED, torch.Generator().manual_seed(args.seed + 1), device)
    smoothed = impute(model, x, mask, u, smooth=True)
    filtered = impute(model, x, mask, u, smooth=False)
    metrics = {
        "epochs": trainer.epoch,
        "test_elbo": trainer.evaluate(test),
        "drop_prob": args.drop_prob,
        "pixel_error_smoothing": pixel_error(smoothed.x, x, mask).item(),
        "pixel_error_filtering": pixel_error(filtered.x, x, mask).item(),
        "pixel_error_blank": pixel_error(torch.zeros_like(x), x, mask).item(),
    }
    return metrics, x, u, mask, filtered, smoothed


def figures(trainer, x, u, mask, filtered, smoothed, run_dir, test):
    paths = {}
    paths["training"] = os.path.join(run_dir, "training.png")
    plot_training(trainer.history, paths["training"])
    i = 0
    rows = [x[i], x[i] * trainer.model.frame_mask(mask)[i], filtered.x[i], smoothed.x[i]]
    titles = ["truth", "observed", "filtered", "smoothed"]
    paths["imputation"] = os.path.join(run_dir, "imputation.png")
    plot_imputation(rows, mask[i], paths["imputation"], titles)
    paths["imputation_gif"] = os.path.join(run_dir, "imputation.gif")
    save_gif(rows, paths["imputation_gif"], titles)
    # a-space (fig. 3c): encoded (all frames), smoothed and generated from the first 4 frames
    u1 = None if u is None else u[:1]
    encoded = impute(trainer.model, x[:1], u=u1).a[0]
    gap = torch.zeros_like(mask[:1])
    gap[:, :4] = True
    gap[:, -4:] = True
    gen = generate(trainer.model, x[:1, :4], x.shape[1], u1)
    smooth_gap = impute(trainer.model, x[:1], gap, u1, smooth=True)
    paths["trajectories"] = os.path.join(run_dir, "trajectories.png")
    plot_trajectories(
        [encoded, gen.a[0], smooth_gap.a[0]], gap[0], paths["trajectories"], ["encoded", "generated", "smoothed"]
    )
    position = test.tensors.get("position")
    if position is not None and trainer.model.prior.dim_a >= 2:  # the a-space coloured by the true position
        paths["a_space"] = os.path.join(run_dir, "a_space.png")
        r2 = plot_a_space(trainer.model, x.cpu(), position[: len(x)], paths["a_space"], u=u)
        print(f"a-space: affine R^2 of a on the true position {', '.join(f'{v:.3f}' for v in r2.tolist())}")
    # without controls roll on for 60 frames; with controls only as far as they are known
    long = (
        generate(trainer.model, x[:4, :4], 60, None)
        if u is None
        else generate(trainer.model, x[:4, :4], x.shape[1], u[:4])
    )
    paths["generation_gif"] = os.path.join(run_dir, "generation.gif")
    save_gif(list(long.x), paths["generation_gif"], [f"seq {k}" for k in range(4)], fps=8)
    return paths


FRAME_FLAGS = ("frame_size", "frame_width", "channels")


def fit_frame_shape(args, train):
    """For a new run: the config with the data's frame shape, unless the frame flags were given
    (then they must agree with the data)."""
    shape = train.frame_shape
    given = {k: getattr(args, k) for k in FRAME_FLAGS if k in args.explicit}
    if given:
        expected = KVAEConfig(**{**args.config.to_dict(), **given}).frame_shape
        if expected != shape:
            raise SystemExit(f"error: the frame flags give frames of shape {expected}, {args.data} holds {shape}")
        return args.config
    return KVAEConfig(**{**args.config.to_dict(), **KVAEConfig.frame_fields(shape)})


def load_data(args):
    """Train / valid / test splits as the flags ask, with the sizes checked against the file."""
    own = {} if args.binarize is None else {"binarize": args.binarize}
    if args.test_data is not None:  # separate test videos: --data gives train and valid
        cut = dict(seed=args.seed, fractions=(0.9, 0.1, 0.0), **own)
        train, valid = VideoDataset(args.data, "train", **cut), VideoDataset(args.data, "valid", **cut)
        test = VideoDataset(args.test_data, "all", **own)
        if test.frame_shape != train.frame_shape or test.x.shape[1] != train.x.shape[1]:
            raise SystemExit(
                f"error: --test-data {args.test_data} holds (T, *frame) {tuple(test.x.shape[1:])}, "
                f"--data {args.data} holds {tuple(train.x.shape[1:])}"
            )
    else:
        train = VideoDataset(args.data, "train", env=args.env, seed=args.seed, **own)
        valid = VideoDataset(args.data, "valid", seed=args.seed, **own)  # the seed cuts your own videos into splits
        test = VideoDataset(args.data, "test", seed=args.seed, **own)
    if len(test) == 0:
        raise SystemExit(f"error: {args.data} leaves no test videos (10 % of them); give at least 10")
    for name, n, split in (("n_train", args.n_train, train), ("n_test", args.n_test, test)):
        if name in args.explicit and n > len(split):  # the quick defaults take at most as many as there are
            name = "--" + name.replace("_", "-")
            raise SystemExit(f"error: {name} {n} exceeds the {len(split)} {split.split} sequences in {args.data}")
    T = train.x.shape[1]
    if T <= T_OBSERVED:
        raise SystemExit(
            f"error: {args.data} holds sequences of T={T} frames; the imputation evaluation observes the first "
            f"{T_OBSERVED} frames and needs T >= {T_OBSERVED + 1}"
        )
    if args.n_train:
        train = train.take(args.n_train)
    if args.n_test:
        test = test.take(args.n_test)
    if len(valid):
        valid = valid.take(args.n_test or len(valid))
    return train, valid if len(valid) else None, test


def main(args):
    # subnormal floats appear as training goes on and make a CPU step about twice as slow; flush them to zero
    torch.set_flush_denormal(True)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    resuming = args.resume and os.path.exists(os.path.join(args.run_dir, CHECKPOINT))
    trainer = make_trainer(args) if resuming else None  # a resumed run brings its own data settings
    train, valid, test = load_data(args)
    if trainer is None:
        args.config = fit_frame_shape(args, train)
        trainer = make_trainer(args)
    print(f"data: {len(train)} train, {len(valid or [])} valid, {len(test)} test sequences from {args.data}")
    # per epoch: the validation imputation error at p = 0.5, and the a-space R^2 where positions are known
    trainer.monitor = ValidationMonitor.from_dataset(valid)

    try:
        trainer.fit(train, valid)
    except ValueError as e:  # the data do not suit the likelihood: say which flag fixes it
        hint = " (--binarize 0.5 thresholds your own videos)" if "binary" in str(e) and args.binarize is None else ""
        raise SystemExit(f"error: {e}{hint}") from None
    if not trainer.is_global_zero:  # with --devices N > 1 the other processes stop here
        return
    metrics, x, u, mask, filtered, smoothed = evaluate(trainer, test, args)
    metrics["wall_time_s"] = round(time.perf_counter() - start, 1)
    metrics["device"] = str(trainer.device)
    write_json(os.path.join(args.run_dir, "metrics.json"), metrics)
    paths = figures(trainer, x, u, mask, filtered, smoothed, args.run_dir, test)

    print(json.dumps(metrics, indent=2))
    print(f"outputs in {os.path.abspath(args.run_dir)}:")
    for name in [
        "config.json",
        CHECKPOINT,
        "metrics.jsonl",
        "logs/metrics.csv (Lightning's CSV logger)",
        "metrics.json",
    ] + [os.path.basename(p) for p in paths.values()]:
        print(f"  {name}")


if __name__ == "__main__":
    main(parse_args())
