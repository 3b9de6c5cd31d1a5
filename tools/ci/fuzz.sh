#!/usr/bin/env bash
# tools/ci/fuzz.sh - builds the libFuzzer targets (clang, -DBUILD_FUZZERS=ON) in build-fuzz/, runs
# each over its committed seeds and regression inputs, then fuzzes each for a bounded time. Exits
# non-zero on any crash, leak, sanitizer report or input slower than FUZZ_TIMEOUT seconds (a slow
# input is a denial of service, not noise); the input is kept under
# build-fuzz/artifacts/<target>/ and the tail of the log is printed.
# Usage: tools/ci/fuzz.sh [target...]        (default: all; target = safetensors, image, ...)
# Environment:
#   FUZZ_SECONDS  seconds of fuzzing per target (default 20; 0 = replay the seeds only)
#   FUZZ_JOBS     targets fuzzed at once (default 1)
#   FUZZ_BUILD    0 to reuse build-fuzz/ as it is (default 1: configure and build)
#   FUZZ_TIMEOUT  seconds one input may take, sanitizers included (default 5)
#   FUZZ_DETERMINISM  the release build's test_image_determinism (default build/tests/...): when it
#                 exists, every image input the fuzzer kept is decoded twice with different heap
#                 and stack contents and must give the same answer
# Inputs the fuzzer finds go to build-fuzz/corpus/<target>/ (kept between runs, never committed
# by this script); copy the useful ones into tests/fuzz/<target>/ by hand.
set -euo pipefail
cd "$(dirname "$0")/../.."

ALL_TARGETS=(safetensors model_json infer_json binary_tensor multipart image shapes_query)
TARGETS=("$@")
[ $# -gt 0 ] || TARGETS=("${ALL_TARGETS[@]}")
SECONDS_PER_TARGET=${FUZZ_SECONDS:-20}
JOBS=${FUZZ_JOBS:-1}
TIMEOUT=${FUZZ_TIMEOUT:-5}
DETERMINISM=${FUZZ_DETERMINISM:-build/tests/test_image_determinism}
BUILD=build-fuzz
BIN=$BUILD/tests/fuzz
SEEDS=tests/fuzz

# Longest input each target mutates to: a little over its largest useful seed. Seeds that are
# longer (shipped safetensors, real images) are still replayed whole.
declare -A MAX_LEN=([safetensors]=16384 [model_json]=8192 [infer_json]=8192 [binary_tensor]=8192
                    [multipart]=8192 [image]=32768 [shapes_query]=256)
declare -A DICT=([safetensors]=safetensors.dict [model_json]=model_json.dict
                 [infer_json]=infer_json.dict [binary_tensor]=infer_json.dict)

# Every allocation is filled with 0xff (not only its first 4 KB, ASan's default), so that code
# reading memory it never wrote fails the same way on every run.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1:max_malloc_fill_size=4194304:malloc_fill_byte=255}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

log() { printf '== %s\n' "$*" >&2; }

if [ "${FUZZ_BUILD:-1}" != 0 ]; then
    tools/deps.sh test
    CC=clang cmake -S . -B "$BUILD" -DBUILD_FUZZERS=ON -DBUILD_TESTING=OFF \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWERROR=ON >/dev/null
    cmake --build "$BUILD" --target fuzzers -j"$(nproc)"
fi

# Replays every committed input of a target once (no mutation). If one fails, each is rerun on
# its own so that every failing file is named, not only the first.
replay() {
    local t=$1 files f bad=()
    mapfile -t files < <(find "$SEEDS/$t" -type f | sort)
    if [ ${#files[@]} -eq 0 ]; then
        log "$t: no seeds in $SEEDS/$t"
        return 1
    fi
    mkdir -p "$BUILD/artifacts/$t"
    local out=$BUILD/logs/replay_$t.log
    if "$BIN/fuzz_$t" -timeout="$TIMEOUT" -artifact_prefix="$BUILD/artifacts/$t/" "${files[@]}" \
        >"$out" 2>&1; then
        log "$t: ${#files[@]} committed inputs pass"
        return 0
    fi
    for f in "${files[@]}"; do
        "$BIN/fuzz_$t" -timeout="$TIMEOUT" -artifact_prefix="$BUILD/artifacts/$t/" "$f" \
            >"$out.one" 2>&1 && continue
        bad+=("$f")
        {
            printf -- '---- %s\n' "$f"
            grep -E -m3 'ERROR|runtime error|FUZZ_CHECK|SUMMARY' "$out.one" || tail -5 "$out.one"
        } >&2
        cat "$out.one" >>"$out"
    done
    rm -f "$out.one"
    log "$t: ${#bad[@]} of ${#files[@]} committed inputs FAIL; full reports: $out"
    return 1
}

# Fuzzes one target for SECONDS_PER_TARGET seconds; prints "target runs seconds" on success.
fuzz() {
    local t=$1 dict=()
    [ -n "${DICT[$t]:-}" ] && dict=(-dict="$SEEDS/${DICT[$t]}")
    mkdir -p "$BUILD/corpus/$t" "$BUILD/artifacts/$t"
    # New inputs go to the first directory; the seeds (and regressions/, read recursively) are
    # only read.
    if ! "$BIN/fuzz_$t" -max_total_time="$SECONDS_PER_TARGET" -max_len="${MAX_LEN[$t]}" \
        -timeout="$TIMEOUT" -rss_limit_mb=2048 -print_final_stats=1 "${dict[@]}" \
        -artifact_prefix="$BUILD/artifacts/$t/" "$BUILD/corpus/$t" "$SEEDS/$t" \
        >"$BUILD/logs/fuzz_$t.log" 2>&1; then
        log "$t: CRASH while fuzzing; log: $BUILD/logs/fuzz_$t.log"
        tail -60 "$BUILD/logs/fuzz_$t.log" >&2
        ls -l "$BUILD/artifacts/$t/" >&2
        return 1
    fi
    local runs time
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$BUILD/logs/fuzz_$t.log")
    time=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$BUILD/logs/fuzz_$t.log")
    printf '%s %s %s\n' "$t" "${runs:-?}" "${time:-?}" >"$BUILD/logs/stats_$t"
}

mkdir -p "$BUILD/logs"
failed=0
FUZZ_TARGETS=() # those whose committed inputs pass; a target that fails them is not fuzzed
for t in "${TARGETS[@]}"; do
    [ -x "$BIN/fuzz_$t" ] || { log "unknown target $t"; exit 2; }
    if replay "$t"; then
        FUZZ_TARGETS+=("$t")
    else
        failed=1
    fi
done

if [ "$SECONDS_PER_TARGET" -gt 0 ] && [ ${#FUZZ_TARGETS[@]} -gt 0 ]; then
    log "fuzzing ${#FUZZ_TARGETS[@]} targets for ${SECONDS_PER_TARGET}s each, $JOBS at a time"
    for t in "${FUZZ_TARGETS[@]}"; do
        rm -f "$BUILD/logs/stats_$t"
        while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do
            wait -n || true
        done
        fuzz "$t" &
    done
    wait || true
    # A target passed when it wrote its stats line.
    for t in "${FUZZ_TARGETS[@]}"; do
        [ -f "$BUILD/logs/stats_$t" ] || failed=1
    done
    printf '%-16s %14s %8s %10s\n' target executions seconds exec/s
    for t in "${FUZZ_TARGETS[@]}"; do
        if [ -f "$BUILD/logs/stats_$t" ]; then
            read -r name runs time <"$BUILD/logs/stats_$t"
            printf '%-16s %14s %8s %10s\n' "$name" "$runs" "$time" \
                "$([ "${time:-0}" -gt 0 ] 2>/dev/null && echo $((runs / time)) || echo -)"
        else
            printf '%-16s %14s\n' "$t" FAILED
        fi
    done
fi
# The image inputs the fuzzer kept, decoded twice with different heap and stack contents.
if [[ " ${FUZZ_TARGETS[*]} " == *" image "* ]] && [ -x "$DETERMINISM" ] &&
    [ -d "$BUILD/corpus/image" ]; then
    if "$DETERMINISM" "$BUILD/corpus/image" >"$BUILD/logs/determinism_image.log" 2>&1; then
        log "image: $(tail -2 "$BUILD/logs/determinism_image.log" | head -1)"
    else
        log "image: an answer depends on stale memory; log: $BUILD/logs/determinism_image.log"
        grep -m10 'stale' "$BUILD/logs/determinism_image.log" >&2 || true
        failed=1
    fi
fi
[ "$failed" = 0 ] || { log "FAIL: a committed input or a fuzz run crashed (inputs in $BUILD/artifacts/)"; exit 1; }
log "fuzz: all targets pass"
