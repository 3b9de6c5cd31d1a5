#!/usr/bin/env bash
# run.sh - the browser test of the page and the API docs (test_ui.mjs) in Debian's chromium.
#
#   tests/ui/run.sh --binary build/convserve [--out build/ui-screenshots]
#
# Installs playwright-core, pinned by tests/ui/package-lock.json, with npm ci into a cache folder
# (default build/ui-tools, or $CONVSERVE_UI_TOOLS) once; it drives /usr/bin/chromium (tools/deps.sh
# test installs it) and never downloads a browser. Screenshots land in --out.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BINARY="" OUT="$ROOT/build/ui-screenshots" MODELS="$ROOT/config/models"
while [ $# -gt 0 ]; do
    case $1 in
    --binary) BINARY=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --models) MODELS=$2; shift 2 ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ -n "$BINARY" ] || { echo "run.sh: --binary is required" >&2; exit 2; }
for tool in node npm "${CHROMIUM:-/usr/bin/chromium}"; do
    command -v "$tool" >/dev/null || { echo "run.sh: $tool is missing; tools/deps.sh test installs it" >&2; exit 1; }
done

DIR=${CONVSERVE_UI_TOOLS:-$ROOT/build/ui-tools}
if ! cmp -s "$HERE/package-lock.json" "$DIR/package-lock.json" || [ ! -d "$DIR/node_modules/playwright-core" ]; then
    echo "run.sh: installing playwright-core into $DIR" >&2
    mkdir -p "$DIR"
    cp "$HERE/package.json" "$HERE/package-lock.json" "$DIR/"
    # No browser download (playwright-core has none), no telemetry, no audit.
    (cd "$DIR" && npm ci --no-audit --no-fund --loglevel=error >&2)
fi
export UI_TOOLS=$DIR
exec node "$HERE/test_ui.mjs" --binary "$BINARY" --models "$MODELS" --root "$ROOT" --out "$OUT"
