#!/usr/bin/env bash
# tools/ci/docker.sh - the container test: builds docker/Dockerfile with rootful podman (no registry:
# the Debian base image is made with debootstrap from the apt mirror), lints it, runs the image,
# checks its answers, its health check, its read-only / own-models mode and its graceful stop, and
# validates docker/compose.yaml and docker/k8s/ offline. Prints image size, build time and
# start-to-ready time. Exits non-zero on any failure. Run as root from anywhere:
#   tools/ci/docker.sh
# Environment: CONVSERVE_CI_CACHE (default /var/cache/convserve-ci: npm packages),
#   CONVSERVE_CI_PORT (default 18080; the next port is used too). The image localhost/convserve:test
#   and the base images stay in podman's storage, so the next run is warm.
set -euo pipefail
cd "$(dirname "$0")/../.."
export DEBIAN_FRONTEND=noninteractive

IMAGE=localhost/convserve:test
NAME=convserve-test
NAME_RO=convserve-test-ro
PORT=${CONVSERVE_CI_PORT:-18080}
PORT_RO=$((PORT + 1))
STOP_TIMEOUT=30          # = CONVSERVE_SHUTDOWN_TIMEOUT in the image
READY_TIMEOUT=60         # seconds a container may take to answer ready
CACHE=${CONVSERVE_CI_CACHE:-/var/cache/convserve-ci}
NODE_DIR=$CACHE/node
WORK=$(mktemp -d /tmp/convserve-docker.XXXXXX)
BG_PIDS=()

log() { printf '== %s\n' "$*" >&2; }
# podman without systemd logs "unable to get systemd connection ... healthchecks" on run/stop
# (the timer cannot be made; `podman healthcheck run` still works): drop just those lines.
quiet() { "$@" 2> >(grep -v 'systemd connection' >&2); }
die() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }
now() { echo "${EPOCHREALTIME/,/.}"; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
declare -A TIMING
timed() { # timed LABEL command...: runs it, records and prints its wall time
    local label=$1 t0
    shift
    t0=$(now)
    "$@"
    TIMING[$label]=$(elapsed "$t0")
    log "[timing] $label: ${TIMING[$label]} s"
}

remove_containers() { # one at a time: podman 4.3 removes none of the names if one is missing
    local c
    for c in "$NAME" "$NAME_RO"; do podman rm -f -i -t 0 "$c" >/dev/null 2>&1 || true; done
}
cleanup() {
    local rc=$?
    for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    if command -v podman >/dev/null; then
        if [ "$rc" -ne 0 ]; then
            for c in "$NAME" "$NAME_RO"; do
                podman container exists "$c" 2>/dev/null || continue
                echo "---- podman logs $c (last 40 lines)" >&2
                podman logs "$c" 2>&1 | tail -n 40 >&2 || true
            done
        fi
        remove_containers
    fi
    rm -rf "$WORK"
    [ "$rc" -eq 0 ] && echo "docker.sh: PASSED" || echo "docker.sh: FAILED (exit $rc)" >&2
}
trap cleanup EXIT
trap "exit 130" INT TERM

[ "$(id -u)" -eq 0 ] || die "run as root (rootful podman)"
T_ALL=$(now)

# ---- 1. tools: podman with runc (crun refuses this machine's hybrid cgroup layout), debootstrap ----
pkgs=(podman runc netavark aardvark-dns containernetworking-plugins iptables conmon debootstrap
      debian-archive-keyring ca-certificates curl)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
install_tools() {
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}
if [ ${#missing[@]} -gt 0 ]; then
    log "installing: ${missing[*]}"
    timed apt-install install_tools
fi
{ command -v node && command -v npm; } >/dev/null || die "node and npm are needed (the machine's Node.js)"

# ---- 2. podman config: runc, and container rlimits within root's hard limits (no CAP_SYS_RESOURCE) ----
mkdir -p /etc/containers
conf="# written by convserve tools/ci/docker.sh: runc (crun rejects hybrid cgroups v1/v2),
# default rlimits within the hard limits root has here (podman caps its own NPROC at 32768)
[containers]
default_ulimits = [\"nofile=$(ulimit -Hn):$(ulimit -Hn)\", \"nproc=32768:32768\"]
[engine]
runtime = \"runc\""
if [ "$(cat /etc/containers/containers.conf 2>/dev/null)" != "$conf" ]; then
    [ -f /etc/containers/containers.conf ] && ! grep -q convserve /etc/containers/containers.conf &&
        cp /etc/containers/containers.conf /etc/containers/containers.conf.before-convserve
    printf '%s\n' "$conf" >/etc/containers/containers.conf
fi

# ---- 3. base images from the Debian mirror (no registry), once per machine ----
make_base() {
    local mirror rootfs
    mirror=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" { print $2; exit }' /etc/apt/sources.list 2>/dev/null || true)
    [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
    rootfs=$WORK/rootfs
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 ||
        { tail -n 20 "$WORK/debootstrap.log" >&2; die "debootstrap"; }
    # slim like the official image: no apt caches, docs, man pages or locales
    cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
    echo 'Acquire::Languages "none";' >"$rootfs/etc/apt/apt.conf.d/docker-no-languages"
    printf 'path-exclude /usr/share/%s/*\n' doc man groff info lintian linda locale >"$rootfs/etc/dpkg/dpkg.cfg.d/docker"
    echo 'path-include /usr/share/doc/*/copyright' >>"$rootfs/etc/dpkg/dpkg.cfg.d/docker"
    find "$rootfs/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete
    rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* \
        "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/* \
        "$rootfs"/var/log/*.log
    # apt sources inside: the host's deb822 file when it has one (adds -updates and -security),
    # otherwise debootstrap's sources.list with the same mirror
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        rm -f "$rootfs/etc/apt/sources.list"
        cp /etc/apt/sources.list.d/debian.sources "$rootfs/etc/apt/sources.list.d/"
    fi
    grep -rqs "$mirror" "$rootfs/etc/apt/sources.list" "$rootfs/etc/apt/sources.list.d/" ||
        die "no apt source with $mirror in the base image"
    tar --numeric-owner -C "$rootfs" -c . |
        podman import --change 'CMD ["bash"]' - localhost/debian:bookworm-slim >/dev/null
    rm -rf "$rootfs"
}
if ! podman image exists localhost/debian:bookworm-slim; then
    log "making localhost/debian:bookworm-slim with debootstrap"
    timed base-image make_base
fi
# The build stage's debian:bookworm is the same minbase root file system: it installs its
# compilers and -dev packages with apt, which is all the full image would add.
podman image exists localhost/debian:bookworm || podman tag localhost/debian:bookworm-slim localhost/debian:bookworm

# ---- 4. npm tools (cached): dockerfilelint, kubernetes-models, yaml ----
npm_tools() {
    mkdir -p "$NODE_DIR"
    cp tools/ci/package.json "$NODE_DIR/package.json"
    (cd "$NODE_DIR" && npm install --no-audit --no-fund --loglevel=error >"$WORK/npm.log" 2>&1) ||
        { tail -n 20 "$WORK/npm.log" >&2; die "npm install"; }
    cp tools/ci/package.json "$NODE_DIR/.installed.json"
}
if ! cmp -s tools/ci/package.json "$NODE_DIR/.installed.json" 2>/dev/null ||
   [ ! -d "$NODE_DIR/node_modules/dockerfilelint" ]; then
    timed npm-install npm_tools
fi
export CONVSERVE_CI_NODE_MODULES=$NODE_DIR/node_modules

# ---- 5. lint the Dockerfile ----
# dockerfilelint 1.8.0 reads HEALTHCHECK options with /--\w+/, so --start-period is seen as an
# unknown "--start" (invalid_format), and it crashes on HEALTHCHECK without options. Lint a copy
# without the --start-period option; everything else is linted as written.
log "dockerfilelint docker/Dockerfile"
sed -E 's/--start-period=[0-9]+[a-z]* //' docker/Dockerfile >"$WORK/Dockerfile.lint"
"$NODE_DIR/node_modules/.bin/dockerfilelint" "$WORK/Dockerfile.lint" || die "dockerfilelint found issues"

# ---- 6. manifests: Kubernetes (schema + consistency), KServe (structure), compose ----
log "validating docker/k8s and docker/compose.yaml"
node tools/ci/k8s-validate.mjs --compose docker/compose.yaml docker/k8s/*.yaml docker/k8s/kserve/*.yaml ||
    die "manifest validation"

# ---- 7. build ----
log "podman build (log: podman build output on failure)"
build() {
    podman build --pull=never --format docker -f docker/Dockerfile -t "$IMAGE" . >"$WORK/build.log" 2>&1 ||
        { tail -n 60 "$WORK/build.log" >&2; die "podman build"; }
}
timed build build
grep -E "tests passed|tests failed" "$WORK/build.log" | sed 's/^/   ctest in the build stage: /' >&2 || true
[ "$(podman image inspect -f '{{.Config.Healthcheck.Test}}' "$IMAGE")" != "[]" ] ||
    die "the image has no HEALTHCHECK (build with --format docker)"
[ "$(podman image inspect -f '{{.Config.User}}' "$IMAGE")" = "10001:10001" ] || die "the image does not run as 10001"

# ---- helpers for the checks ----
wait_ready() { # wait_ready PORT CONTAINER: until /v2/health/ready is 200, bounded
    local deadline=$((SECONDS + READY_TIMEOUT))
    until curl -fsS -m 2 -o /dev/null "http://127.0.0.1:$1/v2/health/ready" 2>/dev/null; do
        [ "$(podman inspect -f '{{.State.Running}}' "$2")" = true ] || die "$2 exited before it was ready"
        [ $SECONDS -lt $deadline ] || die "$2 not ready after ${READY_TIMEOUT}s"
        sleep 0.1
    done
}
json_check() { # json_check FILE JS-EXPRESSION-ON-r DESCRIPTION
    node -e 'const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
             const ok = eval(process.argv[2]); if (!ok) { console.error(JSON.stringify(r).slice(0, 400)); process.exit(1); }' \
        "$1" "$2" || die "$3"
    log "ok: $3"
}
argmax='(a) => a.indexOf(Math.max(...a))'

# ---- 8. run it as CI would deploy it, and check the answers ----
remove_containers
log "podman run $NAME"
T_RUN=$(now)
quiet podman run -d --name "$NAME" -p "127.0.0.1:$PORT:8080" "$IMAGE" >/dev/null
wait_ready "$PORT" "$NAME"
TIMING[start-to-ready]=$(elapsed "$T_RUN")
log "[timing] start-to-ready: ${TIMING[start-to-ready]} s (podman run to the first 200 on /v2/health/ready)"
podman logs "$NAME" >"$WORK/start.log" 2>&1
grep -q "listening on http://0.0.0.0:8080" "$WORK/start.log" || die "log has no 'listening on http://0.0.0.0:8080'"
[ "$(podman exec "$NAME" id -u)" = 10001 ] || die "convserve does not run as uid 10001"
URL=http://127.0.0.1:$PORT

curl -fsS -m 10 -o "$WORK/live" -w '%{http_code}' "$URL/v2/health/live" | grep -qx 200 || die "/v2/health/live"
curl -fsS -m 10 -H 'Content-Type: application/json' --data-binary @examples/infer_3.json \
    "$URL/v2/models/digits/infer" -o "$WORK/v2.json" || die "POST /v2/models/digits/infer"
json_check "$WORK/v2.json" "r.model_name === 'digits' && ($argmax)(r.outputs[0].data) === 3" \
    "v2 JSON infer of examples/infer_3.json -> class 3"
curl -fsS -m 10 -T examples/3.png "$URL/predictions/digits" -o "$WORK/img.json" || die "PUT /predictions/digits"
json_check "$WORK/img.json" "r.predictions.length === 1 && r.predictions[0].top[0].label === '3'" \
    "PUT examples/3.png to /predictions/digits -> label \"3\""
curl -fsS -m 10 -F data=@examples/0.png -F data=@examples/7.png "$URL/predictions/digits?top=1" -o "$WORK/batch.json" ||
    die "multipart POST /predictions/digits"
json_check "$WORK/batch.json" "r.predictions.map((p) => p.top[0].label).join() === '0,7'" \
    "multipart batch of 0.png and 7.png -> labels 0, 7"
curl -fsS -m 10 "$URL/metrics" -o "$WORK/metrics" || die "GET /metrics"
grep -q '^convserve_requests_total' "$WORK/metrics" || die "/metrics has no convserve_requests_total"
podman healthcheck run "$NAME" >"$WORK/hc" 2>&1 || { cat "$WORK/hc" >&2; die "podman healthcheck run: unhealthy"; }
log "ok: HEALTHCHECK (convserve-healthcheck) reports healthy"

# ---- 9. graceful stop with a request in flight ----
# A 64-sample batch of the "3" digit sent at 16 kB/s (about 5 s of upload) is in flight when
# SIGTERM arrives: convserve must finish it, answer 200, then exit 0 well inside the grace period.
node -e 'const q = JSON.parse(require("fs").readFileSync("examples/infer_3.json", "utf8")).inputs[0];
         const d = q.data.flat(Infinity);
         process.stdout.write(JSON.stringify({inputs: [{name: q.name, shape: [64, 1, 8, 8], datatype: "FP32",
             data: Array.from({length: 64}, () => d).flat()}]}));' >"$WORK/batch64.json"
curl -sS -m 60 --limit-rate 16k -H 'Content-Type: application/json' --data-binary @"$WORK/batch64.json" \
    -o "$WORK/inflight.json" -w '%{http_code}' "$URL/v2/models/digits/infer" >"$WORK/inflight.code" 2>"$WORK/inflight.err" &
INFLIGHT=$!
BG_PIDS+=("$INFLIGHT")
sleep 1.5
log "podman stop -t $STOP_TIMEOUT $NAME (one request in flight)"
T_STOP=$(now)
quiet podman stop -t "$STOP_TIMEOUT" "$NAME" >/dev/null
TIMING[stop]=$(elapsed "$T_STOP")
wait "$INFLIGHT" || true
code=$(podman inspect -f '{{.State.ExitCode}}' "$NAME")
log "[timing] stop: ${TIMING[stop]} s, exit code $code"
podman logs "$NAME" >"$WORK/run.log" 2>&1
[ "$code" = 0 ] || die "convserve exited $code after SIGTERM"
awk -v s="${TIMING[stop]}" -v g="$STOP_TIMEOUT" 'BEGIN { exit !(s < g) }' ||
    die "stop took ${TIMING[stop]} s: not within the ${STOP_TIMEOUT} s grace period (SIGKILL?)"
grep -q "SIGTERM received" "$WORK/run.log" || die "no 'SIGTERM received' in the log"
grep -q "stopped" "$WORK/run.log" || die "no 'stopped' in the log"
inflight_code=$(cat "$WORK/inflight.code")
if [ "$inflight_code" = 200 ]; then
    json_check "$WORK/inflight.json" "r.outputs[0].shape[0] === 64 && Array.from({length: 64}, (_, i) =>
        ($argmax)(r.outputs[0].data.slice(i * 10, i * 10 + 10))).every((c) => c === 3)" \
        "request in flight at SIGTERM finished: 64 x class 3"
else
    die "the in-flight request got HTTP $inflight_code $(cat "$WORK/inflight.json" "$WORK/inflight.err" 2>/dev/null)"
fi

# ---- 10. read-only root, own model repository mounted on /models, settings from the environment ----
mkdir -p "$WORK/models"
cp -r config/models/digits "$WORK/models/"
chmod -R a+rX "$WORK"
log "podman run --read-only with only the digits model mounted on /models"
quiet podman run -d --name "$NAME_RO" --read-only --tmpfs /tmp -p "127.0.0.1:$PORT_RO:9000" \
    -v "$WORK/models:/models:ro" -e CONVSERVE_PORT=9000 -e CONVSERVE_INFER_THREADS=1 \
    -e CONVSERVE_LOG_LEVEL=debug "$IMAGE" >/dev/null
wait_ready "$PORT_RO" "$NAME_RO"
URL_RO=http://127.0.0.1:$PORT_RO
curl -fsS -m 10 -T examples/3.png "$URL_RO/predictions/digits" -o "$WORK/ro.json" || die "read-only container: predict"
json_check "$WORK/ro.json" "r.predictions[0].top[0].label === '3'" "read-only container, mounted models -> label \"3\""
[ "$(curl -s -m 10 -o /dev/null -w '%{http_code}' "$URL_RO/v2/models/cnn_bn")" = 404 ] ||
    die "the mounted repository did not replace the shipped one (cnn_bn is still served)"
log "ok: only the mounted models are served"
podman healthcheck run "$NAME_RO" >/dev/null 2>&1 || die "healthcheck with CONVSERVE_PORT=9000"
log "ok: HEALTHCHECK follows CONVSERVE_PORT"
quiet podman stop -t "$STOP_TIMEOUT" "$NAME_RO" >/dev/null
[ "$(podman inspect -f '{{.State.ExitCode}}' "$NAME_RO")" = 0 ] || die "read-only container exited non-zero"

# ---- 11. report ----
size=$(podman image inspect -f '{{.Size}}' "$IMAGE")
echo "---- container test report"
printf '  image %s: %s bytes (%.1f MB)\n' "$IMAGE" "$size" "$(awk -v s="$size" 'BEGIN { print s / 1e6 }')"
for k in apt-install base-image npm-install build start-to-ready stop; do
    [ -n "${TIMING[$k]:-}" ] && printf '  %-15s %8s s\n' "$k" "${TIMING[$k]}"
done
printf '  %-15s %8s s\n' total "$(elapsed "$T_ALL")"
