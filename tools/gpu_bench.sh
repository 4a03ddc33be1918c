#!/usr/bin/env bash
# gpu_bench.sh: every vkllm benchmark on the GPU machine, in one go (< 9 minutes on an
# H100), ending with a short summary table. Method: docs/benchmarks.md.
#
#   tools/gpu_bench.sh BUILD_DIR
#
# Synthesizes the random-weight Llama-3-8B models it needs (Q4_0, Q8_0, Q4_K_M) into a
# scratch folder (BENCH_SCRATCH, default /tmp/vkllm-bench; about 9 GB at a time; each
# model is deleted after use), runs
#   1. bench kernels      (matmul paths x 9 types x 8B shapes, attention, copy bandwidth)
#   2. bench latency      (pp512, tg128, decode of 8/32/64 sequences) for each quant
#   3. bench throughput   (Q4_0: continuous/static x paged/contiguous at 2 GiB of KV)
#   4. bench serve        (Q4_0 behind `vkllm serve`: Poisson rates 4 and 16/s, then all at once)
# and writes JSON, PNG plots and the full log under $OUT (else ./bench-out). Each step has
# its own time limit, so a slow or failing step cannot eat the others' time; the summary
# says which steps failed. BENCH_STEPS (default "kernels,latency,throughput,serve") picks
# steps, so one can be re-run alone. Set BENCH_QUICK=1 for a shorter run (fewer requests), and
# BENCH_SMOKE=1 to check the script itself on a CPU device (tiny model, tiny sizes).
set -uo pipefail
build=${1:?usage: tools/gpu_bench.sh BUILD_DIR}
vk=$(cd "$build" && pwd)/vkllm
[ -x "$vk" ] || { echo "gpu_bench: $vk not found (build vkllm_cli first)" >&2; exit 2; }
cd "$(dirname "$0")/.."
out=${OUT:-./bench-out}
scratch=${BENCH_SCRATCH:-/tmp/vkllm-bench}
mkdir -p "$out" "$scratch"
log=$out/gpu_bench.log
: > "$log"
t_start=$(date +%s)
failed=()
requests=100
serve_requests=64
if [ "${BENCH_QUICK:-0}" = 1 ]; then requests=60; serve_requests=24; fi
serve_requests=${BENCH_SERVE_REQUESTS:-$serve_requests}
preset=llama3-8b
kernels_args=(--reps 10)
latency_args=(-p 512 -n 128 -r 3 --batch 8,32,64)
tp_args=(--kv-memory 2G --max-seqs 64 --max-batch-tokens 2048)
serve_args=(--kv-blocks 4096 --max-step-tokens 2048)
load_args=()
if [ "${BENCH_SMOKE:-0}" = 1 ]; then
  preset=tiny-llama
  kernels_args=(--small --reps 3 --types F16,Q4_0,Q8_0,Q4_K)
  latency_args=(-p 64 -n 16 -r 2 --batch 8,32,64 --batch-prompt 32)
  tp_args=(--kv-memory 200K --max-seqs 16 --max-batch-tokens 128)
  serve_args=(--kv-blocks 512)
  load_args=(--len-scale 0.05)
  requests=40; serve_requests=12
fi

deadline=$(( t_start + ${BENCH_DEADLINE_S:-510} )) # everything ends by 8.5 minutes
step() { # step NAME LIMIT_S CMD...: runs CMD with a time limit, output to the log
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s)
  local left=$(( deadline - t0 ))
  if [ $left -lt 15 ]; then
    echo "=== $name: skipped, the overall deadline is reached" | tee -a "$log"
    failed+=("$name(skipped)")
    return 1
  fi
  [ $limit -gt $left ] && limit=$left
  echo "=== $name (limit ${limit}s): $*" | tee -a "$log"
  timeout --signal=INT --kill-after=10 "$limit" "$@" >> "$log" 2>&1
  local rc=$?
  echo "=== $name: rc=$rc, $(( $(date +%s) - t0 )) s" | tee -a "$log"
  [ $rc -eq 0 ] || failed+=("$name(rc=$rc)")
  return $rc
}

synth() { # synth TYPE: the 8B model of that type, streamed to the scratch folder
  step "synth-$1" 90 "$vk" synth --preset "$preset" --ctx 8192 --type "$1" \
    -o "$scratch/llama3-8b-$1.gguf"
}

steps=",${BENCH_STEPS:-kernels,latency,throughput,serve},"
wants() { [[ $steps == *",$1,"* ]]; }

step devices 30 "$vk" devices

# 1. Kernels: ~1 GiB copy buffers, every matmul path, type and 8B shape, attention.
wants kernels && step kernels 150 "$vk" bench kernels "${kernels_args[@]}" --json "$out/kernels.json"

# 2. Latency per quant type (the H100 bar lists Q4_0, Q8_0 and Q4_K_M).
latency_types=(Q4_0 Q8_0 Q4_K_M)
wants latency || latency_types=()
for type in "${latency_types[@]}"; do
  model=$scratch/llama3-8b-$type.gguf
  synth "$type" || continue
  step "latency-$type" 150 "$vk" bench latency -m "$model" "${latency_args[@]}" \
    --json "$out/latency-$type.json" --png "$out/latency-batch-$type.png"
  [ "$type" = Q4_0 ] || rm -f "$model"
done

# 3. Offline throughput, Q4_0: the four policy combinations at the same 2 GiB of KV
#    (16k tokens of the 8B), so that reservations, not the GPU, limit the contiguous runs.
q4=$scratch/llama3-8b-Q4_0.gguf
if { wants throughput || wants serve; } && [ ! -f "$q4" ]; then synth Q4_0; fi
if [ -f "$q4" ]; then
  wants throughput && step throughput 200 "$vk" bench throughput -m "$q4" --requests "$requests" --seed 0 \
    --mode both --kv both "${tp_args[@]}" "${load_args[@]}" \
    --json "$out/throughput.json" --png "$out/throughput-kv-memory.png"

  # 4. Serving: vkllm serve on a free port, Poisson arrivals, then everything at once.
  if wants serve; then
  port=18080
  "$vk" serve -m "$q4" --port "$port" "${serve_args[@]}" \
    > "$out/serve-server.log" 2>&1 &
  server=$!
  for _ in $(seq 120); do
    grep -q "listening" "$out/serve-server.log" 2>/dev/null && break
    kill -0 "$server" 2>/dev/null || break
    sleep 0.5
  done
  step serve 240 "$vk" bench serve --url "http://127.0.0.1:$port" --requests "$serve_requests" \
    --rate 4,16,inf --seed 0 "${load_args[@]}" --slo-ttft-ms 500 --slo-tpot-ms 50 \
    --json "$out/serve.json" --png "$out/serve-latency-vs-rate.png"
  kill -INT "$server" 2>/dev/null
  wait "$server" 2>/dev/null
  fi
  rm -f "$q4"
fi

# ---------------------------------------------------------------- summary
echo
echo "==================== vkllm GPU benchmark summary ($(( $(date +%s) - t_start )) s)"
python3 - "$out" <<'PY' 2>&1 | tee -a "$log"
import json, os, sys
out = sys.argv[1]
def load(name):
    try:
        with open(os.path.join(out, name)) as f: return json.load(f)
    except Exception as e:
        return None
k = load("kernels.json")
if k:
    print(f"device: {k['device']['name']}")
    cb = k["copy"]["gbps"]
    print(f"copy_vec4 bandwidth: {cb:.0f} GB/s (read + written)")
    best = {}
    for e in k.get("matmul", []):
        key = (e["type"], e["batch"])
        if key not in best or e["gbps"] > best[key][0]:
            best[key] = (e["gbps"], e["tflops"], e["kernel"])
    print("matmul 14336x4096 (gate/up) best path per type:  batch1 GB/s (%copy) | batch512 TFLOP/s")
    for e_type in ["F16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K"]:
        rows = [e for e in k.get("matmul", []) if e["type"] == e_type and e["shape"] == "gate/up"]
        b1 = max((e for e in rows if e["batch"] == 1), key=lambda e: e["gbps"], default=None)
        b512 = max((e for e in rows if e["batch"] == 512), key=lambda e: e["tflops"], default=None)
        if b1 and b512:
            print(f"  {e_type:5s} {b1['gbps']:7.0f} ({100*b1['frac_copy_bw']:4.0f}%) {b1['kernel']:7s} | "
                  f"{b512['tflops']:6.1f} {b512['kernel']}")
    for e in k.get("attention", []):
        print(f"  attn {e['kernel']:7s} seqs {e['n_seqs']:2d} ctx {e['context']:6d}: "
              f"{e['ms']:.3f} ms, {e['gbps']:.0f} GB/s, {e['tflops']:.1f} TFLOP/s")
bar = {"Q4_0": (10150, 238, 768, 1653, 3033), "Q8_0": (11169, 202, 773, 1706, 3150),
       "Q4_K_M": (10854, 216, 600, 1740, 3295)}
print("\nlatency, tokens/s (llama.cpp Vulkan bar in brackets)")
print(f"{'type':7s} {'pp512':>16s} {'tg128':>14s} {'B=8':>14s} {'B=32':>14s} {'B=64':>14s}")
for t, b in bar.items():
    l = load(f"latency-{t}.json")
    if not l:
        print(f"{t:7s} (no result)"); continue
    bat = {e["n_seqs"]: e["tps_mean"] for e in l.get("batch", [])}
    vals = [l.get("pp", {}).get("tps_mean"), l.get("tg", {}).get("tps_mean"),
            bat.get(8), bat.get(32), bat.get(64)]
    cells = [f"{v:7.0f} [{r:5d}]" if v is not None else f"{'-':>7s} [{r:5d}]" for v, r in zip(vals, b)]
    print(f"{t:7s} " + " ".join(f"{c:>14s}" for c in cells))
tp = load("throughput.json")
if tp:
    print(f"\nthroughput: {tp['requests']} requests, prompt mean {tp['prompt_mean']:.0f}, "
          f"output mean {tp['output_mean']:.0f}, KV {tp['kv_bytes']/2**30:.1f} GiB")
    print(f"{'run':22s} {'req/s':>7s} {'out tok/s':>10s} {'tot tok/s':>10s} {'preempt':>8s} {'avg seqs':>9s}")
    for r in tp["runs"]:
        print(f"{r['mode']+'/'+r['kv']:22s} {r['requests_per_s']:7.2f} {r['output_tokens_per_s']:10.0f} "
              f"{r['total_tokens_per_s']:10.0f} {r['preemptions']:8d} {r['mean_running']:9.1f}")
sv = load("serve.json")
if sv:
    print(f"\nserve: {sv['requests']} requests per rate, SLO TTFT {sv['slo_ttft_ms']:.0f} ms / TPOT {sv['slo_tpot_ms']:.0f} ms")
    print(f"{'rate':>6s} {'ok':>4s} {'req/s':>7s} {'out tok/s':>10s} {'goodput':>8s} {'TTFT p50/p99 ms':>18s} {'TPOT p50 ms':>12s} {'ITL p99 ms':>11s}")
    for r in sv["runs"]:
        f = lambda d, k: d.get(k) if d.get(k) is not None else float("nan")
        print(f"{str(r['rate']):>6s} {r['completed']:4d} {f(r,'requests_per_s'):7.2f} {f(r,'output_tokens_per_s'):10.0f} "
              f"{f(r,'goodput'):8.2f} {f(r['ttft_ms'],'p50'):8.0f}/{f(r['ttft_ms'],'p99'):<8.0f} "
              f"{f(r['tpot_ms'],'p50'):12.1f} {f(r['itl_ms'],'p99'):11.1f}")
PY
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED steps: ${failed[*]} (see $log)"
  exit 1
fi
echo "all steps passed; JSON, PNG and log in $out"
