#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
#
# Regenerates assets/ambience.ogg: an 8 s synthetic ambience that loops without a seam, made
# with GStreamer alone (`make deps` installs everything it needs).
#
# Seamless loop: the clip is exactly 8 s (384000 frames at 48 kHz) and every frequency is a
# multiple of 1/8 Hz, so every sine completes a whole number of periods and the last sample
# leads straight back into the first.
#
# Sound: a just-intonation A major chord (110, 165, 220, 275, 330 Hz; ratios 2:3:4:5:6 over
# 55 Hz, so no beating between chord tones) with two detuned partners panned to the other side
# (220.25 Hz and 330.125 Hz), which swell and move across the stereo image every 4 s and 8 s.
#
# Usage: scripts/make-clip.sh [OUTPUT]   (default: assets/ambience.ogg)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${1:-assets/ambience.ogg}

rate=48000
seconds=8
samples_per_buffer=4800 # 100 ms
num_buffers=$((rate * seconds / samples_per_buffer))

if ! command -v gst-launch-1.0 >/dev/null 2>&1; then
    echo "$0: gst-launch-1.0 not found; run scripts/install-deps.sh first" >&2
    exit 1
fi

# One sine, panned, into the mixer: tone FREQ VOLUME PAN
tone() {
    echo "audiotestsrc wave=sine freq=$1 volume=$2 num-buffers=$num_buffers" \
        "samplesperbuffer=$samples_per_buffer" \
        "! audio/x-raw,format=F32LE,rate=$rate,channels=1" \
        "! audiopanorama panorama=$3 ! mix."
}

mkdir -p "$(dirname "$out")"
tmp="$out.tmp"
trap 'rm -f "$tmp"' EXIT

# The volumes sum to 1.0, so nothing clips even if every peak met in one channel. The mixer
# works in F32, which audioconvert hands to vorbisenc unchanged.
# shellcheck disable=SC2046 # tone's words are meant to be split into pipeline arguments
gst-launch-1.0 -q \
    audiomixer name=mix \
    ! "audio/x-raw,format=F32LE,rate=$rate,channels=2" \
    ! audioconvert ! vorbisenc quality=0.3 ! oggmux ! filesink location="$tmp" \
    $(tone 110 0.25 0.0) \
    $(tone 165 0.16 -0.3) \
    $(tone 220 0.16 -0.6) \
    $(tone 220.25 0.11 0.6) \
    $(tone 275 0.11 0.3) \
    $(tone 330 0.12 0.6) \
    $(tone 330.125 0.09 -0.6)

mv "$tmp" "$out"
trap - EXIT
echo "Wrote $out ($(stat -c %s "$out") bytes, ${seconds} s, ${rate} Hz stereo)"
