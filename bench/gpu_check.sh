#!/usr/bin/env bash
# The GPU checks behind docs/gpu.md as one script, for a CUDA machine (e.g. a lent GPU node):
#   OUT=runs/gpu_check TOK=<tokenizer dir or alias> bash bench/gpu_check.sh [stage ...]
# Stages (default: all, in this order): tests bench05 generate dist_gpu bench15 algos dist_cpu loops
# dist_tests fsdp2_refused
# Each stage logs to $OUT/<stage>.log, is bounded by $LIMIT seconds and never stops the others;
# $OUT/stages.txt gets one line per stage (exit code, seconds).
set -u
OUT=${OUT:-runs/gpu_check}
TOK=${TOK:-smollm2-135m-instruct}
LIMIT=${LIMIT:-240}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
export TOKENIZERS_PARALLELISM=false TRANSFORMERS_NO_ADVISORY_WARNINGS=1
PY=${PY:-python3}

stage() {  # stage NAME CMD...: run CMD with a time limit, log it, record its exit code
  local name=$1 start=$SECONDS rc
  shift
  timeout "$LIMIT" "$@" >"$OUT/$name.log" 2>&1
  rc=$?
  echo "$name rc=$rc $((SECONDS - start))s" | tee -a "$OUT/stages.txt"
}

model() {  # model SIZE DIR: a random-init model of that size, built once
  [ -f "$2/config.json" ] || $PY bench/random_model.py --size "$1" --tokenizer "$TOK" --out "$2"
}

bench_w() {  # bench_w NAME MODEL_DIR [overrides...]: rlft bench on workload W's shapes
  local name=$1 dir=$2
  shift 2
  stage "$name" $PY -m rlft bench --config configs/bench_w.yaml --steps 4 --json "$OUT/$name.json" \
    model.path="$dir" model.device=cuda "$@"
}

DIST_SHAPE=(rollout.prompts_per_step=8 rollout.samples_per_prompt=8 rollout.max_new_tokens=32)
run_stage() {
  case $1 in
    tests) stage tests $PY -m pytest -q -p no:cacheprovider tests/gpu tests/unit/test_devices.py ;;
    bench05) model 0.5b /tmp/m05 >"$OUT/model05.log" 2>&1
      bench_w bench05_fp32 /tmp/m05 ;;
    generate) model 0.5b /tmp/m05 >/dev/null 2>&1
      stage generate05 $PY bench/generate_compare.py --model /tmp/m05 --device cuda --repeats 3 ;;
    dist_gpu) stage dist_gpu $PY bench/distributed_bench.py --settings 1x4:ddp,2x4:ddp,2x4:fsdp2 \
      --steps 6 --json "$OUT/dist_gpu.json" model.device=cuda "${DIST_SHAPE[@]}" ;;
    bench15) model 1.5b /tmp/m15 >"$OUT/model15.log" 2>&1
      bench_w bench15_bf16 /tmp/m15 model.dtype=bfloat16 ;;
    algos) stage algos $PY -m pytest -q -p no:cacheprovider tests/integration/test_algorithms_tiny.py \
      tests/integration/test_ppo_trpo.py ;;
    dist_cpu) stage dist_cpu $PY bench/distributed_bench.py --settings 1x8:ddp,2x8:ddp,2x8:fsdp2,4x4:ddp \
      --steps 6 --json "$OUT/dist_cpu.json" model.device=cpu "${DIST_SHAPE[@]}" ;;
    loops) stage loops $PY -m pytest -q -p no:cacheprovider tests/integration/test_sft_loop.py \
      tests/integration/test_distill.py tests/integration/test_preference_loops.py ;;
    dist_tests) stage dist_tests $PY -m pytest -q -p no:cacheprovider tests/distributed/test_supervised_ranks.py \
      tests/distributed/test_rl_ranks.py -k "ddp_two_ranks or batch_wide or supervised" ;;
    fsdp2_refused) stage fsdp2_refused bash -c "$PY -m torch.distributed.run --standalone --nproc_per_node=2 \
      -m rlft rl --config configs/grpo_tiny.yaml output_dir=/tmp/fsdp2_refused dist.strategy=fsdp2 \
      model.device=cuda 2>&1 | grep -m1 'needs the NCCL backend'" ;;
    *) echo "unknown stage $1" >&2 ;;
  esac
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PY -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
  nproc; } >"$OUT/machine.txt" 2>&1
for s in "${@:-tests bench05 generate dist_gpu bench15 algos dist_cpu loops dist_tests fsdp2_refused}"; do
  for one in $s; do run_stage "$one"; done
done
