#!/usr/bin/env bash
# serve.sh - installs what is missing, builds a Release binary and serves config/models on :8080.
# Extra arguments go to convserve (e.g. --port 9000); see build/convserve --help.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/deps.sh serve
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target convserve convserve-engine
# OpenMP threads that sleep while they wait, rather than spin: measured best on 2 vCPUs (README,
# "Instances, threads and batching"); libgomp reads it when the process starts.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
exec build/convserve --models config/models "$@"
