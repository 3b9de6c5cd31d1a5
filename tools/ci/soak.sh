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
tools/deps.sh serve
if ! command -v wrk >/dev/null; then
    log "installing wrk"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends wrk \
        >/dev/null || { $sudo apt-get update -q >/dev/null &&
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends wrk \
        >/dev/null; }
fi
if [ "${SOAK_BUILD:-1}" != 0 ]; then
    cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build "$BUILD" -j"$(nproc)" --target convserve
fi

# The driver in a process group of its own (job control: set -m): the trap kills the whole group,
# so nothing it started (servers, wrk, slow clients) outlives this script, however it ends.
PGID=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [ -n "$PGID" ] && kill -0 -- "-$PGID" 2>/dev/null; then
        log "stopping what the soak test left running (process group $PGID)"
        kill -TERM -- "-$PGID" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 -- "-$PGID" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL -- "-$PGID" 2>/dev/null || true
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

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
