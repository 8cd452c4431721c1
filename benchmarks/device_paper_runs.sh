#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# On a lent GPU machine (a bare image with torch, no pyro): the GPU check, then the paper runs on the
# authors' data with the seed-selecting recipe (each env's KVAE and its baselines side by side),
# continued for BUDGET seconds; the run directories come back as a tar under $OUT, to be unpacked
# over the checkout here (tar xf runs.tar) and continued on any machine. The datasets are built
# there from datasets/authors (tracked), and the committed run state travels with the tree.
#
#   wheels: see benchmarks/device_setup.sh
#   run:    PYTEST_ADDOPTS=--ignore=tests/test_notebooks.py BUDGET=330 bash benchmarks/device_paper_runs.sh
#           (carry .whl; nbformat is not on the GPU image; ENVS="box" for the box alone)
set -u
source benchmarks/device_setup.sh
nvidia-smi -L 2>/dev/null
start=$(date +%s)
if [ -z "${SKIP_CHECK:-}" ]; then  # SKIP_CHECK=1: only the CUDA tests, beside the runs
    timeout "${CHECK_BUDGET:-150}" $PY benchmarks/gpu_check.py ${CHECK_ARGS:-} >"$OUT/gpu_check.log" 2>&1
    echo "gpu_check: exit $? in $(($(date +%s) - start)) s"
else
    (timeout 120 $PY -m pytest -q -k cuda tests 2>&1 | tail -c 15000 >"$OUT/cuda_tests.log") &
fi
B=${BUDGET:-330}
CUDA=${CUDA---cuda}
run() {  # name, then the experiment's arguments
    local name=$1
    shift
    timeout "$B" $PY -m pyro_kvae.experiments "$@" $CUDA >"/tmp/$name.log" 2>&1
    echo "$name: exit $?"
    tr '\r' '\n' <"/tmp/$name.log" | grep -v "it/s\]$" | tail -c 20000 >"$OUT/$name.log"
}
FLAGS="--paper --authors --patience 10 --select-seeds 4 --select-epochs 3 --baseline-seeds 3 --baseline-select-epochs 3"
DIRS=""
for env in ${ENVS:-box polygon}; do
    dir=experiments/authors_${env}  # a finished stage only loads (the box's KVAE is finished)
    run "${env}_kvae" "$env" $FLAGS --stage kvae --run-dir "$dir" &
    run "${env}_baselines" "$env" $FLAGS --stage baselines --run-dir "$dir" &
    DIRS="$DIRS $dir"
done
wait
tar cf "$OUT/runs.tar" --exclude=logs $DIRS 2>/dev/null
ls -la "$OUT"
echo "total $(($(date +%s) - start)) s"
