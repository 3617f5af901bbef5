#!/usr/bin/env bash
# Runs every Go fuzz target of the module for a while each.
# Usage: scripts/fuzz.sh [DURATION]   (default 10s; CI uses a few seconds)
set -euo pipefail
cd "$(dirname "$0")/.."
time="${1:-10s}"
status=0
while IFS= read -r file; do
  pkg="./$(dirname "$file")"
  for target in $(grep -oE '^func (Fuzz[A-Za-z0-9_]+)' "$file" | awk '{print $2}'); do
    echo "fuzz: $pkg $target ($time)"
    if ! go test -run=NONE -fuzz="^${target}\$" -fuzztime="$time" "$pkg"; then
      status=1
    fi
  done
done < <(grep -rl --include='*_test.go' -E '^func Fuzz' . | grep -v '^./gen/' | sed 's|^\./||' | sort)
exit $status
