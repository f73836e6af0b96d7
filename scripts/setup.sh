#!/usr/bin/env bash
# Create .venv (if needed) and install edgelam with its test tools.
# CPU PyTorch is installed first when the environment has none, so that pip does not
# pull a multi-GB CUDA build. Override the wheel with EDGELAM_TORCH_SPEC (e.g. "torch==2.5.1").
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
VPY=.venv/bin/python
"$VPY" -m pip install --quiet --upgrade pip
if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
    spec="${EDGELAM_TORCH_SPEC:-torch==2.13.0}"
    "$VPY" -m pip install --quiet "$spec" \
        || "$VPY" -m pip install --quiet "$spec" --index-url https://download.pytorch.org/whl/cpu
fi
"$VPY" -m pip install --quiet -e ".[dev]"
"$VPY" -c "import edgelam, torch; print(f'edgelam {edgelam.__version__} ready (torch {torch.__version__})')"
