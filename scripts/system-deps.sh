#!/usr/bin/env bash
# Debian packages the tests drive for real: headless Chromium for the preview page
# and WebRTC, and OBS Studio under Xvfb (software GL) as a real obs-websocket peer
# (tests/obs_studio.py). Installs only what is missing, with one apt-get update;
# needs root (CI runs as root).
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if ! command -v obs >/dev/null 2>&1 || ! command -v Xvfb >/dev/null 2>&1; then
    missing+=(obs-studio obs-plugins xvfb xauth x11-utils
              libgl1-mesa-dri libglx-mesa0 libegl-mesa0 libegl1)
fi
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "system-deps: need root to install: ${missing[*]} (or install them yourself)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" fonts-dejavu-core >/dev/null
