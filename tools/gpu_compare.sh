#!/usr/bin/env bash
# gpu_compare.sh: the A/B kernel comparisons behind docs/perf-notes.md, in one GPU call.
#   tools/gpu_compare.sh BUILD_DIR
# Runs `vkllm bench kernels` for the weight kernels with the old and the new variants
# (VKLLM_MATVEC=basic / default; VKLLM_MATMUL=old / default) and, when the default
# model is present, `vkllm bench latency` on it. Logs and JSON go under $OUT.
set -uo pipefail
build=${1:?usage: tools/gpu_compare.sh BUILD_DIR}
vk=$(cd "$build" && pwd)/vkllm
out=${OUT:-./bench-out}
mkdir -p "$out"
types=Q4_0,Q4_K,Q6_K,Q8_0,F16
summary() { # summary JSON: one line per (type, batch) with the kernel times in µs
  python3 - "$1" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
rows = {}
for r in d["matmul"]:
    rows.setdefault((r["type"], r["batch"]), []).append(f'{r["shape"]}:{r["ms"]*1000:.1f}us/{r["tflops"]:.0f}TF')
for k, v in sorted(rows.items()):
    print(*k, " ".join(v))
PY
}
for variant in "VKLLM_MATVEC=basic:matvec-basic:matvec:1,8" "X=1:matvec-new:matvec:1,8" \
               "VKLLM_MATMUL=old:coopmat-old:coopmat:16,32,64,512" "X=1:coopmat-new:coopmat:16,32,64,512"; do
  IFS=: read -r env name kernels batch <<<"$variant"
  echo "=== $name"
  env "$env" "$vk" bench kernels --kernels "$kernels" --types "$types" --batch "$batch" --reps 10 \
    --json "$out/$name.json" > "$out/$name.log" 2>&1 && summary "$out/$name.json"
done
model=models/gemma-3-270m-q4_k_m.gguf
if [ -f "$model" ]; then
  echo "=== gemma3-270m latency"
  "$vk" bench latency -m "$model" -p 512 -n 128 -r 3 --batch 8,32,64 \
    --json "$out/latency-gemma3-270m.json" --png "$out/latency-batch-gemma3-270m.png" 2>&1 | tail -12
fi
