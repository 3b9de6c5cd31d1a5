#!/usr/bin/env bash
# tools/check_openapi.sh - validates openapi.yaml with Redocly CLI: the OpenAPI 3.0.3 structure,
# $refs, examples against their schemas (no-invalid-media-type-examples, ...) and Redocly's
# recommended rules with warnings counted as errors. Exits non-zero on any problem.
#
#   tools/check_openapi.sh [SPEC]          default SPEC: openapi.yaml at the repository root
#
# Redocly CLI is installed once with npm into a cache folder (default build/openapi-tools, or
# $CONVSERVE_OPENAPI_TOOLS) and reused; after that the check runs offline in a few seconds.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SPEC=${1:-$ROOT/openapi.yaml}
DIR=${CONVSERVE_OPENAPI_TOOLS:-$ROOT/build/openapi-tools}
# Pinned: the 1.x line, whose dependencies all resolve on the registry (1.34.21's do not).
VERSION=1.34.20
BIN=$DIR/node_modules/.bin/redocly

if [[ ! -f $SPEC ]]; then
    echo "check_openapi: $SPEC not found" >&2
    exit 2
fi

if [[ ! -x $BIN || "$(cat "$DIR/.redocly-version" 2>/dev/null)" != "$VERSION" ]]; then
    if ! command -v npm >/dev/null; then
        echo "check_openapi: npm is needed to install @redocly/cli (apt-get install npm)" >&2
        exit 2
    fi
    echo "check_openapi: installing @redocly/cli@$VERSION into $DIR" >&2
    mkdir -p "$DIR"
    rm -f "$DIR/.redocly-version"
    npm install --prefix "$DIR" --no-audit --no-fund --loglevel=error "@redocly/cli@$VERSION" >&2
    echo "$VERSION" >"$DIR/.redocly-version"
fi

# The project has no license to name, so the license rules are off; everything else of
# recommended-strict applies (its warnings are errors).
CONFIG=$DIR/redocly.yaml
cat >"$CONFIG" <<'EOF'
extends:
  - recommended-strict
rules:
  info-license: off
  info-license-url: off
  info-license-strict: off
EOF

# No telemetry, no update check: the lint itself needs no network.
export REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true NO_UPDATE_NOTIFIER=1
"$BIN" lint --config "$CONFIG" --format stylish "$SPEC"
echo "check_openapi: $SPEC is valid"
