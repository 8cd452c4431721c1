# SPDX-License-Identifier: Apache-2.0
"""
Generate a dataset file::

    python -m pyro_kvae.data box --out data/box.npz
    python -m pyro_kvae.data pendulum --out data/pendulum.npz --sizes 500 500 500
    python -m pyro_kvae.data box --authors datasets/authors --out data/authors_box.npz

With ``--authors FOLDER`` the dataset is built from the KVAE authors' files
``FOLDER/<env>_train.npz`` and ``FOLDER/<env>_test.npz`` instead of simulated:
frames binarised as the authors do (``images > 0``), the 1000 test videos kept
whole and their first ``--n-valid`` (default 500) also used as the validation
split (for the baselines' choice of epoch), all 5000 training videos for training.
"""

import argparse
import time

from .datasets import from_authors, generate, save
from .environments import ENVIRONMENTS


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m pyro_kvae.data", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("env", choices=sorted(ENVIRONMENTS))
    parser.add_argument("--out", help="output .npz (default: data/<env>.npz)")
    parser.add_argument(
        "--sizes",
        type=int,
        nargs=3,
        metavar=("TRAIN", "VALID", "TEST"),
        help="sequences per split (default: the paper's)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--T", type=int, help="sequence length (default: the environment's)")
    parser.add_argument("--authors", metavar="FOLDER", help="build from the authors' <env>_{train,test}.npz in FOLDER")
    parser.add_argument("--n-valid", type=int, default=500, help="with --authors: test videos also used for validation")
    args = parser.parse_args(argv)
    if args.authors is not None:
        if args.T is not None or args.sizes is not None:
            parser.error("--T and --sizes apply to simulated data, not to --authors")
        try:
            data = from_authors(args.env, args.authors, args.n_valid)
        except FileNotFoundError as e:
            parser.error(f"argument --authors: {e}")
        out = args.out or f"data/authors_{args.env}.npz"
        save(out, data)
        shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in data.items() if k.endswith("/x"))
        print(f"authors' {args.env}: {shapes}; written to {out}")
        return
    if args.T is not None and args.T < 1:
        parser.error(f"argument --T: must be a positive int, got {args.T}")
    if args.sizes is not None and min(args.sizes) < 0:
        parser.error(f"argument --sizes: must be non-negative ints, got {args.sizes}")
    out = args.out or f"data/{args.env}.npz"
    settings = {} if args.T is None else {"T": args.T}
    start = time.perf_counter()
    data = generate(args.env, args.sizes, seed=args.seed, **settings)
    elapsed = time.perf_counter() - start
    save(out, data)
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in data.items() if k.endswith("/x"))
    print(f"{args.env}: {shapes}; generated in {elapsed:.1f} s; written to {out}")


if __name__ == "__main__":
    main()
