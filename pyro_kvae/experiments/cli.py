# SPDX-License-Identifier: Apache-2.0
"""The command line ``python -m pyro_kvae.experiments`` (its help is the package's docstring)."""

import argparse
import importlib

import torch

from ..cli import positive_int
from ..nn.vae import LIKELIHOODS
from .runs import BASELINES, IMPUTATION_ENVS, PAPER, imputation_experiment, pendulum_table, run_all


def add_common_args(parser):
    """The flags every experiment takes (run directory, epochs, filters, --paper, seed, device)."""
    parser.add_argument("--run-dir", help="default runs/experiments/<env>, where 'all' and --tables-only look "
                        "(with --authors: experiments/authors_<env>)")  # fmt: skip
    parser.add_argument("--epochs", type=positive_int, default=20, help="KVAE epochs (paper: 80)")
    parser.add_argument("--filters", type=positive_int, nargs="+", default=[16, 16, 16],
                        help="conv filters (paper: 32 32 32)")  # fmt: skip
    parser.add_argument("--paper", action="store_true", help="the paper's settings: 80 epochs, 32 filters, all data")
    parser.add_argument("--iwae-particles", type=positive_int, default=10,
                        help="particles of the importance-weighted bound reported beside the test ELBO")  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="retrain every model from scratch")
    parser.add_argument("--cuda", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--select-seeds",
        type=positive_int,
        default=1,
        help="train the KVAE with this many seeds (--seed, --seed + 1, ...) for --select-epochs and "
        "continue the one with the lowest validation imputation error (default 1: one run)",
    )
    parser.add_argument("--baselines", nargs="+", choices=tuple(BASELINES), metavar="KIND",
                        help="the imputation baselines to train and compare: vae-rnn (its own VAE), ae-rnn (an LSTM "
                        "on the KVAE's own auto-encoder, the paper's AE-RNN), ae-rnn-own (its own deterministic "
                        "auto-encoder) (default: vae-rnn ae-rnn)")  # fmt: skip
    parser.add_argument("--baseline-seeds", type=positive_int, default=1,
                        help="train each baseline with this many seeds and keep the one with the lowest validation "
                        "imputation error (default 1)")  # fmt: skip
    parser.add_argument("--baseline-select-epochs", type=positive_int,
                        help="with --baseline-seeds: compare the seeds after this many auto-encoder epochs (a fresh "
                        "LSTM's validation imputation error on each code) and train only the best to the end "
                        "(default: train every seed to the end)")  # fmt: skip
    parser.add_argument("--select-epochs", type=positive_int, default=3,
                        help="epochs of each seed before the choice (default 3)")  # fmt: skip


def main(argv=None):
    """``python -m pyro_kvae.experiments``: parses ``argv`` and runs the experiment it names."""
    # subnormal floats appear as training goes on and make a CPU step about twice as slow (measured on a
    # box model after 9 epochs: 1.77 s against 0.89 s per step); flushing them to zero changes nothing else
    torch.set_flush_denormal(True)
    parser = argparse.ArgumentParser(prog="python -m pyro_kvae.experiments",
                                     description=importlib.import_module(__package__).__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("env", choices=[*IMPUTATION_ENVS, "pendulum", "all"])
    parser.add_argument(
        "--data",
        help="dataset file (default data/<env>.npz, generated if missing), or your own "
        "videos (a folder of .npy/.npz/.gif/.mp4, a .gif/.mp4, or a .npy (N, T, H, W[, C])); "
        "with 'all': the folder of the <env>.npz files (default data)",
    )
    parser.add_argument(
        "--likelihood", choices=LIKELIHOODS,
        help="frame likelihood (default: bernoulli; pendulum: gaussian_learned, table 1's scale)",
    )  # fmt: skip
    parser.add_argument("--baseline-epochs", type=positive_int,
                        help="epochs of the baselines' auto-encoders (default: --epochs)")  # fmt: skip
    parser.add_argument("--rnn-epochs", type=positive_int, default=100,
                        help="epochs of the baselines' LSTMs (cheap: about 1/15 of a KVAE epoch each)")  # fmt: skip
    parser.add_argument("--authors", nargs="?", const="datasets/authors", metavar="FOLDER",
                        help="the KVAE authors' own data (FOLDER/<env>_{train,test}.npz, default datasets/authors): "
                        "data/authors_<env>.npz is built from it if missing, runs go to experiments/authors_<env>, "
                        "whose committed state a run continues from")  # fmt: skip
    parser.add_argument("--patience", type=positive_int,
                        help="a baseline's auto-encoder stops after this many epochs without a better validation "
                        "error (default: it trains every epoch and keeps the best; the LSTM always does)")  # fmt: skip
    parser.add_argument("--n-train", type=positive_int, help="training sequences (default: all)")
    parser.add_argument("--n-test", type=positive_int, default=1000)
    parser.add_argument("--dynamics", default="lstm", choices=["lstm", "mlp"], help="alpha network (mlp: fig. 4 grid)")
    parser.add_argument("--stage", default="all", choices=["kvae", "baselines", "all", "evaluate"],
                        help="train only the KVAE or only the baselines and stop (long runs in pieces); "
                        "evaluate: no training, the tables and figures of what is trained in --run-dir now "
                        "(the KVAE at its last finished epoch, the baselines whose training finished)")  # fmt: skip
    parser.add_argument("--docs", help="with 'all': copy the README's figures to this folder")
    parser.add_argument("--tables-only", action="store_true",
                        help="with 'all': only write tables.md and copy the figures of finished runs")  # fmt: skip
    parser.add_argument("--pendulum-epochs", type=positive_int,
                        help="with 'all': epochs of the pendulum models (default: --epochs; paper: 80)")  # fmt: skip
    parser.add_argument("--paper-epochs", type=positive_int, default=PAPER["epochs"],
                        help="with 'all': epochs of the paper-settings KVAE on the box (default 80)")  # fmt: skip
    add_common_args(parser)
    args = parser.parse_args(argv)
    if args.cuda and not torch.cuda.is_available():
        parser.error("--cuda given but torch.cuda.is_available() is False")
    if args.paper:
        args.epochs, args.filters, args.n_train = PAPER["epochs"], PAPER["filters"], None
    if args.env == "pendulum":
        if args.stage != "all":
            parser.error("--stage applies to the imputation experiments")
        return pendulum_table(args)
    if args.env == "all":
        return run_all(args)
    args.likelihood = args.likelihood or "bernoulli"
    return imputation_experiment(args)
