#!/usr/bin/env bash
# tools/ci/sanitize.sh - the whole CTest suite (integration tests against the real server included)
# under ASan + UBSan with leak detection, then the concurrency tests (integration, among them
# integration_decode, which hammers the decode pool; layers, decode_pool) under TSan. Exits non-zero if a test fails or any instrumented process, including a server started by
# a test, reports anything: reports go to files under build-*/sanitizer-reports/ as well as
# failing the process, so a report from a process whose exit status a test ignores still counts.
# Usage: tools/ci/sanitize.sh [asan|tsan]...     (default: both)
# Environment: CC (default cc: gcc, as the release build), SANITIZE_JOBS (ctest -j, default 1:
#   the server tests use fixed ports and measure timing).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
STAGES=("$@")
[ $# -gt 0 ] || STAGES=(asan tsan)
JOBS=${SANITIZE_JOBS:-1}
export CC=${CC:-cc}

log() { printf '== %s\n' "$*" >&2; }

# Fails if the run left report files, printing them.
check_reports() {
    local dir=$1 files
    mapfile -t files < <(find "$dir" -type f 2>/dev/null | sort)
    if [ ${#files[@]} -gt 0 ]; then
        log "sanitizer reports in $dir:"
        for f in "${files[@]}"; do
            printf -- '---- %s\n' "$f" >&2
            head -80 "$f" >&2
        done
        return 1
    fi
}

configure_build() {
    local dir=$1
    shift
    cmake -S . -B "$dir" -DWERROR=ON "$@" >/dev/null
    cmake --build "$dir" -j"$(nproc)"
}

run_asan() {
    local dir=build-asan reports=$ROOT/build-asan/sanitizer-reports
    log "ASan + UBSan: configure and build $dir ($CC, Debug)"
    configure_build "$dir" -DENABLE_ASAN=ON -DENABLE_UBSAN=ON -DCMAKE_BUILD_TYPE=Debug
    rm -rf "$reports"
    mkdir -p "$reports"
    local lsan=""
    [ -f tests/lsan.supp ] && lsan=":suppressions=$ROOT/tests/lsan.supp:print_suppressions=0"
    local rc=0
    (
        cd "$dir"
        export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:log_path=$reports/asan"
        export LSAN_OPTIONS="${lsan#:}"
        export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$reports/ubsan"
        ctest --output-on-failure --timeout 1200 -j"$JOBS"
    ) || rc=1
    check_reports "$reports" || rc=1
    return $rc
}

run_tsan() {
    local dir=build-tsan reports=$ROOT/build-tsan/sanitizer-reports
    log "TSan: configure and build $dir ($CC, Debug)"
    configure_build "$dir" -DENABLE_TSAN=ON -DCMAKE_BUILD_TYPE=Debug
    rm -rf "$reports"
    mkdir -p "$reports"
    local rc=0
    (
        cd "$dir"
        export TSAN_OPTIONS="suppressions=$ROOT/tests/tsan.supp:halt_on_error=1:second_deadlock_stack=1:log_path=$reports/tsan"
        ctest --output-on-failure --timeout 1200 -j"$JOBS" -R 'integration|layers|decode_pool'
    ) || rc=1
    check_reports "$reports" || rc=1
    return $rc
}

tools/deps.sh test
failed=()
for s in "${STAGES[@]}"; do
    case $s in
    asan) run_asan || failed+=(asan) ;;
    tsan) run_tsan || failed+=(tsan) ;;
    *) log "unknown stage $s (asan or tsan)"; exit 2 ;;
    esac
done
if [ ${#failed[@]} -gt 0 ]; then
    log "FAIL: ${failed[*]}"
    exit 1
fi
log "sanitize: ${STAGES[*]} pass"
