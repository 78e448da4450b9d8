#!/usr/bin/env bash
# The GPU checks in one command, on a Linux machine with an NVIDIA GPU:
#   bash scripts/gpu_check.sh
# Sets up .venv, swaps onnxruntime and onnxruntime-genai for their CUDA builds (the [cuda-runtime]
# extra, pinned in constraints.txt), adds bitsandbytes for QLoRA, then runs the tests marked gpu: CUDA fp16, bf16 and int4
# packages run through onnxruntime's CUDA provider and compared with the CPU packages, QLoRA trained
# and exported, and the catalog's phi-lora and phi-qlora run as written with a tiny random Phi-3 in
# place of the real one. Restore the CPU build with `make setup`.
#
# On a GPU machine without package index access, point PYTHON at an interpreter that already has
# olive-flows' dependencies with a CUDA torch, onnxruntime-gpu, onnxruntime-genai-cuda and bitsandbytes:
#   PYTHON=python3 bash scripts/gpu_check.sh
# Extra arguments go to pytest (for example -k qlora).
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
if [[ -n "${PYTHON:-}" ]]; then
    python=$PYTHON
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    make setup
    python=.venv/bin/python
    # The CPU builds share files with the CUDA ones: remove them first. The [cuda] extra (bitsandbytes)
    # and the [cuda-runtime] pair are read from pyproject.toml, so the CPU build is not re-resolved.
    .venv/bin/pip uninstall -y onnxruntime-genai onnxruntime
    mapfile -t extras < <($python -c "import tomllib; extras = tomllib.load(open('pyproject.toml', 'rb'))['project']['optional-dependencies']; print('\n'.join(extras['cuda'] + extras['cuda-runtime']))")
    .venv/bin/pip install -c constraints.txt "${extras[@]}"
fi
# onnxruntime and onnxruntime-genai load cuBLAS, cudart and cuDNN by name: let them find the copies
# that the nvidia-* wheels (torch's and the ones above) installed.
nvidia_libs=$($python -c "import glob, os, site; print(':'.join(sorted({os.path.dirname(p) for d in site.getsitepackages() for p in glob.glob(d + '/nvidia/**/lib*.so*', recursive=True)})))")
export LD_LIBRARY_PATH="${nvidia_libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
$python -c "import onnxruntime_genai as og, torch; print('torch', torch.__version__, 'cuda:', torch.cuda.is_available(), '| genai cuda:', og.is_cuda_available())"
$python -m pytest -m gpu -v -p no:cacheprovider "$@"
