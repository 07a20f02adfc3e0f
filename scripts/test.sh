#!/usr/bin/env bash
# SPDX-License-Identifier: MIT OR Apache-2.0
#
# `make test`: the test suite (`cargo test`), then the README's examples (examples/readme_*) as a
# user runs them, headless: into "fakesink sync=true", in real time, about 3.5 s each. The Rust
# ones always; the Python ones when a python3 with PyGObject for GStreamer (Debian's python3-gi
# and gir1.2-gstreamer-1.0) is there, against the plugin built here (GST_PLUGIN_PATH). Ends with
# one line saying what ran and passed; fails as soon as anything fails.
#
# Environment: CARGO (default cargo), CARGO_FLAGS (default --locked), TARGET_DIR (default
# $CARGO_TARGET_DIR, else target), PYTHON (default: python3, else /usr/bin/python3, the
# interpreter python3-gi is for).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo=${CARGO:-cargo}
read -ra cargo_flags <<<"${CARGO_FLAGS---locked}"
target_dir=${TARGET_DIR:-${CARGO_TARGET_DIR:-target}}
sink="fakesink sync=true"

step="cargo test"
trap 'status=$?; [ $status -eq 0 ] || echo "make test: FAILED in $step (exit status $status)" >&2' EXIT

# 1. The test suite. Its output is shown as it comes and kept to count the tests from cargo's
# "test result: ok. 12 passed; 0 failed; 1 ignored; …" lines.
log=$(mktemp)
"$cargo" test "${cargo_flags[@]}" | tee "$log" || { rm -f "$log"; exit 1; }
read -r passed ignored < <(awk '/^test result:/ {
        for (i = 2; i <= NF; i++) {
            if ($i ~ /^passed/) p += $(i - 1)
            if ($i ~ /^ignored/) g += $(i - 1)
        }
    }
    END { print p + 0, g + 0 }' "$log")
rm -f "$log"

# 2. The README's Rust examples. They register the plugin statically.
rust_examples=(examples/readme_*.rs)
for file in "${rust_examples[@]}"; do
    name=$(basename "$file" .rs)
    step="$file"
    echo "--- $file"
    "$cargo" run "${cargo_flags[@]}" --example "$name" -- "$sink"
done

# 3. The README's Python examples, when there is a python3 that has PyGObject for GStreamer.
has_gst_gi() {
    command -v "$1" >/dev/null 2>&1 &&
        "$1" -c 'import gi; gi.require_version("Gst", "1.0")' >/dev/null 2>&1
}
python=
for candidate in ${PYTHON:-python3 /usr/bin/python3}; do
    if has_gst_gi "$candidate"; then
        python=$candidate
        break
    fi
done

python_examples=(examples/readme_*.py)
if [ -n "$python" ]; then
    step="cargo build (the plugin for the Python examples)"
    "$cargo" build "${cargo_flags[@]}" --lib
    plugin_dir=$(cd "$target_dir/debug" && pwd)
    [ -e "$plugin_dir/libgstbgaudio.so" ] || {
        echo "make test: no libgstbgaudio.so in $plugin_dir (is TARGET_DIR right?)" >&2
        exit 1
    }
    for file in "${python_examples[@]}"; do
        step="$file"
        echo "--- $file ($python, GST_PLUGIN_PATH=$plugin_dir)"
        GST_PLUGIN_PATH="$plugin_dir${GST_PLUGIN_PATH:+:$GST_PLUGIN_PATH}" "$python" "$file" "$sink"
    done
    python_summary="${#python_examples[@]} Python"
else
    python_summary="Python skipped (python3-gi not installed: ${PYTHON:-python3} cannot import gi with Gst 1.0)"
fi

summary="make test: $passed tests passed (cargo test)"
[ "$ignored" -eq 0 ] || summary+=", $ignored ignored"
summary+="; README examples passed: ${#rust_examples[@]} Rust, $python_summary"
echo "$summary"
