#!/usr/bin/env bash
# tools/ci/soak.sh - the load and slow-client soak test against the real server, on loopback only:
# wrk with 64 connections of good batch-1 JSON requests to digits for SOAK_SECONDS, together with
# 300 slow (slowloris) connections, clients disconnecting mid-request and a probe every second;
# then RSS, threads and descriptors compared with the start, a second server showing the 503 of a
# request that waited too long in the queue, and SIGTERM -> exit 0. The driver is
# tests/soak/soak.py (its docstring lists every criterion); it prints a summary table.
# Exits non-zero if any criterion fails.
# Usage: tools/ci/soak.sh [extra soak.py arguments, e.g. --keep]
# Environment:
#   SOAK_SECONDS  seconds of load (default 120)
#   SOAK_BUILD    0 to use build/convserve as it is (default 1: configure and build Release)
#   SOAK_BUILD_DIR  build folder (default build)
# Everything it starts (the driver, the servers, wrk, the slow clients) runs in one process group,
# which the EXIT/INT/TERM trap kills.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${SOAK_BUILD_DIR:-build}
export SOAK_SECONDS=${SOAK_SECONDS:-120}

log() { printf '== %s\n' "$*" >&2; }

# Dependencies: the build's, plus wrk (only what is missing).
tools/deps.sh test   # wrk and valgrind among them
if [ "${SOAK_BUILD:-1}" != 0 ]; then
    cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$BUILD" -j"$(nproc)" --target convserve
fi

GROUP_WHAT="soak test"
# shellcheck source=tools/ci/group.sh
. tools/ci/group.sh

log "soak: ${SOAK_SECONDS}s of load against $BUILD/convserve"
set -m
python3 tests/soak/soak.py --binary "$BUILD/convserve" --models config/models \
    --seconds "$SOAK_SECONDS" "$@" &
PGID=$!
set +m
rc=0
wait "$PGID" || rc=$?
if [ "$rc" -ne 0 ]; then
    log "soak: FAIL (exit $rc)"
    exit "$rc"
fi
log "soak: pass"
