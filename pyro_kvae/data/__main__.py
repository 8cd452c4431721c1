# SPDX-License-Identifier: Apache-2.0
"""
Generate a dataset file::

    python -m pyro_kvae.data box --out data/box.npz
    python -m pyro_kvae.data pendulum --out data/pendulum.npz --sizes 500 500 500
"""

import argparse
import time

from .datasets import generate, save
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
    args = parser.parse_args(argv)
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
