#!/usr/bin/env bash
# Installs everything Orbweaver needs on a Debian/Ubuntu machine: system
# packages (PostgreSQL server binaries, libpcap headers, tshark for the
# conformance tests, wrk for the live-capture benchmark), Go modules, and the
# pinned tools (buf, protoc plugins, grpcurl) into .bin/. Safe to run again:
# it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(postgresql libpcap-dev tshark tcpdump wrk ca-certificates make gcc)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  # tshark asks whether non-root users may capture; answer no, quietly.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | $SUDO debconf-set-selections
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! command -v go >/dev/null 2>&1; then
  echo "setup: Go is required (https://go.dev/doc/install); this machine has none on PATH" >&2
  exit 1
fi
go mod download

# Pinned tools (versions live in the Makefile). Skip the slow build when present.
need_tools=0
for t in buf protoc-gen-go protoc-gen-go-grpc grpcurl; do
  [ -x ".bin/$t" ] || need_tools=1
done
if [ "$need_tools" = 1 ]; then
  echo "setup: building pinned tools into .bin/"
  make -s tools
fi

if [ -f grafana-plugin/package.json ] && command -v npm >/dev/null 2>&1; then
  (cd grafana-plugin && npm ci --no-audit --no-fund --loglevel=error)
fi
echo "setup: done"
