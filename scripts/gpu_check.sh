#!/usr/bin/env bash
# The GPU checks in one command, on a Linux machine with an NVIDIA GPU:
#   bash scripts/gpu_check.sh
# Sets up .venv, swaps onnxruntime-genai for its CUDA build (same version, so Olive's ModelBuilder
# pin holds), adds bitsandbytes for QLoRA, then runs the tests marked gpu: a CUDA package built and
# smoke-tested on the GPU, and QLoRA trained and exported. Restore the CPU build with `make setup`.
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
make setup
genai_version=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('onnxruntime-genai'))")
.venv/bin/pip uninstall -y onnxruntime-genai onnxruntime
bnb=$(sed -n 's/^cuda = \["\(.*\)"\]$/\1/p' pyproject.toml)  # the [cuda] extra, without re-resolving the CPU build
.venv/bin/pip install "onnxruntime-genai-cuda==${genai_version}" "$bnb"
.venv/bin/python -m pytest -m gpu -v "$@"
