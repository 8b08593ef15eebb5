# Sourced by the device_*.sh scripts: $OUT and runs/ exist, and python3 finds reasonlab and the
# wheels carried in .whl/ (pydantic and its dependencies, missing from the GPU machine's image).
set -u
OUT=${OUT:-/tmp/device-out}
mkdir -p "$OUT" runs
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD/src" PYTHONUNBUFFERED=1
