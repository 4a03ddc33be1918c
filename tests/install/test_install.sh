#!/bin/sh
# test_install.sh: vkllm as a user installs and embeds it. Installs the current build into
# a temporary prefix (`cmake --install BUILD --prefix P`), checks the installed tree
# (library with SONAME links, headers, the `vkllm` command, vkllm.pc, the CMake package),
# checks libvkllm.so exports exactly the functions the public headers declare, then builds
# tools/examples/ against P as a separate project three ways: CMake with
# find_package(vkllm), CMake through pkg-config, and tools/examples/Makefile (plain make +
# pkg-config). Each built vkllm_embed must load libvkllm.so from P and print, for a small
# synthetic model, exactly the greedy text of the installed `vkllm run --temperature 0`
# (the oracle: the same engine through the CLI, which links the static modules).
#
#   tests/install/test_install.sh SOURCE_DIR BUILD_DIR [GENERATOR] [C_COMPILER] [EXTRA_CFLAGS]
#
# Registered with CTest by tests/CMakeLists.txt (EXTRA_CFLAGS: the sanitizer flags of a
# VKLLM_SANITIZE build, which the example needs to load an instrumented library).
set -eu
src=$(cd "$1" && pwd)
build=$(cd "$2" && pwd)
generator=${3:-Ninja}
cc=${4:-cc}
extra_cflags=${5:-}

work=$(mktemp -d "${TMPDIR:-/tmp}/vkllm_test_install.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
prefix="$work/prefix"
failures=0
ok() { echo "ok   $1"; }
fail() {
    echo "FAIL $1"
    failures=$((failures + 1))
}
check() { # check NAME COMMAND...: passes when COMMAND succeeds
    name=$1
    shift
    if "$@"; then ok "$name"; else fail "$name"; fi
}
die() {
    echo "FAIL $1"
    [ $# -gt 1 ] && cat "$2"
    exit 1
}

# ------------------------------------------------------------------ the installed tree
cmake --install "$build" --prefix "$prefix" > "$work/install.log" 2>&1 ||
    die "cmake --install failed" "$work/install.log"
lib="$prefix/lib"
check "lib/libvkllm.so -> libvkllm.so.0" test "$(readlink "$lib/libvkllm.so")" = libvkllm.so.0
check "lib/libvkllm.so.0 -> libvkllm.so.0.1.0" \
    test "$(readlink "$lib/libvkllm.so.0")" = libvkllm.so.0.1.0
check "libvkllm.so.0.1.0 is a file" \
    test -f "$lib/libvkllm.so.0.1.0" -a ! -L "$lib/libvkllm.so.0.1.0"
soname=$(readelf -d "$lib/libvkllm.so.0.1.0" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
check "SONAME is libvkllm.so.0 (got '$soname')" test "$soname" = libvkllm.so.0
for f in include/vkllm.h include/vkllm_status.h lib/pkgconfig/vkllm.pc \
    lib/cmake/vkllm/vkllmConfig.cmake lib/cmake/vkllm/vkllmConfigVersion.cmake \
    lib/cmake/vkllm/vkllmTargets.cmake; do
    check "installs $f" test -f "$prefix/$f"
done
check "installs bin/vkllm (executable)" test -x "$prefix/bin/vkllm"
for h in vkllm.h vkllm_status.h; do
    check "include/$h is the source header" cmp -s "$src/include/$h" "$prefix/include/$h"
done

# ------------------------------------------------------------------ the exported symbols
# Declared: every `VKLLM_API ... vkllm_name(` in the public headers. Exported: the defined
# dynamic symbols. They must be the same set: nothing missing, no engine internals.
sed -n 's/^VKLLM_API [^(]*[ *]\([A-Za-z_0-9]*\)(.*/\1/p' "$src/include/vkllm.h" \
    "$src/include/vkllm_status.h" | sort > "$work/declared"
nm -D --defined-only "$lib/libvkllm.so.0.1.0" | awk '{print $NF}' | sed 's/@.*//' | sort \
    > "$work/exported"
if [ "$(wc -l < "$work/declared")" -ge 15 ] && cmp -s "$work/declared" "$work/exported"; then
    ok "libvkllm.so exports exactly the $(wc -l < "$work/declared") API functions"
else
    fail "exported symbols differ from the header's API (< declared, > exported):"
    diff "$work/declared" "$work/exported" | head -n 20 || true
fi
if ldd -r "$lib/libvkllm.so.0.1.0" 2>&1 | grep -q 'undefined symbol'; then
    fail "libvkllm.so has undefined symbols:"
    ldd -r "$lib/libvkllm.so.0.1.0" 2>&1 | grep 'undefined symbol' | head -n 5
else
    ok "libvkllm.so resolves all its symbols"
fi
# The headers alone compile cleanly for C and C++ users.
printf '#include <vkllm.h>\nint main(void) { return vkllm_version() == 0; }\n' > "$work/h.c"
check "headers compile with -std=c99 -Wall -Wextra -pedantic -Werror" \
    "$cc" -std=c99 -Wall -Wextra -pedantic -Werror -fsyntax-only -I"$prefix/include" "$work/h.c"
if command -v c++ > /dev/null 2>&1; then
    check "headers compile as C++" c++ -Wall -Wextra -Werror -fsyntax-only -x c++ \
        -I"$prefix/include" "$work/h.c"
fi

# ------------------------------------------------------------------ pkg-config
export PKG_CONFIG_PATH="$lib/pkgconfig"
version=$(pkg-config --modversion vkllm)
check "pkg-config --modversion vkllm = 0.1.0 (got '$version')" test "$version" = 0.1.0
# The .pc file locates the prefix from its own place: its directories are P's.
pc_inc=$(pkg-config --variable=includedir vkllm)
pc_lib=$(pkg-config --variable=libdir vkllm)
check "pkg-config includedir is P/include ($pc_inc)" \
    test "$(cd "$pc_inc" && pwd -P)" = "$(cd "$prefix/include" && pwd -P)"
check "pkg-config libdir is P/lib ($pc_lib)" \
    test "$(cd "$pc_lib" && pwd -P)" = "$(cd "$lib" && pwd -P)"
libs=$(pkg-config --libs vkllm)
case "$libs" in
*-lvkllm*) ok "pkg-config --libs names -lvkllm" ;;
*) fail "pkg-config --libs: '$libs'" ;;
esac

# ------------------------------------------------------------------ the example, three ways
examples="$src/tools/examples"
(cmake -S "$examples" -B "$work/ex-find" -G "$generator" -DCMAKE_C_COMPILER="$cc" \
    -DCMAKE_C_FLAGS="$extra_cflags" -DCMAKE_PREFIX_PATH="$prefix" &&
    cmake --build "$work/ex-find") > "$work/ex-find.log" 2>&1 ||
    die "examples with find_package(vkllm) did not build" "$work/ex-find.log"
ok "examples build with find_package(vkllm)"
(env -u CMAKE_PREFIX_PATH cmake -S "$examples" -B "$work/ex-pc" -G "$generator" \
    -DCMAKE_C_COMPILER="$cc" -DCMAKE_C_FLAGS="$extra_cflags" -DVKLLM_EXAMPLES_PKGCONFIG=ON &&
    cmake --build "$work/ex-pc") > "$work/ex-pc.log" 2>&1 ||
    die "examples through pkg-config (CMake) did not build" "$work/ex-pc.log"
ok "examples build through pkg-config (CMake)"
mkdir "$work/ex-make"
(cd "$work/ex-make" && make -f "$examples/Makefile" CC="$cc" \
    CFLAGS="-O2 -Wall -Wextra -Werror -std=c17 $extra_cflags") > "$work/ex-make.log" 2>&1 ||
    die "examples through pkg-config (Makefile) did not build" "$work/ex-make.log"
ok "examples build through pkg-config (Makefile)"

# A small model and the oracle text from the installed command.
"$prefix/bin/vkllm" synth --preset tiny-llama --ctx 256 --seed 5 \
    --tokenizer "$src/tests/fixtures/tokenizer/llama3-bpe-tiny.gguf" -o "$work/tiny.gguf" \
    > "$work/synth.log" 2>&1 || die "vkllm synth failed" "$work/synth.log"
prompt="Installed engines"
"$prefix/bin/vkllm" run -m "$work/tiny.gguf" -p "$prompt" -n 12 --temperature 0 \
    > "$work/want" 2> "$work/want.err" || die "vkllm run failed" "$work/want.err"
want_tokens=$(sed -n 's/.*generated: \([0-9]*\) tokens.*/\1/p' "$work/want.err")
if [ -z "$want_tokens" ] || [ "$want_tokens" -eq 0 ]; then
    die "vkllm run generated no tokens" "$work/want.err"
fi
# `vkllm run` prints the text and a newline unless the text is empty or already ends
# with one; the example always adds one. So the example prints `want`, or `want` and a
# newline when `want` is empty or ends with a newline.
cp "$work/want" "$work/want_nl"
printf '\n' >> "$work/want_nl"
want_may_add=no
if [ ! -s "$work/want" ] || [ "$(tail -c 1 "$work/want" | od -An -c | tr -d ' ')" = '\n' ]; then
    want_may_add=yes
fi

for variant in ex-find ex-pc ex-make; do
    exe="$work/$variant/vkllm_embed"
    resolved=$(ldd "$exe" | sed -n 's/.*libvkllm\.so\.0 => \([^ ]*\) .*/\1/p')
    check "$variant: loads P's libvkllm.so.0 ($resolved)" \
        test "$(cd "$(dirname "$resolved")" && pwd -P)" = "$(cd "$lib" && pwd -P)"
    if ! "$exe" "$work/tiny.gguf" "$prompt" 12 > "$work/got" 2> "$work/got.err"; then
        fail "$variant: vkllm_embed failed"
        cat "$work/got.err"
        continue
    fi
    # Same bytes as `vkllm run`, allowing only the one newline the example always adds.
    if cmp -s "$work/got" "$work/want" ||
        { [ $want_may_add = yes ] && cmp -s "$work/got" "$work/want_nl"; }; then
        ok "$variant: prints the greedy text of vkllm run ($(wc -c < "$work/got") bytes)"
    else
        fail "$variant: output differs from vkllm run"
        echo "  want: $(od -c "$work/want" | head -n 4)"
        echo "  got:  $(od -c "$work/got" | head -n 4)"
    fi
    got_tokens=$(sed -n 's/.*generated \([0-9]*\) tokens.*/\1/p' "$work/got.err")
    check "$variant: generated $want_tokens tokens like vkllm run (got '$got_tokens')" \
        test "$got_tokens" = "$want_tokens"
done

# A wrong version request fails find_package (the version file is consulted).
mkdir "$work/ver"
printf '%s\n' 'cmake_minimum_required(VERSION 3.20)' 'project(v LANGUAGES C)' \
    'find_package(vkllm 1.0 REQUIRED)' > "$work/ver/CMakeLists.txt"
if cmake -S "$work/ver" -B "$work/ver/b" -G "$generator" -DCMAKE_PREFIX_PATH="$prefix" \
    > "$work/ver.log" 2>&1; then
    fail "find_package(vkllm 1.0) accepted version 0.1.0"
else
    check "find_package(vkllm 1.0) refuses 0.1.0" grep -q 'version' "$work/ver.log"
fi

if [ "$failures" -ne 0 ]; then
    echo "test_install.sh: $failures failed"
    exit 1
fi
echo "test_install.sh: all passed"
