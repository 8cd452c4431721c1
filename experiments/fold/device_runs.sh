#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# On a lent GPU machine (a bare image with torch, no pyro): the fold study's runs that are not
# finished, every change x SEEDS for EPOCHS epochs, PARALLEL at a time on the one GPU; the study's
# folder comes back as a tar under $OUT (configs, metrics, final weights; no checkpoints), to be
# unpacked over the checkout here (tar xf fold.tar) and tabled with run.py --table.
#
#   wheels: see benchmarks/device_setup.sh
#   run:    BUDGET=500 bash experiments/fold/device_runs.sh   (carry .whl)
set -u
source benchmarks/device_setup.sh
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
start=$(date +%s)
$PY -c "from pyro_kvae.data.datasets import authors_dataset; authors_dataset('box', 'datasets/authors', 'data/authors_box_positions.npz')"
CHANGES=${CHANGES:-$($PY -c "import sys; sys.path.insert(0, 'experiments/fold'); import run; print(' '.join(run.CHANGES))")}
for change in $CHANGES; do
    for seed in ${SEEDS:-0 1 2 3}; do
        echo "$change $seed"
    done
done | xargs -P "${PARALLEL:-8}" -L 1 sh -c 'timeout "${BUDGET:-500}" '"$PY"' experiments/fold/run.py "$0" "$1" \
    --epochs "${EPOCHS:-4}" --device "${DEVICE:-cuda}" >"/tmp/fold_$0_$1.log" 2>&1; echo "$0 seed $1: exit $?"'
tar cf "$OUT/fold.tar" --exclude=logs --exclude=checkpoint.pt experiments/fold
cat /tmp/fold_*.log | grep -v "it/s" | tail -c 30000 >"$OUT/fold_runs.log"
ls -la "$OUT"
echo "total $(($(date +%s) - start)) s"
