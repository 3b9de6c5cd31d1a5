#!/usr/bin/env bash
# run.sh - convserve's benchmark: installs what is missing, builds Release, and measures side by
# side in one run, on loopback only:
#   1. engine only: convserve-engine bench vs PyTorch (Debian python3-torch, frozen +
#      optimize_for_inference, same thread count, same weights) for cnn_bn and digits, batch 1,
#      16, 64, f32 and bf16;
#   2. through HTTP with wrk: batch-1 KServe v2 JSON on cnn_bn at 1, 4, 16, 64 connections,
#      batch-64 with the Triton binary tensor extension, PNG images via PUT /predictions/digits;
#      with the server's own latency split and mean executed batch from /metrics;
#   3. the peer: bench/peer_fastapi.py (FastAPI + uvicorn + PyTorch, same weights, same route)
#      under the same batch-1 JSON load, in two setups: "tuned" (BENCH_PEER_WORKERS uvicorn
#      workers x BENCH_PEER_THREADS torch threads) and "plain" (1 worker, torch on every CPU);
#   4. server RSS idle and after the load, CPU use at idle.
# Prints a markdown table and writes it to bench/results.md with the machine and the commands.
#
# Usage: bench/run.sh [--quick]
#   Each HTTP load runs 10 s; each engine figure is the best of 3 runs of 1 s (other programs on
#   the machine disturb short runs). --quick: 3 s loads, one engine run each.
# Other programs on the machine disturb the figures: the CPU they use during each measurement is
# reported ("bg"), and a measurement they disturbed by >= 20% is done once more (8 at most).
# Environment: BENCH_BUILD_DIR (default build), BENCH_SECONDS (HTTP load), BENCH_ENGINE_SECONDS
# and BENCH_REPEATS (engine), BENCH_RETRIES (default 8), BENCH_PEER_WORKERS and
# BENCH_PEER_THREADS (the tuned peer, default 1 and 1), BENCH_OUT (default bench/results.md).
# Generated files (the cnn_bn weights, 19 MB; request bodies; logs) go to $BENCH_BUILD_DIR/bench.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

QUICK=0
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=1 ;;
        -h|--help) sed -n '2,/^set -e/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $arg (usage: bench/run.sh [--quick])" >&2; exit 2 ;;
    esac
done
if [ "$QUICK" = 1 ]; then DUR=${BENCH_SECONDS:-3}; ESEC=${BENCH_ENGINE_SECONDS:-1}; REPS=1
else DUR=${BENCH_SECONDS:-10}; ESEC=${BENCH_ENGINE_SECONDS:-1}; REPS=${BENCH_REPEATS:-3}; fi
IDLE=5
# The peer's uvicorn workers and torch threads per worker (see the notes in bench/peer_fastapi.py).
PEER_WORKERS=${BENCH_PEER_WORKERS:-1}
PEER_THREADS=${BENCH_PEER_THREADS:-1}
BUILD=${BENCH_BUILD_DIR:-build}
OUT=${BENCH_OUT:-bench/results.md}
PY=/usr/bin/python3            # Debian's python3-torch lives only here
NPROC=$(nproc)
WORK=$BUILD/bench
LOGS=$WORK/logs

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
# Busy and total CPU ticks of the whole machine (/proc/stat).
machine_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }
# children_ticks: sets CT to the CPU time of this shell's finished children (wrk, the engine
# runs), clock ticks. Not to be called in $(...): a subshell's `times` knows only its own children.
children_ticks() {
    times >"$LOGS/.times"
    CT=$(awk -v hz="$(getconf CLK_TCK)" 'NR == 2 {
        t = 0; for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] } printf "%d", t * hz }' "$LOGS/.times")
}
# others_pct M0 M1 OWN_TICKS: % of all CPUs used between two machine_ticks samples by anything
# but OWN_TICKS.
others_pct() {
    awk -v a="$1" -v b="$2" -v d="$3" 'BEGIN {split(a, x, " "); split(b, y, " "); t = y[2] - x[2]
        v = t > 0 ? 100 * (y[1] - x[1] - d) / t : 0; printf "%d", v < 0 ? 0 : v}'
}

# ---------------------------------------------------------------------------------------------
# 1. Dependencies (only the missing ones) and the Release build.
want=(build-essential cmake pkg-config curl ca-certificates libdnnl-dev libmicrohttpd-dev
      libjansson-dev libstb-dev python3 python3-numpy python3-torch wrk
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
cmake --build "$BUILD" -j"$NPROC" --target convserve convserve-engine >/dev/null
SERVER=$BUILD/convserve
ENGINE=$BUILD/convserve-engine

mkdir -p "$WORK" "$LOGS"
rm -f "$LOGS"/*

# ---------------------------------------------------------------------------------------------
# Processes this script starts; all stopped on exit.
PIDS=()
stop_pid() {  # stop_pid PID: SIGTERM, then SIGKILL after 10 s; also its child processes
    local pid=$1 i kids
    kill -0 "$pid" 2>/dev/null || return 0
    kids=$(pgrep -P "$pid" || true)
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for i in $kids; do kill -0 "$i" 2>/dev/null && kill -KILL "$i" 2>/dev/null || true; done
    return 0
}
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

CMDS=()   # the exact commands, for results.md
note_cmd() { CMDS+=("$*"); }

# ---------------------------------------------------------------------------------------------
# 2. Model folders: cnn_bn with real weights (exported once from tools/notebook_models.py's CNNBN,
# seed 0, so PyTorch and convserve run the same weights), digits as shipped, and bf16 copies.
MODELS=$WORK/models
BF16=$WORK/models-bf16
if [ ! -f "$MODELS/cnn_bn/model.safetensors" ] || [ "$MODELS/cnn_bn/model.json" -ot tools/notebook_models.py ] \
   || [ "$MODELS/cnn_bn/model.json" -ot tools/export_model.py ] || [ "$MODELS/cnn_bn/model.json" -ot bench/bench_torch.py ] \
   || [ "$MODELS/cnn_bn/model.json" -ot config/models/cnn_bn/model.json ]; then
    log "exporting cnn_bn with weights to $MODELS/cnn_bn"
    rm -rf "$MODELS/cnn_bn"
    $PY bench/bench_torch.py export-cnnbn "$MODELS/cnn_bn" >/dev/null
fi
note_cmd "$PY bench/bench_torch.py export-cnnbn $MODELS/cnn_bn"
rm -rf "$MODELS/digits" "$BF16"
cp -r config/models/digits "$MODELS/digits"
for m in cnn_bn digits; do
    mkdir -p "$BF16/$m"
    cp "$MODELS/$m"/* "$BF16/$m/"
    $PY -c 'import json, sys
p = sys.argv[1]; d = json.load(open(p)); d["precision"] = "bf16"; json.dump(d, open(p, "w"), indent=1)' \
        "$BF16/$m/model.json"
done
BODIES=$WORK/bodies
$PY bench/bench_torch.py bodies "$MODELS/cnn_bn" "$BODIES"
note_cmd "$PY bench/bench_torch.py bodies $MODELS/cnn_bn $BODIES"

# ---------------------------------------------------------------------------------------------
# Machine.
CPU_MODEL=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
ISA=$(grep -o -w 'avx512f\|avx512_bf16\|amx_bf16\|amx_tile\|avx2' /proc/cpuinfo | sort -u | tr '\n' ' ')
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
# Other programs using >= 5% of a CPU now (top's second sample, over 1 s).
busy_procs() {
    top -b -n2 -d1 -w 200 2>/dev/null | awk '/^top -/ {f++} f == 2 && $1 ~ /^[0-9]+$/ && $9 + 0 >= 5 {
        printf "%s%s (pid %s, %s%%)", sep, $12, $1, $9; sep = ", "}'
}
BUSY=$(busy_procs)
VERSIONS=$($PY -c 'import torch, fastapi, uvicorn; print(f"torch {torch.__version__}, fastapi {fastapi.__version__}, uvicorn {uvicorn.__version__}")')
DNNL=$(dpkg-query -W -f='${Version}' libdnnl-dev 2>/dev/null || echo '?')
WRKV=$(dpkg-query -W -f='${Version}' wrk 2>/dev/null || echo '?')
log "machine: $CPU_MODEL, $NPROC CPUs, load $LOAD_START${BUSY:+; busy: $BUSY}"

# ---------------------------------------------------------------------------------------------
# 3. Engine only. Each figure is the best of REPS runs; when other programs used >= 20% of the
# CPUs meanwhile, the REPS runs are done once more (BENCH_RETRIES in all, shared with the loads).
RETRIES_LEFT=${BENCH_RETRIES:-8}
declare -A ENG_RATE ENG_MS ENG_PREC TORCH_RATE TORCH_MS
ENG_BG=0
for prec in f32 bf16; do
    dir=$MODELS; [ "$prec" = bf16 ] && dir=$BF16
    for m in cnn_bn digits; do
        for b in 1 16 64; do
            cmd="$ENGINE bench $dir/$m --batch $b --seconds $ESEC --threads $NPROC"
            for attempt in 1 2; do
                log "$cmd (best of $REPS)$([ "$attempt" = 2 ] && echo ' (again)')"
                children_ticks; w0=$CT; m0=$(machine_ticks)
                for r in $(seq "$REPS"); do
                    line=$($cmd 2>"$LOGS/engine-$m-$prec-$b.err") || die "$cmd failed: $(cat "$LOGS/engine-$m-$prec-$b.err")"
                    echo "$line" >>"$LOGS/engine.txt"
                    rate=$(sed -n 's/.*: \([0-9.]*\) img\/s.*/\1/p' <<<"$line")
                    if awk -v a="$rate" -v b="${ENG_RATE[$m,$prec,$b]:-0}" 'BEGIN {exit !(a > b)}'; then
                        ENG_RATE[$m,$prec,$b]=$rate
                        ENG_MS[$m,$prec,$b]=$(sed -n 's/.*, \([0-9.]*\) ms per batch.*/\1/p' <<<"$line")
                        ENG_PREC[$m,$prec,$b]=$(sed -n 's/.*precision \([a-z0-9]*\):.*/\1/p' <<<"$line")
                    fi
                done
                children_ticks; w1=$CT; m1=$(machine_ticks)
                bg=$(others_pct "$m0" "$m1" $((w1 - w0)))
                if [ "$bg" -lt 20 ] || [ "$attempt" = 2 ] || [ "$RETRIES_LEFT" -le 0 ]; then break; fi
                RETRIES_LEFT=$((RETRIES_LEFT - 1))
                log "other programs used ${bg}% of the CPUs meanwhile: running it again"
            done
            [ "$bg" -gt "$ENG_BG" ] && ENG_BG=$bg
        done
    done
done
note_cmd "$ENGINE bench {$MODELS,$BF16}/{cnn_bn,digits} --batch {1,16,64} --seconds $ESEC --threads $NPROC   # each $REPS times, best kept"
cmd="$PY bench/bench_torch.py engine --threads $NPROC --seconds $ESEC --repeats $REPS --batches 1,16,64 $MODELS/cnn_bn $MODELS/digits"
note_cmd "$cmd"
for attempt in 1 2; do
    log "$cmd$([ "$attempt" = 2 ] && echo ' (again)')"
    children_ticks; w0=$CT; m0=$(machine_ticks)
    $cmd >"$LOGS/torch-$attempt.txt" 2>"$LOGS/torch.err" || die "PyTorch engine run failed: $(tail -5 "$LOGS/torch.err")"
    children_ticks; w1=$CT; m1=$(machine_ticks)
    TORCH_BG=$(others_pct "$m0" "$m1" $((w1 - w0)))
    while read -r _ m _ b rest; do
        b=${b%:}
        rate=$(sed -n 's/^\([0-9.]*\) img\/s.*/\1/p' <<<"$rest")
        if awk -v a="$rate" -v b="${TORCH_RATE[$m,$b]:-0}" 'BEGIN {exit !(a > b)}'; then
            TORCH_RATE[$m,$b]=$rate
            TORCH_MS[$m,$b]=$(sed -n 's/.*, \([0-9.]*\) ms per batch.*/\1/p' <<<"$rest")
        fi
    done <"$LOGS/torch-$attempt.txt"
    if [ "$TORCH_BG" -lt 20 ] || [ "$attempt" = 2 ] || [ "$RETRIES_LEFT" -le 0 ]; then break; fi
    RETRIES_LEFT=$((RETRIES_LEFT - 1))
    log "other programs used ${TORCH_BG}% of the CPUs meanwhile: running it again"
done

# ---------------------------------------------------------------------------------------------
# Helpers for servers and loads.
# A server's processes: itself and its children (uvicorn workers).
tree() { echo "$1"; pgrep -P "$1" || true; }
rss_kb() {  # total VmRSS of the tree, kB
    local p t=0 r
    for p in $(tree "$1"); do r=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0); t=$((t + ${r:-0})); done
    echo "$t"
}
cpu_ticks() {  # utime + stime of the tree, clock ticks
    local p t=0 c
    for p in $(tree "$1"); do c=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}'); t=$((t + ${c:-0})); done
    echo "$t"
}
# idle_window PID SECONDS: sets IDLE_PCT (the process's CPU use over that many idle seconds, % of
# one CPU) and OTHERS_PCT (everything else on the machine meanwhile, % of all CPUs: the background
# load other programs put on this run).
idle_window() {
    local a b ma mb
    a=$(cpu_ticks "$1"); ma=$(machine_ticks); sleep "$2"; b=$(cpu_ticks "$1"); mb=$(machine_ticks)
    IDLE_PCT=$(awk -v d=$((b - a)) -v hz="$(getconf CLK_TCK)" -v s="$2" 'BEGIN {printf "%.1f", 100 * d / hz / s}')
    OTHERS_PCT=$(awk -v a="$ma" -v b="$mb" -v d=$((b - a)) 'BEGIN {
        split(a, x, " "); split(b, y, " "); t = y[2] - x[2]
        if (t > 0) printf "%.0f", 100 * (y[1] - x[1] - d) / t; else print "-"}')
}
wait_ready() {  # wait_ready URL PID LOGFILE
    local i
    for i in $(seq 300); do
        kill -0 "$2" 2>/dev/null || die "server exited during startup: $(tail -5 "$3")"
        curl -sf -o /dev/null "$1/v2/health/ready" && return 0
        sleep 0.1
    done
    die "server not ready after 30 s: $(tail -5 "$3")"
}
scrape() { curl -sf "$1/metrics" >"$2" || die "GET /metrics failed"; }
metric() {  # metric FILE NAME MODEL
    awk -v n="$2" -v m="model=\"$3\"" '$1 ~ "^"n"\\{" && index($1, m) {v = $2} END {print v + 0}' "$1"
}

declare -A R_RPS R_P50 R_P99 R_ERR R_BATCH R_SREQ R_SQ R_SINF R_CPU R_BG
TARGET_PID=
SPLIT_URL=      # when set (convserve), each load also records the server's view from /metrics
# load KEY URL CONNS MODEL [env...]: runs wrk with bench/post.lua against the server TARGET_PID;
# stores req/s, p50 and p99 (ms), errors, the server's CPU time per request (ms), and the
# background: CPU used meanwhile by programs other than the server and wrk, % of all CPUs. A run
# disturbed by more than 20% background is repeated once (BENCH_RETRIES in all), keeping the
# quieter one. MODEL (or -) names the model for the server's view from /metrics.
load() {
    local key=$1 url=$2 conns=$3 model=$4; shift 4
    local cmd="wrk -t1 -c$conns -d${DUR}s --timeout 10s --latency -s bench/post.lua $url"
    note_cmd "$* $cmd"
    local attempt best_bg=999 out t0 t1 w0 w1 m0 m1 bg
    for attempt in 1 2; do
        log "$* $cmd$([ "$attempt" = 2 ] && echo ' (again)')"
        out=$LOGS/wrk-$key-$attempt.txt
        [ "$model" != - ] && scrape "$SPLIT_URL" "$LOGS/metrics-$key-$attempt-before.txt"
        t0=$(cpu_ticks "$TARGET_PID"); children_ticks; w0=$CT; m0=$(machine_ticks)
        env "$@" $cmd >"$out" 2>&1 || die "wrk failed: $(tail -5 "$out")"
        t1=$(cpu_ticks "$TARGET_PID"); children_ticks; w1=$CT; m1=$(machine_ticks)
        [ "$model" != - ] && scrape "$SPLIT_URL" "$LOGS/metrics-$key-$attempt-after.txt"
        bg=$(others_pct "$m0" "$m1" $((t1 - t0 + w1 - w0)))
        if [ "$bg" -lt "$best_bg" ]; then
            best_bg=$bg
            load_result "$key" "$out" $((t1 - t0))
            R_BG[$key]=$bg
            [ "$model" != - ] && server_split "$key" "$model" "$LOGS/metrics-$key-$attempt-before.txt" \
                "$LOGS/metrics-$key-$attempt-after.txt"
        fi
        if [ "$bg" -lt 20 ] || [ "$attempt" = 2 ] || [ "$RETRIES_LEFT" -le 0 ]; then break; fi
        RETRIES_LEFT=$((RETRIES_LEFT - 1))
        log "other programs used ${bg}% of the CPUs during $key: running it again"
    done
    [ "${R_ERR[$key]}" != 0 ] && log "ERRORS in $key: ${R_ERR[$key]}(see $LOGS/wrk-$key-*.txt)"
    return 0
}
load_result() {  # load_result KEY WRK_OUTPUT SERVER_TICKS
    local key=$1 line kv
    line=$(grep '^BENCH ' "$2") || die "no result from wrk: $(tail -5 "$2")"
    local -A v
    for kv in ${line#BENCH }; do v[${kv%%=*}]=${kv#*=}; done
    R_RPS[$key]=$(awk -v n="${v[requests]}" -v d="${v[duration_us]}" 'BEGIN {printf "%.1f", n / (d / 1e6)}')
    R_CPU[$key]=$(awk -v d="$3" -v hz="$(getconf CLK_TCK)" -v n="${v[requests]}" 'BEGIN {if (n > 0) printf "%.2f", 1000 * d / hz / n; else print "-"}')
    R_P50[$key]=$(awk -v x="${v[p50_us]}" 'BEGIN {printf "%.2f", x / 1000}')
    R_P99[$key]=$(awk -v x="${v[p99_us]}" 'BEGIN {printf "%.2f", x / 1000}')
    local errs=""
    [ "${v[non2xx]}" != 0 ] && errs+="${v[non2xx]} non-2xx "
    [ "${v[connect]}" != 0 ] && errs+="${v[connect]} connect "
    [ "${v[read]}" != 0 ] && errs+="${v[read]} read "
    [ "${v[write]}" != 0 ] && errs+="${v[write]} write "
    [ "${v[timeout]}" != 0 ] && errs+="${v[timeout]} timeout "
    R_ERR[$key]=${errs:-0}
}
# server_split KEY MODEL BEFORE AFTER: the server's own view of the load from /metrics deltas:
# mean executed batch, mean request and queue time per request, mean inference time per batch.
server_split() {
    local key=$1 m=$2 a=$3 b=$4
    mean() {  # mean METRIC SCALE: delta(METRIC_sum) / delta(METRIC_count) * SCALE
        awk -v s1="$(metric "$a" "$1_sum" "$m")" -v s2="$(metric "$b" "$1_sum" "$m")" \
            -v c1="$(metric "$a" "$1_count" "$m")" -v c2="$(metric "$b" "$1_count" "$m")" -v k="$2" \
            'BEGIN {if (c2 > c1) printf (k == 1 ? "%.1f" : "%.2f"), k * (s2 - s1) / (c2 - c1); else print "-"}'
    }
    R_BATCH[$key]=$(mean convserve_batch_size 1)
    R_SREQ[$key]=$(mean convserve_request_duration_seconds 1000)
    R_SQ[$key]=$(mean convserve_queue_duration_seconds 1000)
    R_SINF[$key]=$(mean convserve_inference_duration_seconds 1000)
}

# ---------------------------------------------------------------------------------------------
# 4. convserve through HTTP.
SLOG=$LOGS/convserve.log
cmd="$SERVER --models $MODELS --port 0"
log "$cmd"
note_cmd "$cmd"
$cmd >"$SLOG" 2>&1 &
SPID=$!
PIDS+=("$SPID")
for i in $(seq 300); do
    grep -q 'listening on http://' "$SLOG" && break
    kill -0 "$SPID" 2>/dev/null || die "convserve exited during startup: $(tail -5 "$SLOG")"
    sleep 0.1
done
URL=$(grep -o 'listening on http://[0-9.]*:[0-9]*' "$SLOG" | head -1 | sed 's/listening on //')
[ -n "$URL" ] || die "convserve did not log its address: $(tail -5 "$SLOG")"
wait_ready "$URL" "$SPID" "$SLOG"
sleep 1
CS_RSS_IDLE=$(rss_kb "$SPID")
idle_window "$SPID" "$IDLE"; CS_CPU_IDLE=$IDLE_PCT; BG1=$OTHERS_PCT
log "convserve at $URL: RSS $CS_RSS_IDLE kB, idle CPU $CS_CPU_IDLE%"
$PY bench/bench_torch.py check "$URL" cnn_bn "$BODIES/expected_b1.json" "$BODIES/infer_b1.json" >"$LOGS/check-convserve.txt" \
    || die "convserve's answer differs from PyTorch's: $(cat "$LOGS/check-convserve.txt")"
CHECK_CS=$(cat "$LOGS/check-convserve.txt")
curl -sf -o "$LOGS/predict-digits.json" -T examples/3.png "$URL/predictions/digits" \
    || die "PUT /predictions/digits failed"
B64_HDR=$(cat "$BODIES/infer_b64.hdrlen")
B1_BYTES=$(stat -c %s "$BODIES/infer_b1.json")
B1_FLOATS=$($PY -c 'import json, sys; print(len(json.load(open(sys.argv[1]))["inputs"][0]["data"]))' "$BODIES/infer_b1.json")
curl -sf -o /dev/null -H "Inference-Header-Content-Length: $B64_HDR" -H 'Content-Type: application/octet-stream' \
    --data-binary @"$BODIES/infer_b64.bin" "$URL/v2/models/cnn_bn/infer" || die "binary batch-64 request failed"

INFER=$URL/v2/models/cnn_bn/infer
TARGET_PID=$SPID
SPLIT_URL=$URL
for c in 1 4 16 64; do
    load "cs$c" "$INFER" "$c" cnn_bn BENCH_BODY="$BODIES/infer_b1.json"
    kill -0 "$SPID" 2>/dev/null || die "convserve died under load: $(tail -5 "$SLOG")"
done
B64_CONNS=2
load b64 "$INFER" "$B64_CONNS" cnn_bn BENCH_BODY="$BODIES/infer_b64.bin" BENCH_CONTENT_TYPE=application/octet-stream \
    BENCH_HEADER_LENGTH="$B64_HDR"
IMG_CONNS=16
load img "$URL/predictions/digits" "$IMG_CONNS" digits BENCH_BODY=examples/3.png BENCH_METHOD=PUT BENCH_CONTENT_TYPE=image/png
kill -0 "$SPID" 2>/dev/null || die "convserve died under load: $(tail -5 "$SLOG")"
CS_RSS_LOAD=$(rss_kb "$SPID")
idle_window "$SPID" "$IDLE"; CS_CPU_AFTER=$IDLE_PCT; BG2=$OTHERS_PCT
log "convserve after load: RSS $CS_RSS_LOAD kB, idle CPU $CS_CPU_AFTER%"
stop_pid "$SPID"

# ---------------------------------------------------------------------------------------------
# 5. The peer: FastAPI + uvicorn + PyTorch, same weights, same route, same load; in two setups:
# "plain" (one worker, torch on every CPU: what one writes first) and "tuned" (PEER_WORKERS
# workers x PEER_THREADS torch threads: one inference cannot starve the event loop of a CPU).
declare -A P_RSS_IDLE P_RSS_LOAD P_CPU_IDLE P_BG P_CHECK
run_peer() {  # run_peer KEY WORKERS THREADS
    local key=$1 port url plog pid c
    port=$($PY -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    plog=$LOGS/peer-$key.log
    cmd="$PY bench/peer_fastapi.py $MODELS/cnn_bn --port $port --workers $2 --threads $3"
    log "$cmd"
    note_cmd "$cmd"
    $cmd >"$plog" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    url=http://127.0.0.1:$port
    wait_ready "$url" "$pid" "$plog"
    sleep 1
    P_RSS_IDLE[$key]=$(rss_kb "$pid")
    idle_window "$pid" "$IDLE"; P_CPU_IDLE[$key]=$IDLE_PCT; P_BG[$key]=$OTHERS_PCT
    $PY bench/bench_torch.py check "$url" cnn_bn "$BODIES/expected_b1.json" "$BODIES/infer_b1.json" >"$LOGS/check-$key.txt" \
        || die "the peer's answer differs from PyTorch's: $(cat "$LOGS/check-$key.txt")"
    P_CHECK[$key]=$(cat "$LOGS/check-$key.txt")
    TARGET_PID=$pid
    for c in 1 4 16 64; do
        load "$key$c" "$url/v2/models/cnn_bn/infer" "$c" - BENCH_BODY="$BODIES/infer_b1.json"
        kill -0 "$pid" 2>/dev/null || die "the peer died under load: $(tail -5 "$plog")"
    done
    P_RSS_LOAD[$key]=$(rss_kb "$pid")
    stop_pid "$pid"
}
run_peer tuned "$PEER_WORKERS" "$PEER_THREADS"
run_peer plain 1 "$NPROC"
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
BUSY_END=$(busy_procs)

# ---------------------------------------------------------------------------------------------
# 6. The table.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a == "" || b == "" || b + 0 == 0) print "-"; else printf "%.1fx", a / b}'; }
mb() { awk -v k="$1" 'BEGIN {printf "%.0f MB", k / 1024}'; }
fmt() { awk -v x="$1" 'BEGIN {if (x == "") print "-"; else if (x >= 100) printf "%.0f", x; else printf "%.1f", x}'; }
pass() { if awk "BEGIN {exit !($1)}"; then echo "yes"; else echo "**no**"; fi; }

E64=${ENG_RATE[cnn_bn,f32,64]:-0}
E1MS=${ENG_MS[cnn_bn,f32,1]:-0}
B64=${ENG_RATE[cnn_bn,bf16,64]:-0}
H64=$(awk -v r="${R_RPS[b64]}" 'BEGIN {printf "%.1f", r * 64}')
ERRS_ALL=""
for k in cs1 cs4 cs16 cs64 b64 img tuned1 tuned4 tuned16 tuned64 plain1 plain4 plain16 plain64; do
    [ "${R_ERR[$k]:-0}" != 0 ] && ERRS_ALL+="$k: ${R_ERR[$k]}; "
done
TUNED="$PEER_WORKERS worker(s) x $PEER_THREADS torch thread(s)"
PLAIN="1 worker x $NPROC torch threads"

TABLE=$(mktemp)
{
echo "# convserve benchmark"
echo
echo "$(date -u '+%Y-%m-%d %H:%M UTC') · $CPU_MODEL · $NPROC CPUs (nproc) · ISA: $ISA· oneDNN (libdnnl-dev) $DNNL · $VERSIONS · wrk $WRKV"
echo
BGMAX=$(printf '%s\n' "${R_BG[@]}" "$ENG_BG" "$TORCH_BG" | sort -n | tail -1)
if [ "${BGMAX:-0}" -ge 20 ]; then
    echo "**Warning: other programs used up to ${BGMAX}% of the CPUs during some loads (column \"bg\"); those rows are disturbed by them. Rerun on a quiet machine.**"
    echo
fi
echo "Engine figures: best of $REPS runs of ${ESEC} s; HTTP loads: ${DUR} s each, one wrk thread, loopback.$([ "$QUICK" = 1 ] && echo ' (--quick)')"
echo "Background: \"bg\" columns give the CPU other programs used during each load (% of all CPUs; a load disturbed by >= 20% is run once more and the quieter run kept). While the servers sat idle: ${BG1}% after convserve's startup, ${BG2}% after its load, ${P_BG[tuned]}% and ${P_BG[plain]}% at the peers' startups. Load average at start $LOAD_START, at end $LOAD_END. Other busy processes at start: ${BUSY:-none}; at end: ${BUSY_END:-none}."
echo
echo "## Engine only (images/s; PyTorch: frozen + optimize_for_inference, fp32, $NPROC threads, same weights; bg: convserve up to ${ENG_BG}%, PyTorch ${TORCH_BG}%)"
echo
echo "| model | batch | convserve f32 | ms/batch | convserve bf16 | ms/batch | PyTorch f32 | ms/batch | f32 / PyTorch | bf16 / PyTorch | bf16 / f32 |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for m in cnn_bn digits; do
    for b in 1 16 64; do
        bp=${ENG_PREC[$m,bf16,$b]:-}
        bf=$(fmt "${ENG_RATE[$m,bf16,$b]:-}"); [ "$bp" = bf16 ] || bf="$bf (ran $bp)"
        echo "| $m | $b | $(fmt "${ENG_RATE[$m,f32,$b]:-}") | ${ENG_MS[$m,f32,$b]:--} | $bf | ${ENG_MS[$m,bf16,$b]:--} | $(fmt "${TORCH_RATE[$m,$b]:-}") | ${TORCH_MS[$m,$b]:--} | $(ratio "${ENG_RATE[$m,f32,$b]:-}" "${TORCH_RATE[$m,$b]:-}") | $(ratio "${ENG_RATE[$m,bf16,$b]:-}" "${TORCH_RATE[$m,$b]:-}") | $(ratio "${ENG_RATE[$m,bf16,$b]:-}" "${ENG_RATE[$m,f32,$b]:-}") |"
    done
done
echo
echo "## HTTP: cnn_bn, batch-1 KServe v2 JSON ($B1_FLOATS floats, $B1_BYTES-byte body)"
echo
echo "convserve, with its own view from /metrics (mean per request: time in the server, of it waiting in the batching queue; mean inference time per executed batch) and its CPU time per request:"
echo
echo "| connections | req/s | p50 ms | p99 ms | mean executed batch | server ms | queue ms | inference ms per batch | CPU ms per request | errors | bg |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"
for c in 1 4 16 64; do
    echo "| $c | $(fmt "${R_RPS[cs$c]}") | ${R_P50[cs$c]} | ${R_P99[cs$c]} | ${R_BATCH[cs$c]} | ${R_SREQ[cs$c]} | ${R_SQ[cs$c]} | ${R_SINF[cs$c]} | ${R_CPU[cs$c]} | ${R_ERR[cs$c]} | ${R_BG[cs$c]}% |"
done
echo
echo "Against the peer, bench/peer_fastapi.py (FastAPI + uvicorn + PyTorch, same weights, same route), tuned: $TUNED; plain: $PLAIN:"
echo
echo "| connections | convserve req/s | tuned peer req/s | p50 ms | p99 ms | CPU ms per request | bg | convserve / tuned | plain peer req/s | p50 ms | p99 ms | bg | convserve / plain | peer errors (tuned / plain) |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
for c in 1 4 16 64; do
    echo "| $c | $(fmt "${R_RPS[cs$c]}") | $(fmt "${R_RPS[tuned$c]}") | ${R_P50[tuned$c]} | ${R_P99[tuned$c]} | ${R_CPU[tuned$c]} | ${R_BG[tuned$c]}% | $(ratio "${R_RPS[cs$c]}" "${R_RPS[tuned$c]}") | $(fmt "${R_RPS[plain$c]}") | ${R_P50[plain$c]} | ${R_P99[plain$c]} | ${R_BG[plain$c]}% | $(ratio "${R_RPS[cs$c]}" "${R_RPS[plain$c]}") | ${R_ERR[tuned$c]} / ${R_ERR[plain$c]} |"
done
echo
echo "## HTTP: other loads (convserve)"
echo
echo "| load | connections | req/s | img/s | p50 ms | p99 ms | mean executed batch | server ms | queue ms | inference ms per batch | CPU ms per request | errors | bg |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"
echo "| cnn_bn batch 64, binary tensor extension (in and out) | $B64_CONNS | $(fmt "${R_RPS[b64]}") | $(fmt "$H64") | ${R_P50[b64]} | ${R_P99[b64]} | ${R_BATCH[b64]} | ${R_SREQ[b64]} | ${R_SQ[b64]} | ${R_SINF[b64]} | ${R_CPU[b64]} | ${R_ERR[b64]} | ${R_BG[b64]}% |"
echo "| PNG image, PUT /predictions/digits (examples/3.png) | $IMG_CONNS | $(fmt "${R_RPS[img]}") | $(fmt "${R_RPS[img]}") | ${R_P50[img]} | ${R_P99[img]} | ${R_BATCH[img]} | ${R_SREQ[img]} | ${R_SQ[img]} | ${R_SINF[img]} | ${R_CPU[img]} | ${R_ERR[img]} | ${R_BG[img]}% |"
echo
echo "## Resources"
echo
echo "| | convserve | tuned peer | plain peer |"
echo "|---|---:|---:|---:|"
echo "| RSS idle after startup (all processes) | $(mb "$CS_RSS_IDLE") | $(mb "${P_RSS_IDLE[tuned]}") | $(mb "${P_RSS_IDLE[plain]}") |"
echo "| RSS after the load | $(mb "$CS_RSS_LOAD") | $(mb "${P_RSS_LOAD[tuned]}") | $(mb "${P_RSS_LOAD[plain]}") |"
echo "| CPU at idle, ${IDLE} s after startup (% of one CPU) | $CS_CPU_IDLE% | ${P_CPU_IDLE[tuned]}% | ${P_CPU_IDLE[plain]}% |"
echo "| CPU at idle, ${IDLE} s right after the load | $CS_CPU_AFTER% | - | - |"
echo
echo "## Targets (issue 4)"
echo
echo "| target | measured | met |"
echo "|---|---:|---|"
echo "| engine cnn_bn f32 batch 64 >= 5,500 img/s | $(fmt "$E64") | $(pass "$E64 >= 5500") |"
echo "| engine cnn_bn f32 batch 1 <= 0.8 ms | $E1MS ms | $(pass "$E1MS <= 0.8") |"
echo "| bf16 cnn_bn batch 64 >= 3x f32 | $(ratio "$B64" "$E64") | $(pass "$B64 >= 3 * $E64") |"
echo "| HTTP binary batch 64 >= 80% of engine | $(awk -v a="$H64" -v b="$E64" 'BEGIN {if (b > 0) printf "%.0f%%", 100 * a / b; else print "-"}') | $(pass "$E64 > 0 && $H64 >= 0.8 * $E64") |"
echo "| mean executed batch at 16 connections >= 8 | ${R_BATCH[cs16]} | $(pass "${R_BATCH[cs16]/-/0} >= 8") |"
echo "| 16 connections >= several x 1 connection (3x here) | $(ratio "${R_RPS[cs16]}" "${R_RPS[cs1]}") | $(pass "${R_RPS[cs16]} >= 3 * ${R_RPS[cs1]}") |"
echo "| batch-1 JSON at 16 connections >= 20x the tuned peer | $(ratio "${R_RPS[cs16]}" "${R_RPS[tuned16]}") | $(pass "${R_RPS[cs16]} >= 20 * ${R_RPS[tuned16]}") |"
echo "| batch-1 JSON at 16 connections >= 20x the plain peer | $(ratio "${R_RPS[cs16]}" "${R_RPS[plain16]}") | $(pass "${R_RPS[cs16]} >= 20 * ${R_RPS[plain16]}") |"
echo "| no errors | ${ERRS_ALL:-none} | $([ -z "$ERRS_ALL" ] && echo yes || echo '**no**') |"
echo
echo "Correctness check before the loads (the same batch-1 input through each server against PyTorch's logits): $CHECK_CS; ${P_CHECK[tuned]}; ${P_CHECK[plain]}."
echo
echo "## Commands"
echo
echo '```'
echo "bench/run.sh${*:+ $*}"
for c in "${CMDS[@]}"; do echo "$c"; done
echo '```'
} >"$TABLE"
cat "$TABLE"
cp "$TABLE" "$OUT"
rm -f "$TABLE"
log "written to $OUT; wrk outputs, metrics and server logs in $LOGS"
