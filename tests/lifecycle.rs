// SPDX-License-Identifier: MIT OR Apache-2.0

//! Starting and stopping, again and again, with good and bad files: nothing is left behind (file
//! descriptors, threads) and the element plays the same on every start.

mod common;

use common::*;
use gst::prelude::*;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

fn threads() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:").map(|v| v.trim().parse().ok()))
                .flatten()
        })
        .unwrap_or(0)
}

/// One cycle: play a looping file until 3 buffers arrived (stopping mid-decode), then NULL; then
/// a missing file to NULL.
fn cycle(good: &std::path::Path, missing: &std::path::Path) -> Vec<i16> {
    let out = bgaudio(good, "loop=true", &s16(""), Some(3 * 882));
    assert!(out.error.is_none(), "{:?}", out.error);
    let bad = bgaudio(missing, "", &s16(""), None);
    assert!(bad.error.is_some());
    out.samples
}

#[test]
fn repeated_start_stop_leaks_no_descriptors_or_threads() {
    init();
    let dir = fixture_dir("lifecycle");
    let good = dir.join("long.ogg");
    // 20 s: every cycle stops while the first pass is still decoding.
    make_sine(&good, 44_100, 2, 440.0, 882_000, "vorbisenc ! oggmux");
    let missing = dir.join("missing.ogg");

    let first = cycle(&good, &missing);
    for _ in 0..5 {
        cycle(&good, &missing);
    }
    let (fds, thr) = (open_fds(), threads());
    for _ in 0..40 {
        // Every start plays the same samples.
        assert_eq!(cycle(&good, &missing), first);
    }
    let (fds_after, thr_after) = (open_fds(), threads());
    assert!(fds_after <= fds + 2, "descriptors {fds} -> {fds_after}");
    assert!(thr_after <= thr + 2, "threads {thr} -> {thr_after}");
}

#[test]
fn paused_to_ready_and_back_restarts_from_the_beginning() {
    init();
    let dir = fixture_dir("lifecycle");
    let path = dir.join("short.wav");
    make_sine(&path, 8_000, 1, 400.0, 4_000, "wavenc");
    let pipeline = pipeline(&format!(
        "bgaudiosrc location=\"{}\" ! {} ! appsink name=sink",
        path.display(),
        s16("")
    ));
    let first = collect_pipeline(&pipeline, None);
    let second = collect_pipeline(&pipeline, None);
    assert!(first.eos && second.eos);
    assert_eq!(first.samples.len(), 4_000);
    assert_eq!(first.samples, second.samples);
    assert_eq!(second.buffers[0].0, Some(gst::ClockTime::ZERO));
}
