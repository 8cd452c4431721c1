# SPDX-License-Identifier: Apache-2.0
# Sourced by the device scripts (benchmarks/device_paper_runs.sh, experiments/fold/device_runs.sh):
# on a bare GPU image with torch but no pyro, installs the carried wheels in .whl into /tmp/site
# and puts it and the checkout on PYTHONPATH; sets PY and OUT (and creates $OUT).
#
#   wheels: pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl \
#           pyro-ppl==1.9.2 pyro-api==0.1.2 pymunk cffi pycparser
PY=${PY:-python3}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
if [ -d .whl ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
