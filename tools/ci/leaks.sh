#!/usr/bin/env bash
# tools/ci/leaks.sh - the leak test: the real server under valgrind memcheck (definite and
# indirect leaks are errors, --error-exitcode=99, suppressions in tests/valgrind.supp) gets about
# 3000 mixed requests - good and bad, JSON (flat, nested, binary), images (PNG, JPEG, PGM, BMP,
# multipart batches, garbage and bombs), shapes, metadata, metrics, 404/405/413/415, queue-full
# 503s, clients that disconnect mid-request, idle connections timed out - then SIGTERM with
# requests in flight. It must exit 0 with "ERROR SUMMARY: 0 errors" and nothing definitely or
# indirectly lost. The driver is tests/soak/leaks.py (its docstring has the details); valgrind
# runs oneDNN through its AVX2 kernels (it hides AVX-512), about 1 minute in all here.
# Usage: tools/ci/leaks.sh [extra leaks.py arguments, e.g. --keep]
# Environment:
#   LEAKS_MODE      valgrind (default) or lsan: an ASan build (build-asan-leaks/), LeakSanitizer
#                   at exit; faster, but sees only leaks, not valgrind's uninitialised reads
#   LEAKS_REQUESTS  about this many requests (default 3000)
#   LEAKS_SECONDS   time budget of the mixed requests (default 150; what is left is skipped, and
#                   fewer than 2000 requests answered fails)
#   LEAKS_BUILD     0 to use the build folder as it is (default 1: configure and build)
set -euo pipefail
cd "$(dirname "$0")/../.."
MODE=${LEAKS_MODE:-valgrind}
REQUESTS=${LEAKS_REQUESTS:-3000}
SECS=${LEAKS_SECONDS:-150}
export CC=${CC:-cc}

log() { printf '== %s\n' "$*" >&2; }

case $MODE in
valgrind)
    BUILD=build-leaks
    CMAKE_ARGS=(-DCMAKE_BUILD_TYPE=RelWithDebInfo)   # -O2 as released, with line numbers
    ;;
lsan)
    BUILD=build-asan-leaks
    CMAKE_ARGS=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DENABLE_ASAN=ON)
    ;;
*) log "LEAKS_MODE is valgrind or lsan, not '$MODE'"; exit 2 ;;
esac

tools/deps.sh test   # valgrind among them
if [ "${LEAKS_BUILD:-1}" != 0 ]; then
    cmake -S . -B "$BUILD" -DBUILD_TESTING=OFF "${CMAKE_ARGS[@]}" >/dev/null
    cmake --build "$BUILD" -j"$(nproc)" --target convserve
fi

GROUP_WHAT="leak test"
# shellcheck source=tools/ci/group.sh
. tools/ci/group.sh

log "leaks ($MODE): about $REQUESTS requests against $BUILD/convserve"
set -m
python3 tests/soak/leaks.py --mode "$MODE" --binary "$BUILD/convserve" --models config/models \
    --suppressions tests/valgrind.supp --requests "$REQUESTS" --seconds "$SECS" "$@" &
PGID=$!
set +m
rc=0
wait "$PGID" || rc=$?
if [ "$rc" -ne 0 ]; then
    log "leaks: FAIL (exit $rc)"
    exit "$rc"
fi
log "leaks: pass"
