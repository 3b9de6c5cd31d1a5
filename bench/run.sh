#!/usr/bin/env bash
# run.sh - convserve's benchmark in one command: installs what is missing, builds Release, then
# measures everything side by side in one run (bench/run.py), prints the report, writes
# bench/results.md and draws the charts in bench/charts/ that the README shows.
#
# Usage: bench/run.sh [--quick] [run.py's options: --only SECTIONS, --configs NAMES, ...]
#   A whole run takes 15-20 minutes on 2 CPUs; --quick (2 s loads, one engine run each) about 5,
#   for trying changes, not for figures to quote. bench/run.py --help lists the options.
# What it measures, and how it guards against other programs on the machine: bench/run.py.
# Generated files (model folders with weights, request bodies, photos, the "before" engine,
# logs, results.json) go to $BENCH_BUILD_DIR/bench (default build/bench).
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
    -h|--help) sed -n '2,/^set -e/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;;
esac

BUILD=${BENCH_BUILD_DIR:-build}
log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# The build's packages (tools/deps.sh), then the benchmark's own: PyTorch and torchvision for the
# comparisons, wrk for the loads, FastAPI and uvicorn for the peer, matplotlib for the charts, PIL
# for the photos. Only the missing ones are installed.
tools/deps.sh serve
want=(python3 python3-numpy python3-torch python3-torchvision python3-pil python3-matplotlib wrk
      python3-fastapi python3-uvicorn python3-uvloop python3-httptools)
missing=()
for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing: ${missing[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -q >/dev/null
    $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

log "building Release in $BUILD"
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j"$(nproc)" --target convserve convserve-engine bench_fma bench_decode \
    >/dev/null

# Debian's python3-torch is importable only by the system interpreter.
BENCH_BUILD_DIR=$BUILD exec /usr/bin/python3 bench/run.py "$@"
