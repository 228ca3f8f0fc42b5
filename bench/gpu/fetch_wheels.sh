#!/usr/bin/env bash
# Run HERE (a machine with registry access), in the checkout the device tool sends: downloads the wheels
# bench/gpu/run.sh installs on the GPU machine (Python 3.12, x86-64 Linux, no network) into bench/gpu/wheels/,
# checks they fit the 64 MiB that travels with a device run, and prints the device command.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WHEELS=$HERE/wheels
PYTHON=${PYTHON:-python3}
LIMIT_MIB=64

rm -rf "$WHEELS" && mkdir -p "$WHEELS"
# Exact tags of the GPU machine's interpreter (CPython 3.12.3, glibc manylinux x86-64); pip matches
# manylinux_2_N exactly, so name the N the pinned wheels use.
"$PYTHON" -m pip download -q --disable-pip-version-check --only-binary=:all: --no-deps \
    --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any \
    -d "$WHEELS" -r "$HERE/requirements.txt"

expected=$(grep -cE '^[A-Za-z0-9]' "$HERE/requirements.txt")
got=$(ls "$WHEELS"/*.whl | wc -l)
if [ "$got" -ne "$expected" ]; then
    echo "error: $got wheels for $expected pinned requirements" >&2
    exit 1
fi
# pixelmill itself is not a wheel: the working tree travels and run.sh puts it first on PYTHONPATH, so the GPU
# runs exactly the code checked out here.

wheels_kib=$(du -sk "$WHEELS" | cut -f1)
# What travels: tracked + untracked-not-ignored files (+ shared/ if present) + the carried wheels.
tree_kib=$(cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | xargs -0 du -ck 2>/dev/null \
           | tail -1 | cut -f1)
total_kib=$((wheels_kib + tree_kib))
echo "wheels: $got files, $((wheels_kib / 1024)) MiB; working tree $((tree_kib / 1024)) MiB;" \
     "together $((total_kib / 1024)) of $LIMIT_MIB MiB"
if [ "$total_kib" -gt $((LIMIT_MIB * 1024)) ]; then
    echo "error: over the $LIMIT_MIB MiB a device run carries; drop optional wheels (torchao: the int8/fp8" \
         "variants then report 'missing package') or transformers/huggingface-hub (the image has 5.17/1.33)" >&2
    exit 1
fi
cat <<MSG

Device run (tool \`run\`), from this checkout:
  command:   PYTHONUNBUFFERED=1 bash bench/gpu/run.sh \$OUT
  carry:     ["bench/gpu/wheels"]
  timeout_s: 600
Results come back in \$OUT: results.md, results.json, log.txt, pipeline-*.md/json.
MSG
