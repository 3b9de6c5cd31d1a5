#!/usr/bin/env bash
# deps.sh - installs the Debian 12 packages convserve needs (only the missing ones).
# Usage: tools/deps.sh [serve|test]   (serve: build and run; test: also PyTorch and test tools)
set -euo pipefail

serve=(build-essential cmake pkg-config curl ca-certificates
       libdnnl-dev libmicrohttpd-dev libjansson-dev libstb-dev zlib1g-dev libturbojpeg0-dev
       libspng-dev)
test=(python3 python3-torch python3-torchvision python3-numpy python3-sklearn python3-pil clang clang-format libclang-rt-14-dev
      wrk valgrind chromium fonts-dejavu-core)  # chromium: the browser test of the page (tests/ui)

want=("${serve[@]}")
[ "${1:-serve}" = test ] && want+=("${test[@]}")

missing=()
# The API description is validated, and the page tested, with npm tools; take Node.js from Debian only when there is
# none yet (a machine may have a newer one from elsewhere, which Debian's npm would conflict with).
if [ "${1:-serve}" = test ] && ! command -v npm >/dev/null; then
    want+=(nodejs npm)
fi
for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
echo "installing: ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q >/dev/null
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
