# Sourced by the GPU scripts (gpu_checks.sh, train_nano_gpu.sh) on the GPU machine: install
# the wheels that travel in .whl/ (device README) and put this checkout's samkit first.
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD/src
else
  export PYTHONPATH=$PWD/src
fi
export PYTHONUNBUFFERED=1
