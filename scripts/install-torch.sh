#!/usr/bin/env bash
# Install torch into the venv without pulling a multi-GB CUDA build onto CPU-only machines.
#   NVIDIA GPU present (nvidia-smi)  -> PyPI's default torch, which is the CUDA build.
#   macOS                            -> PyPI's default torch (CPU + MPS).
#   Linux without GPU                -> the CPU-only build from TORCH_INDEX; if that index is not
#                                       reachable, a CPU wheel from pip's find-links (offline mirrors).
# Override with TORCH_INDEX=https://download.pytorch.org/whl/cu128 (any torch index) to choose yourself.
set -euo pipefail
pip="$1"
if "$pip" show torch >/dev/null 2>&1; then exit 0; fi
if [ -n "${TORCH_INDEX:-}" ]; then
  exec "$pip" install --index-url "$TORCH_INDEX" torch
fi
if command -v nvidia-smi >/dev/null 2>&1 || [ "$(uname -s)" = Darwin ]; then
  exec "$pip" install torch
fi
echo "Installing the CPU-only torch build (no GPU found)..."
if "$pip" install --isolated --timeout 30 --retries 1 --index-url https://download.pytorch.org/whl/cpu torch; then
  exit 0
fi
echo "download.pytorch.org not reachable; looking for a local CPU wheel in pip's find-links..."
"$pip" install --no-index --no-deps torch
version=$("$(dirname "$pip")/python" -c 'import importlib.metadata as m; print(m.version("torch"))')
case "$version" in *+cpu*) ;; *) echo "error: the local torch wheel ($version) is not a CPU build" >&2; exit 1;; esac
"$pip" install "torch==$version"   # brings torch's own dependencies
