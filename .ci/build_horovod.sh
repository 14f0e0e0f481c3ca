#!/usr/bin/env bash
# Build Horovod 0.28.1 for PyTorch + Gloo into the platform venv.
# The sdist pins C++14; torch >= 2.1 headers need C++17 (see STACK.md), so we patch and build a
# wheel once into a cache folder keyed by the torch version; later runs install that wheel.
set -euo pipefail
venv=${1:-.venv}
version=0.28.1
py="$venv/bin/python"
if "$py" -c "import horovod.torch" 2>/dev/null; then exit 0; fi
torch=$("$py" -c "import torch; print(torch.__version__.split('+')[0])")
cache=${MLOPS_WHEEL_CACHE:-$HOME/.cache/mlops-wheels}/horovod-$version-torch$torch
wheel=$(ls "$cache"/horovod-*.whl 2>/dev/null | head -1 || true)
if [ -z "$wheel" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  "$py" -m pip download -q --no-deps --no-binary :all: "horovod==$version" -d "$work"
  tar xzf "$work"/horovod-$version.tar.gz -C "$work"
  src="$work/horovod-$version"
  sed -i 's/CMAKE_CXX_STANDARD 14/CMAKE_CXX_STANDARD 17/' "$src/CMakeLists.txt" "$src/horovod/torch/CMakeLists.txt"
  gpu=()
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then gpu=(HOROVOD_GPU_OPERATIONS=NCCL); fi
  mkdir -p "$cache"
  env "${gpu[@]}" HOROVOD_WITH_PYTORCH=1 HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 \
    HOROVOD_WITHOUT_TENSORFLOW=1 HOROVOD_WITHOUT_MXNET=1 MAKEFLAGS=-j"$(nproc)" \
    "$py" -m pip wheel -q --no-build-isolation --no-deps --no-cache-dir "$src" -w "$cache"
  wheel=$(ls "$cache"/horovod-*.whl | head -1)
fi
"$py" -m pip install -q --no-deps "$wheel"
"$py" -m pip install -q "cloudpickle" "psutil" "pyyaml" "packaging"  # horovod's runtime needs, already pinned
