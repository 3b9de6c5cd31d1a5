#!/usr/bin/env bash
# serve.sh - installs what is missing, builds a Release binary and serves config/models on :8080.
# Extra arguments go to convserve (e.g. --port 9000); see build/convserve --help.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/deps.sh serve
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target convserve convserve-engine
exec build/convserve --models config/models "$@"
