#!/usr/bin/env bash
# The CUDA checks in one run, for a lent GPU machine (python3 there holds torch with CUDA):
# the CUDA tests, then bench_cuda. Logs and JSON go to $OUT.
#   OUT=/tmp/cuda-check bash bench/cuda-check.sh
set -u
OUT=${OUT:-/tmp/cuda-check}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
$PY -c "import torch, transformers, sys; print('python', sys.version.split()[0], 'torch', torch.__version__,
'cuda', torch.version.cuda, 'transformers', transformers.__version__)" | tee -a "$OUT/gpu.txt"
timeout "${TEST_TIMEOUT:-240}" $PY -m pytest -q -p no:cacheprovider tests/test_graphs.py tests/test_device.py 2>&1 |
  tee "$OUT/pytest.log"
timeout "${BENCH_TIMEOUT:-420}" $PY -m bench.bench_cuda --rounds "${ROUNDS:-3}" \
  --out "$OUT/cuda.json" 2>&1 | tee "$OUT/bench.log"
