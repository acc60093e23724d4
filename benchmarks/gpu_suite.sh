#!/usr/bin/env bash
# The GPU half of the benchmarks, as one script (issue "Real-data quality benchmark"): on one CUDA GPU,
#   1. smoke: the quickstart recipe with a bottleneck adapter, bf16, through `accelerate launch`, then `hf-mtl eval`;
#   2. speed: benchmarks/adapters_speed.py on the GPU, bf16 autocast (AdapterHub's runner is CPU-only: left out);
#   3. quality: the en5 suite (benchmarks/quality.py --bf16; the Trainer's Accelerator runs bf16 mixed precision):
#      st_full vs the multi-task Pfeiffer bottleneck (lr 3e-3, temperature sampling) at 100 steps per task,
#      seeds 42/43/44 (the CPU table's budget), at 500 steps per task on the whole dev sets (seed 42), and every
#      other multi-task method at 100 steps (seed 42).
# More stages, by name: smoke (again with the fixed CLI), followup (a second seed and 4x capacity at 500 steps,
# Hyperformer in float32 next to bf16), speed_hyperformer (the stacked hypernetworks), profile (launches,
# synchronizations and the costliest operators per step).
# Each stage has its own time limit and the results so far are packed into OUT/gpu_results.tgz after each one,
# so a stage that runs over still leaves the earlier ones.
#
#   bash benchmarks/gpu_suite.sh MODEL_DIR DATA_DIR OUT_DIR [STAGES]     # STAGES default "smoke speed quality"
#
# MODEL_DIR: a local all-MiniLM-L6-v2 folder; DATA_DIR: a folder laid out as ../shared/data (the en5 files).
set -u
MODEL=${1:?MODEL_DIR}; DATA=${2:?DATA_DIR}; OUT=${3:?OUT_DIR}; STAGES=${4:-"smoke speed quality"}
HERE=$(cd "$(dirname "$0")/.." && pwd)
RES=${GPU_SUITE_WORK:-/tmp/gpu_suite}
mkdir -p "$RES/logs" "$OUT"
export PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false \
       HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
cd "$HERE"

pack() { tar czf "$OUT/gpu_results.tgz.tmp" -C "$RES" . && mv "$OUT/gpu_results.tgz.tmp" "$OUT/gpu_results.tgz"; }
stage() {  # stage NAME SECONDS COMMAND...: run with a time limit, log, pack
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  echo "=== $name (limit ${limit}s) $(date -u +%H:%M:%S)"
  timeout --kill-after=10 "$limit" "$@" > "$RES/logs/$name.log" 2>&1
  local rc=$?
  echo "=== $name: exit $rc after $((SECONDS - t0))s"; tail -n 4 "$RES/logs/$name.log" | cut -c1-300
  pack
  return 0
}

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, transformers, peft, accelerate, datasets; print('torch', torch.__version__, 'cuda', torch.version.cuda, '| transformers', transformers.__version__, '| peft', peft.__version__, '| accelerate', accelerate.__version__, '| datasets', datasets.__version__)"
  nproc
} > "$RES/env.txt" 2>&1
cat "$RES/env.txt"

smoke() {
  python3 -m accelerate.commands.launch --num_processes 1 --num_machines 1 --mixed_precision bf16 --dynamo_backend no \
      -m hf_mtl.cli train training_args/quickstart.json --model_name_or_path "$MODEL" --bf16 true \
      --adapter_method bottleneck --freeze_backbone true --learning_rate 1e-3 --output_dir /tmp/gpu_stores/quickstart \
    && python3 -m hf_mtl.cli eval /tmp/gpu_stores/quickstart
}

speed() {
  python3 benchmarks/adapters_speed.py --device cuda --bf16 --no-adapterhub --phases timing,memory \
      --rounds 10 --steps 5 --warmup 2 --threads 4 --model "$MODEL" --max-minutes "${SPEED_MINUTES:-30}" \
      --output "$RES/speed/adapters_speed_gpu"
}

quality() {
  local common=(--bf16 --data-dir "$DATA" --model "$MODEL" --threads 1 --jobs 4 --adapter-lr 3e-3)
  mkdir -p "$RES/quality"
  for seed in 42 43 44; do
    python3 benchmarks/quality.py "${common[@]}" --steps-per-task 100 --dev-cuts --seed $seed \
        --runs st_full mtl_bottleneck_temperature --output "$RES/quality/gpu_100_seed$seed" \
        --store-dir /tmp/gpu_stores/q100_$seed > "$RES/logs/quality_100_seed$seed.log" 2>&1 &
  done
  python3 benchmarks/quality.py "${common[@]}" --steps-per-task 500 \
      --runs st_full mtl_bottleneck_temperature --output "$RES/quality/gpu_500_fulldev" \
      --store-dir /tmp/gpu_stores/q500 > "$RES/logs/quality_500_fulldev.log" 2>&1 &
  # the other methods keep their own learning rates (no --adapter-lr), as in the CPU table
  python3 benchmarks/quality.py --bf16 --data-dir "$DATA" --model "$MODEL" --threads 1 --jobs 3 --steps-per-task 100 --dev-cuts \
      --runs mtl_lora_temperature mtl_prefix_tuning_temperature mtl_pals_temperature mtl_hyperformer_temperature \
             mtl_ca_mtl_temperature mtl_none_temperature --output "$RES/quality/gpu_100_methods" \
      --store-dir /tmp/gpu_stores/q100_methods > "$RES/logs/quality_100_methods.log" 2>&1 &
  wait
}

# follow-ups (not in the default STAGES): a second seed at 500 steps, 4x adapter capacity at 500 steps, and
# Hyperformer in float32 next to bf16 (its STS-B fell to r 0.25 in the bf16 run of `quality`)
followup() {
  local common=(--data-dir "$DATA" --model "$MODEL" --threads 1 --jobs 4)
  mkdir -p "$RES/quality"
  python3 benchmarks/quality.py "${common[@]}" --bf16 --adapter-lr 3e-3 --steps-per-task 500 --seed 43 \
      --runs st_full mtl_bottleneck_temperature --output "$RES/quality/gpu_500_fulldev_seed43" \
      --store-dir /tmp/gpu_stores/q500_43 > "$RES/logs/quality_500_fulldev_seed43.log" 2>&1 &
  python3 benchmarks/quality.py "${common[@]}" --bf16 --adapter-lr 3e-3 --steps-per-task 500 \
      --override '{"adapter_config": {"reduction_factor": 4}}' --runs mtl_bottleneck_temperature \
      --output "$RES/quality/gpu_500_fulldev_rf4" --store-dir /tmp/gpu_stores/q500_rf4 > "$RES/logs/quality_500_rf4.log" 2>&1 &
  for seed in 42 43; do
    python3 benchmarks/quality.py "${common[@]}" --steps-per-task 100 --dev-cuts --seed $seed --runs mtl_hyperformer_temperature \
        --output "$RES/quality/gpu_100_hyperformer_fp32_seed$seed" --store-dir /tmp/gpu_stores/q100_hf32_$seed \
        > "$RES/logs/quality_100_hf_fp32_seed$seed.log" 2>&1 &
    python3 benchmarks/quality.py "${common[@]}" --bf16 --steps-per-task 100 --dev-cuts --seed $seed --runs mtl_hyperformer_temperature \
        --output "$RES/quality/gpu_100_hyperformer_bf16_seed$seed" --store-dir /tmp/gpu_stores/q100_hf16_$seed \
        > "$RES/logs/quality_100_hf_bf16_seed$seed.log" 2>&1 &
  done
  wait
}

speed_hyperformer() {  # after stacking the hypernetworks' generators (one batched product per forward)
  python3 benchmarks/adapters_speed.py --device cuda --bf16 --no-adapterhub --phases timing \
      --rounds 10 --steps 5 --warmup 2 --threads 4 --model "$MODEL" --only hyperformer pfeiffer full_ft --skip nodrop \
      --output "$RES/speed/adapters_speed_gpu_hyperformer"
}

profile() {  # kernel launches, synchronizations and the costliest operators per step (benchmarks/profile_step.py)
  python3 benchmarks/profile_step.py --device cuda --bf16 --threads 4 --steps 5 --model "$MODEL" \
      --configs hf_mtl/floor hf_mtl/full_ft hf_mtl/bottleneck/pfeiffer hf_mtl/bottleneck/pfeiffer/mixed hf_mtl/hyperformer \
                hf_mtl/hyperformer++ hf_mtl/pals hf_mtl/ca_mtl hf_mtl/lora peft/lora --output "$RES/speed/profile_gpu.json"
}

# default time limit of each stage (seconds); <STAGE>_LIMIT in the environment overrides it (e.g. SMOKE_LIMIT=60)
declare -A LIMITS=([smoke]=120 [speed]=170 [quality]=240 [followup]=240 [speed_hyperformer]=170 [profile]=120)
export MODEL DATA RES
for s in $STAGES; do
  if [ -z "${LIMITS[$s]:-}" ]; then echo "unknown stage $s (${!LIMITS[*]})"; exit 2; fi
  limit_var="${s^^}_LIMIT"
  stage "$s" "${!limit_var:-${LIMITS[$s]}}" bash -c "$(declare -f "$s"); $s"
done
for f in "$RES"/quality/*/quality.md "$RES"/speed/*.md; do [ -f "$f" ] && { echo "--- $f"; cat "$f"; }; done
pack
