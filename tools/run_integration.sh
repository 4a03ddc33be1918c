#!/bin/sh
# run_integration.sh: the HTTP server's integration tests (tests/integration/) against a
# real `vkllm serve` on loopback with a small synthetic model.
#
#   tools/run_integration.sh [BUILD_DIR]      (default: build; needs BUILD_DIR/vkllm)
#
# Installs the `openai` Python package with pip when missing, and Debian's chromium
# with apt-get when missing and running as root (without chromium it fails, unless
# VKLLM_SKIP_BROWSER=1 skips the chat-page test on purpose). Synthesizes the model, starts the shared server (with an API key) on a
# free port, runs the openai-client tests, the chat-page test, the load and malformed-input
# tests (test_server_load.py) and the curl test, then
# the tests that start their own servers (busy limit, shutdown); finally stops the
# shared server with SIGTERM and requires exit status 0. Exit status: 0 when all pass.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
case "$build" in /*) ;; *) build="$root/$build" ;; esac
bin="$build/vkllm"
[ -x "$bin" ] || { echo "run_integration.sh: $bin not found (build the vkllm_cli target)"; exit 2; }

if ! python3 -c 'import openai' 2>/dev/null; then
    # Debian's system Python refuses plain pip installs (PEP 668); a venv/pyenv does not.
    python3 -m pip install --quiet openai 2>/dev/null ||
        python3 -m pip install --quiet --break-system-packages openai
fi
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 || true
fi
if ! command -v chromium >/dev/null 2>&1 && [ "${VKLLM_SKIP_BROWSER:-0}" != 1 ]; then
    echo "run_integration.sh: chromium is missing (apt-get install chromium, or set"
    echo "VKLLM_SKIP_BROWSER=1 to skip the chat-page test knowingly)"
    exit 2
fi

work=$(mktemp -d)
server_pid=""
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

"$bin" synth --preset tiny-llama --ctx 4096 --seed 1 -o "$work/tiny.gguf" >/dev/null
export VKLLM_BIN="$bin" VKLLM_TEST_MODEL="$work/tiny.gguf" VKLLM_TEST_KEY="integration-key"
"$bin" serve -m "$work/tiny.gguf" --port 0 --served-model-name tiny --chat-template llama3 \
    --kv-blocks 512 --api-key "$VKLLM_TEST_KEY" > "$work/server.out" 2> "$work/server.err" &
server_pid=$!
i=0
until grep -q 'listening on' "$work/server.out" 2>/dev/null; do
    i=$((i + 1))
    if [ $i -gt 1200 ] || ! kill -0 "$server_pid" 2>/dev/null; then
        echo "run_integration.sh: the server did not start:"; cat "$work/server.err"; exit 1
    fi
    sleep 0.1
done
VKLLM_TEST_URL=$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$work/server.out" | head -n 1)
export VKLLM_TEST_URL
echo "run_integration.sh: server at $VKLLM_TEST_URL"

status=0
cd "$root/tests/integration"
python3 -m unittest -v test_openai_api test_chat_page test_server_load || status=1
sh ./test_curl.sh || status=1

kill -TERM "$server_pid"
if wait "$server_pid"; then
    echo "ok   shared server exited 0 on SIGTERM"
else
    echo "FAIL shared server exit status $? on SIGTERM"; cat "$work/server.err"; status=1
fi
server_pid=""

python3 -m unittest -v test_server_limits || status=1
[ $status -eq 0 ] && echo "run_integration.sh: all passed" || echo "run_integration.sh: FAILED"
exit $status
