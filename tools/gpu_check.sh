#!/usr/bin/env bash
# Runs on the GPU test machine (see ../shared/device/README.md): checks a carried build
# there. Usage: tools/gpu_check.sh BUILD_DIR [CTEST_REGEX]
#   - joins models/chunks/part* into models/gemma-3-270m-q4_k_m.gguf when present
#     (the model travels in pieces: one call may carry 64 MiB) and checks its SHA-256;
#   - `vkllm devices`, then `vkllm devices --warm` twice (the second must hit the
#     pipeline cache);
#   - the test suite through ctest, with the validation layer when it is installed;
#   - writes full logs under $OUT (or ./gpu-out) and prints a short summary last.
set -uo pipefail
build=${1:?usage: tools/gpu_check.sh BUILD_DIR [CTEST_REGEX]}
regex=${2:-}
out=${OUT:-gpu-out}
mkdir -p "$out"
model=models/gemma-3-270m-q4_k_m.gguf
sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
if [ ! -f "$model" ] && ls models/chunks/part* >/dev/null 2>&1; then
  cat models/chunks/part* > "$model"
fi
model_state="absent"
if [ -f "$model" ]; then
  if echo "$sha  $model" | sha256sum --check --status; then model_state="ok"; else model_state="BAD CHECKSUM"; rm -f "$model"; fi
fi
layer_dir=/opt/gpu-deps/usr/share/vulkan/explicit_layer.d
[ -d "$layer_dir" ] && export VK_ADD_LAYER_PATH=$layer_dir
export VKLLM_PIPELINE_CACHE_DIR=$PWD/$build/pipeline-cache
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$out/gpu.txt" 2>&1
"$build/vkllm" devices > "$out/devices.txt" 2>&1
"$build/vkllm" devices --warm > "$out/warm1.txt" 2>&1
"$build/vkllm" devices --warm > "$out/warm2.txt" 2>&1
args=(--test-dir "$build" --output-on-failure --timeout 900)
[ -n "$regex" ] && args+=(-R "$regex")
ctest "${args[@]}" > "$out/ctest.log" 2>&1
ctest_rc=$?
echo "==== device"; cat "$out/gpu.txt"; grep -iE "^ *\*|name|chosen" "$out/devices.txt" | head -5
echo "==== pipeline warm-up (first, second)"; tail -2 "$out/warm1.txt"; tail -2 "$out/warm2.txt"
echo "==== model: $model_state"
echo "==== ctest (rc $ctest_rc)"; grep -E "tests passed|Failed|\*\*\*|Passed|Not Run" "$out/ctest.log" | tail -40
