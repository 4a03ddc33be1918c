#!/usr/bin/env bash
# run_fuzz.sh BUILD_DIR SECONDS: runs every libFuzzer target for a bounded time.
#
# BUILD_DIR is configured with -DVKLLM_FUZZ=ON and clang, e.g.
#   cmake -S . -B build-fuzz -G Ninja -DCMAKE_C_COMPILER=clang -DVKLLM_FUZZ=ON -DVKLLM_TESTS=OFF
#   ninja -C build-fuzz fuzz_gguf && tools/run_fuzz.sh build-fuzz 60
# The seed corpus is tests/fixtures/gguf/ (read only: new inputs go to
# BUILD_DIR/fuzz-corpus/). Exits non-zero on any crash, leak, timeout or sanitizer
# report; the reproducer is left in BUILD_DIR/fuzz-artifacts/ - fix the bug, then copy
# the file into tests/fixtures/gguf/ so test_gguf_corrupt replays it forever.
set -euo pipefail

if [[ $# -ne 2 ]]; then
    echo "usage: $0 BUILD_DIR SECONDS" >&2
    exit 2
fi
build=$(cd "$1" && pwd)
seconds=$2
root=$(cd "$(dirname "$0")/.." && pwd)
fuzzer="$build/tests/fuzz/fuzz_gguf"
if [[ ! -x "$fuzzer" ]]; then
    echo "$fuzzer not built (configure with -DVKLLM_FUZZ=ON, then ninja fuzz_gguf)" >&2
    exit 2
fi

corpus="$build/fuzz-corpus/gguf"
artifacts="$build/fuzz-artifacts/"
mkdir -p "$corpus" "$artifacts"
parallel=()
if [[ ${FUZZ_JOBS:-1} -gt 1 ]]; then
    parallel=(-jobs="$FUZZ_JOBS" -workers="$FUZZ_JOBS")
fi

echo "fuzz_gguf: ${seconds}s, seeds from tests/fixtures/gguf, corpus $corpus"
set +e
"$fuzzer" \
    -max_total_time="$seconds" \
    -max_len=65536 \
    -timeout=10 \
    -rss_limit_mb=2048 \
    -print_final_stats=1 \
    -dict="$root/tests/fuzz/gguf.dict" \
    -artifact_prefix="$artifacts" \
    "${parallel[@]}" \
    "$corpus" "$root/tests/fixtures/gguf"
status=$?
set -e
if [[ $status -ne 0 ]]; then
    echo "fuzz_gguf FAILED (exit $status); reproducers:" >&2
    ls -l "$artifacts" >&2 || true
    exit 1
fi
echo "fuzz_gguf: no crashes in ${seconds}s"
