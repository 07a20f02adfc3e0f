#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
#
# Checks `make install` and `make uninstall` into a temporary DESTDIR: the plugin lands in
# GStreamer's plugin folder as pkg-config names it (as root; the user's folder otherwise), loads
# there with no GST_PLUGIN_PATH, and uninstall removes exactly that file.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT
if [ "$(id -u)" -eq 0 ]; then
    dir=$(pkg-config --variable=pluginsdir gstreamer-1.0)
else
    dir="${XDG_DATA_HOME:-$HOME/.local/share}/gstreamer-1.0/plugins"
fi

make --no-print-directory install DESTDIR="$dest"
installed="$dest$dir/libgstbgaudio.so"
[ -f "$installed" ] || { echo "FAIL: $installed was not installed" >&2; exit 1; }
# Exactly one file was installed.
count=$(find "$dest" -type f | wc -l)
[ "$count" -eq 1 ] || { echo "FAIL: make install left $count files under DESTDIR" >&2; exit 1; }

# It is a loadable GStreamer plugin with the element (the folder stands in for the real one).
out=$(env -u GST_PLUGIN_PATH GST_PLUGIN_SYSTEM_PATH="$dest$dir" GST_REGISTRY="$dest/registry.bin" \
    gst-inspect-1.0 bgaudiosrc)
grep -q "Version *$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)" <<<"$out" \
    || { echo "FAIL: the installed plugin does not report the crate's version" >&2; exit 1; }
rm -f "$dest/registry.bin"

make --no-print-directory uninstall DESTDIR="$dest"
[ ! -e "$installed" ] || { echo "FAIL: make uninstall left $installed" >&2; exit 1; }
left=$(find "$dest" -type f | wc -l)
[ "$left" -eq 0 ] || { echo "FAIL: $left files left after uninstall" >&2; exit 1; }
echo "install check: 1 passed, 0 failed"
