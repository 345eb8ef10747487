#!/usr/bin/env bash
# The GPU checks of a session lent a GPU (see the brief): the CUDA tests, then the CUDA rows
# of compare_official.py. Run from the repository root on the GPU machine; wheels missing
# there (pycocotools, segment-anything) travel in .whl/ (device README).
set -uo pipefail
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
source benchmarks/gpu_env.sh
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
python3 -m pytest -q -p no:cacheprovider -o addopts="" tests/test_train.py tests/test_parity.py \
  -k "cuda or resume or tiny_training" -rA 2>&1 | tee "$OUT/pytest_cuda.log" | tail -25
python3 benchmarks/compare_official.py --device cuda --no-compile ${CMP_ARGS:-} 2>&1 \
  | tee "$OUT/compare_cuda.log" | tail -30
cp benchmarks/results/compare_official*_cuda.json "$OUT/" 2>/dev/null
