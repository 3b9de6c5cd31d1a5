#!/usr/bin/env bash
# test.sh - installs what is missing, builds (warnings are errors) and runs every test with CTest.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/deps.sh test
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DWERROR=ON >/dev/null
cmake --build build -j"$(nproc)"
cd build
# As the server ships (tools/serve.sh, the image): OpenMP threads sleep while they wait. With
# libgomp's spinning, a busy machine (other builds, a browser) made the engine tests 15-45x slower.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
ctest --output-on-failure --timeout 600
