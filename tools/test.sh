#!/usr/bin/env bash
# test.sh - installs what is missing, builds (warnings are errors) and runs every test with CTest.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/deps.sh test
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DWERROR=ON >/dev/null
cmake --build build -j"$(nproc)"
cd build
ctest --output-on-failure --timeout 600
