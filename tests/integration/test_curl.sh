#!/bin/sh
# test_curl.sh: `vkllm serve` through plain curl, as users script it: server-sent events
# end with "data: [DONE]", status codes for bad key / malformed JSON / oversized body
# (curl sends "Expect: 100-continue" for large bodies), CORS preflight, metrics text.
# Needs VKLLM_TEST_URL and VKLLM_TEST_KEY (tools/run_integration.sh sets them).
set -eu
url=${VKLLM_TEST_URL:?set VKLLM_TEST_URL}
key=${VKLLM_TEST_KEY:-}
auth="Authorization: Bearer $key"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0
check() { # check NAME EXPECTED ACTUAL
    if [ "$2" = "$3" ]; then
        echo "ok   $1"
    else
        echo "FAIL $1: expected '$2', got '$3'"
        failures=$((failures + 1))
    fi
}

# streamed chat: SSE headers, several chunks, [DONE] last
curl -sN -D "$tmp/h" -H "$auth" -H 'Content-Type: application/json' "$url/v1/chat/completions" \
    -d '{"model":"tiny","messages":[{"role":"user","content":"hi"}],"max_tokens":6,"stream":true}' \
    > "$tmp/sse"
check "stream content type" "text/event-stream" \
    "$(grep -i '^content-type:' "$tmp/h" | tr -d '\r' | sed 's/^[^:]*: *//')"
check "stream ends with [DONE]" "data: [DONE]" "$(grep -v '^$' "$tmp/sse" | tail -n 1)"
check "stream has role + 6 token chunks + [DONE]" "8" "$(grep -c '^data: ' "$tmp/sse")"
check "stream finish reason" "1" "$(grep -c '"finish_reason":"length"' "$tmp/sse")"

# whole completion
code=$(curl -s -o "$tmp/c" -w '%{http_code}' -H "$auth" "$url/v1/completions" \
    -d '{"model":"tiny","prompt":"abc","max_tokens":3,"temperature":0}')
check "completion status" "200" "$code"
check "completion usage" "1" "$(grep -c '"completion_tokens":3' "$tmp/c")"

# errors
if [ -n "$key" ]; then
    check "no key -> 401" "401" "$(curl -s -o /dev/null -w '%{http_code}' "$url/v1/models")"
fi
code=$(curl -s -o "$tmp/e" -w '%{http_code}' -H "$auth" "$url/v1/completions" -d '{"prompt": ')
check "malformed JSON -> 400" "400" "$code"
check "error type" "1" "$(grep -c '"type":"invalid_request_error"' "$tmp/e")"
head -c 9000000 /dev/zero | tr '\0' 'x' > "$tmp/big"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "$auth" -H 'Content-Type: application/json' \
    --data-binary @"$tmp/big" "$url/v1/completions")
check "9 MB body -> 413" "413" "$code"
code=$(curl -s -o /dev/null -w '%{http_code}' -X OPTIONS "$url/v1/chat/completions")
check "CORS preflight -> 204" "204" "$code"

# metrics and health
curl -s "$url/metrics" > "$tmp/m"
check "metrics gauge" "1" "$(grep -c '^vkllm:num_requests_running{' "$tmp/m")"
check "metrics ttft histogram" "1" \
    "$(grep -c '^vkllm:time_to_first_token_seconds_bucket{.*le="+Inf"}' "$tmp/m")"
check "health" "200" "$(curl -s -o /dev/null -w '%{http_code}' "$url/health")"

[ "$failures" -eq 0 ] && echo "test_curl.sh: all passed" || echo "test_curl.sh: $failures failed"
[ "$failures" -eq 0 ]
