#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
#
# Installs the Debian packages needed to build, test and run gst-plugin-bgaudio, but only those
# that are missing: when everything is present it returns at once without touching apt.
# As root it installs them; otherwise it prints the command to run and fails.
set -euo pipefail

packages=(
    libgstreamer1.0-dev
    libgstreamer-plugins-base1.0-dev
    gstreamer1.0-plugins-base
    gstreamer1.0-plugins-good
    gstreamer1.0-libav
    gstreamer1.0-tools
    # The lame encoder CLI: tests make MP3s with and without its info tag.
    lame
)

# `db:Status-Status` is "installed" only for fully installed packages; removed-but-configured
# ("config-files") or half-installed packages count as missing.
is_installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    echo "$0: needs dpkg-query and apt-get (Debian or a derivative); install these yourself:" >&2
    echo "    ${packages[*]} pkg-config" >&2
    exit 1
fi

missing=()
for pkg in "${packages[@]}"; do
    is_installed "$pkg" || missing+=("$pkg")
done
# The gstreamer-rs build scripts find the libraries with pkg-config; the binary may come from
# either pkg-config or pkgconf, so check for the command rather than a package.
if ! command -v pkg-config >/dev/null 2>&1; then
    missing+=(pkg-config)
fi

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

if [ "${EUID}" -ne 0 ]; then
    echo "Missing Debian packages: ${missing[*]}" >&2
    echo "Install them with:" >&2
    echo "    sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
fi

echo "Installing missing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get -q update
apt-get -q install -y --no-install-recommends "${missing[@]}"
