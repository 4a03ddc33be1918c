#!/usr/bin/env bash
# One-step set-up for a fresh Debian 12 / Ubuntu machine.
#   tools/setup.sh run [PROMPT]   install what is missing, build, fetch the default
#                                 model and generate text from PROMPT
#   tools/setup.sh test           install what is missing, build, run the whole test
#                                 suite (normal build, then AddressSanitizer+UBSan build,
#                                 then a bounded fuzzing run of the GGUF reader)
#   tools/setup.sh build          install and build only
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-run}
packages=(build-essential cmake ninja-build pkg-config git python3 python3-pip clang
  libclang-rt-dev libvulkan-dev libvulkan-volk-dev glslang-tools mesa-vulkan-drivers
  vulkan-validationlayers vulkan-tools libcriterion-dev libstb-dev libmicrohttpd-dev
  libjansson-dev libpcre2-dev chromium)

install_missing() {
  local missing=()
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

build() { # build DIR [cmake args...]
  local dir=$1; shift
  cmake -S . -B "$dir" -G Ninja "$@" >/dev/null
  cmake --build "$dir"
}

install_missing
case "$mode" in
  build)
    build build -DCMAKE_BUILD_TYPE=RelWithDebInfo ;;
  run)
    build build -DCMAKE_BUILD_TYPE=RelWithDebInfo
    tools/fetch_model.sh
    build/vkllm run -p "${2:-The capital of France is}" -n 32 ;;
  test)
    tools/fetch_model.sh
    build build -DCMAKE_BUILD_TYPE=RelWithDebInfo
    ctest --test-dir build --output-on-failure -j2
    tools/run_integration.sh build
    build build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVKLLM_SANITIZE=ON
    ctest --test-dir build-asan --output-on-failure -j2
    if [ -f tests/fuzz/CMakeLists.txt ]; then
      build build-fuzz -DCMAKE_C_COMPILER=clang -DVKLLM_FUZZ=ON -DVKLLM_TESTS=OFF
      tools/run_fuzz.sh build-fuzz 60
    fi ;;
  *)
    echo "usage: tools/setup.sh run [PROMPT] | test | build" >&2; exit 2 ;;
esac
