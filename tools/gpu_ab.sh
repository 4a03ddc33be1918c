#!/usr/bin/env bash
# gpu_ab.sh: A/B runs of kernel variants on the GPU machine, old and new side by side in
# one call, plus batch-1/batched latency of the Llama-3-8B-shaped models with the defaults
# and with every old variant forced. Behind docs/perf-notes.md; method in docs/benchmarks.md.
#
#   tools/gpu_ab.sh BUILD_DIR kernels   # the test suite (AB_CTEST_REGEX), then the
#                                       # matvec / attention / coopmat A/B runs
#   tools/gpu_ab.sh BUILD_DIR latency   # Q4_0 latency new vs old, Q8_0 and Q4_K_M new
#   tools/gpu_ab.sh BUILD_DIR profile   # latency --profile (per-kernel GPU time per step)
#                                       # of AB_PROFILE_TYPES (default Q4_0), defaults only
# "new" runs set VKLLM_MATMUL=$AB_NEW_MATMUL (default new: the large-tile coopmat kernel for
# prefill); "old" runs force every previous variant (and one submission per step).
#
# Variants are chosen by environment (each engine knob is documented where it is read,
# engine/exec/k_matmul*.c and k_attention.c): VKLLM_MATVEC=fast|dp4a|basic,
# VKLLM_MATVEC_DP4A_TUNE,
# VKLLM_ATTN=old, VKLLM_MATMUL=old|new, VKLLM_MATMUL_TUNE, VKLLM_MATMUL_SPLITK,
# VKLLM_ATTN_PREFILL=old|cm and VKLLM_FUSE (engine/exec/runner.h). Everything lands in
# $OUT (else ./ab-out): ab.log and results.tgz (every JSON and log).
set -uo pipefail
build=${1:?usage: tools/gpu_ab.sh BUILD_DIR kernels|latency}
part=${2:?usage: tools/gpu_ab.sh BUILD_DIR kernels|latency}
vk=$(cd "$build" && pwd)/vkllm
cd "$(dirname "$0")/.."
out=${OUT:-./ab-out}
work=${AB_WORK:-/tmp/vkllm-ab}
scratch=${BENCH_SCRATCH:-/tmp/vkllm-bench}
mkdir -p "$work" "$scratch"
log=$out/ab.log
exec > >(tee -a "$log") 2>&1
# "old": every variant of the first speed pass; "prev": the second pass (before the
# fusions, split-K and the coopmat prefill attention of the third)
old_env=(VKLLM_MATVEC=fast VKLLM_ATTN=old VKLLM_MATMUL=old VKLLM_FLUSH_LAYERS=0
  VKLLM_ATTN_PREFILL=old VKLLM_FUSE=0 VKLLM_MATMUL_SPLITK=0)
prev_env=(VKLLM_ATTN_PREFILL=old VKLLM_FUSE=0 VKLLM_MATMUL_SPLITK=0)
new_env=(VKLLM_MATMUL=${AB_NEW_MATMUL:-new})
latency_args=(-p 512 -n 128 -r 3 --batch 8,32,64)

kernels() { # kernels NAME ENV... -- ARGS...: one bench kernels run, summary printed
  local name=$1; shift
  local envs=()
  while [ "$1" != -- ]; do envs+=("$1"); shift; done
  shift
  echo "=== kernels $name: ${envs[*]} $*"
  env "${envs[@]}" timeout 240 "$vk" bench kernels --reps 10 "$@" --json "$work/$name.json" \
    > "$work/$name.log" 2>&1 || { echo "    failed: $(tail -2 "$work/$name.log")"; return; }
  python3 - "$work/$name.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
rows = {}
for r in d.get("matmul", []):
    rows.setdefault((r["type"], r["batch"]), []).append(
        f'{r["shape"]}:{r["ms"]*1000:.1f}us/{r["gbps"]:.0f}GB/s/{r["tflops"]:.1f}TF')
for k, v in sorted(rows.items()):
    print("   ", *k, " ".join(v))
for e in d.get("attention", []):
    print(f"    attn {e['kernel']:7s} seqs {e['n_seqs']:2d} ctx {e['context']:6d}: "
          f"{e['ms']*1000:.1f} us, {e['gbps']:.0f} GB/s")
PY
}

latency() { # latency TYPE NAME ENV...: bench latency of the 8B model of TYPE
  local type=$1 name=$2; shift 2
  local model=$scratch/llama3-8b-$type.gguf
  [ -f "$model" ] || timeout 120 "$vk" synth --preset llama3-8b --ctx 8192 --type "$type" \
    -o "$model" > /dev/null || { echo "synth $type failed"; return; }
  echo "=== latency $type $name: $*"
  env "$@" X=1 timeout 200 "$vk" bench latency -m "$model" "${latency_args[@]}" \
    --json "$work/latency-$type-$name.json" > "$work/latency-$type-$name.log" 2>&1 ||
    echo "    failed: $(tail -2 "$work/latency-$type-$name.log")"
  python3 - "$work/latency-$type-$name.json" <<'PY'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except Exception:
    sys.exit(0)
pp, tg = d["pp"], d["tg"]
print(f"    pp512 {pp['tps_mean']:.0f} tok/s (gpu {pp['gpu_ms_mean']:.1f} ms, wall {pp['wall_ms_mean']:.1f})"
      f" | tg128 {tg['tps_mean']:.1f} tok/s (gpu {tg['gpu_ms_mean']/128:.2f} ms/token,"
      f" wall {tg['wall_ms_mean']/128:.2f})")
print("    batch " + ", ".join(f"B={b['n_seqs']}: {b['tps_mean']:.0f} tok/s" for b in d.get("batch", [])))
PY
}

case "$part" in
kernels)
  echo "=== the test suite on this device (${AB_CTEST_REGEX:-all tests})"
  layer_dir=/opt/gpu-deps/usr/share/vulkan/explicit_layer.d
  [ -d "$layer_dir" ] && export VK_ADD_LAYER_PATH=$layer_dir
  export VKLLM_PIPELINE_CACHE_DIR=$work/pipeline-cache
  ctest --test-dir "$build" --output-on-failure --timeout 300 -R "${AB_CTEST_REGEX:-.}" > "$work/ctest.log" 2>&1
  grep -E "tests passed|Failed|\*\*\*|Not Run" "$work/ctest.log"
  unset VK_ADD_LAYER_PATH
  mv_args=(--no-attention --kernels matvec --types Q4_0,Q8_0,Q4_K,Q6_K,Q5_0 --batch 1,2,4,8)
  kernels matvec-fast VKLLM_MATVEC=fast -- "${mv_args[@]}"
  kernels matvec-dp4a VKLLM_MATVEC=dp4a -- "${mv_args[@]}"
  for tune in ${AB_DP4A_TUNES:-1,8,264 4,8,264 2,4,528 2,8,1024}; do
    kernels "matvec-dp4a-$tune" VKLLM_MATVEC=dp4a "VKLLM_MATVEC_DP4A_TUNE=$tune" -- \
      --no-attention --kernels matvec --types Q4_0,Q8_0,Q4_K,Q6_K --batch 1
  done
  kernels attn-old VKLLM_ATTN=old -- --no-matmul
  kernels attn-new X=1 -- --no-matmul
  kernels attn-new-keys16 VKLLM_ATTN_KEYS=16 -- --no-matmul
  cm_args=(--no-attention --kernels coopmat --types Q4_0,Q8_0,Q4_K --batch 512)
  kernels coopmat-old VKLLM_MATMUL=old -- "${cm_args[@]}"
  kernels coopmat-new VKLLM_MATMUL=new -- "${cm_args[@]}"
  kernels coopmat-batched X=1 -- --no-attention --kernels coopmat --types Q4_0,Q8_0,Q4_K \
    --batch 16,32,64
  for tune in ${AB_MATMUL_TUNES:-}; do
    kernels "coopmat-tune-$tune" VKLLM_MATMUL=new "VKLLM_MATMUL_TUNE=$tune" -- "${cm_args[@]}"
  done
  ;;
latency)
  latency Q4_0 new "${new_env[@]}"
  latency Q4_0 prev "${prev_env[@]}"
  latency Q4_0 old "${old_env[@]}"
  rm -f "$scratch/llama3-8b-Q4_0.gguf"
  latency Q8_0 new "${new_env[@]}"
  rm -f "$scratch/llama3-8b-Q8_0.gguf"
  latency Q4_K_M new "${new_env[@]}"
  ;;
profile)
  latency_args=(-p 512 -n 64 -r 2 --batch ${AB_PROFILE_BATCH:-8,64} --profile)
  for type in ${AB_PROFILE_TYPES:-Q4_0}; do
    latency "$type" profile "${new_env[@]}" ${AB_PROFILE_ENV:-}
    python3 - "$work/latency-$type-profile.json" <<'PY'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except Exception:
    sys.exit(0)
for p in d.get("profile", []):
    print(f"  profile {p['test']}: {p['gpu_ms_per_step']:.3f} ms/step")
    for r in p["rows"][:14]:
        share = 100 * r["us_per_step"] / (1000 * p["gpu_ms_per_step"])
        print(f"    {r['label']:56s} {r['calls_per_step']:6.1f} {r['us_per_step']:9.1f} us {share:5.1f}%")
PY
    rm -f "$scratch/llama3-8b-$type.gguf"
  done
  ;;
*)
  echo "gpu_ab: unknown part '$part' (kernels, latency or profile)" >&2
  exit 2
  ;;
esac
tar -C "$work" -czf "$out/results-$part.tgz" .
