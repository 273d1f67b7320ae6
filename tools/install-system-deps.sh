#!/usr/bin/env bash
# Installs the Debian packages the test suite needs, only those that are missing:
# PostgreSQL + PostGIS (the real STAC API server) and Chromium + ChromeDriver (browser tests).
set -euo pipefail
packages=(postgresql postgresql-15-postgis-3 chromium chromium-driver)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
    echo "system packages present: ${packages[*]}"
    exit 0
fi
echo "installing system packages: ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-upgrade "${missing[@]}"
