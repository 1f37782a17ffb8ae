#!/usr/bin/env bash
# Creates bench/.venv-torch: the PyTorch reference environment for bench/torch_ref.py.
#
#     bash bench/reference_env.sh
#
# Separate from the project venv because Hugging Face's `peft` and our `peft` share a name.
# torch is pinned (the CPU build) and kept pinned by a constraint while peft and its deps install.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv-torch"
python3 -m venv "$venv"
pip="$venv/bin/pip"
pin="$(mktemp)"
trap 'rm -f "$pin"' EXIT
echo "torch==2.13.0" > "$pin"
"$pip" install torch==2.13.0
"$pip" install -c "$pin" transformers peft accelerate safetensors numpy
"$venv/bin/python" -I -c "import torch, transformers, peft; print('torch', torch.__version__, \
'transformers', transformers.__version__, 'peft', peft.__version__)"
