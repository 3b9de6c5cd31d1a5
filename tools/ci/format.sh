#!/usr/bin/env bash
# format.sh - fails when a C source differs from what .clang-format asks for.
set -euo pipefail
cd "$(dirname "$0")/../.."
files=$(git ls-files 'engine/*.[ch]' 'server/*.[ch]' 'tests/unit/*.[ch]' 'tests/fuzz/*.[ch]' 'bench/*.c')
clang-format --dry-run -Werror $files
echo "format: $(echo "$files" | wc -w) files match .clang-format"
