#!/usr/bin/env bash
# Installs the system packages p2pd's demo and tests use, if any is missing.
# Debian/Ubuntu; needs root (or sudo) only when something has to be installed.
set -euo pipefail
need=()
command -v curl >/dev/null 2>&1 || need+=(curl)
# cc and c++: build scripts, and libFuzzer (C++) for scripts/fuzz.sh.
{ command -v cc && command -v c++; } >/dev/null 2>&1 || need+=(build-essential)
# ffmpeg and ffprobe (one package): the cache tests play real media through the proxy.
{ command -v ffmpeg && command -v ffprobe; } >/dev/null 2>&1 || need+=(ffmpeg)
if [ ${#need[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    echo "installing: ${need[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: install a Rust toolchain (https://rustup.rs) first" >&2
    exit 1
fi
