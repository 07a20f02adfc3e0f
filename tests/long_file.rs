// SPDX-License-Identifier: MIT OR Apache-2.0

//! A file that decodes to more than `max-cache-size` is not cached: it loops by seeking the
//! internal decoder back to its start, seamlessly, with timestamps contiguous and memory flat.

mod common;

use common::*;
use gst::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

#[test]
fn a_long_file_loops_by_seeking_with_flat_memory() {
    init();
    // 60 s of 48 kHz stereo: 11.5 MB decoded, against a 1 MB limit. 441 Hz does not divide
    // the length, so a seam that lost or repeated samples would show.
    const FRAMES: usize = 2_880_000;
    let path = fixture_dir("long_file").join("sixty-seconds.wav");
    make_sine(&path, 48_000, 2, 441.0, FRAMES as u64, "wavenc");
    let caps = s16(",rate=48000,channels=2");
    let reference = bgaudio(&path, "max-cache-size=1000000", &caps, None);
    assert!(reference.eos, "{:?}", reference.error);
    assert_eq!(reference.samples.len(), 2 * FRAMES);
    let reference = Arc::new(reference.samples);
    let frames_per_pass = (reference.len() / 2) as u64;

    let pipeline = pipeline(&format!(
        "bgaudiosrc location=\"{}\" loop=true max-cache-size=1000000 ! {caps} \
         ! appsink name=sink sync=false",
        path.display()
    ));
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    // Compare every sample on the fly (keeping none) and check the stamps.
    let frames = Arc::new(AtomicU64::new(0));
    let broken = Arc::new(AtomicBool::new(false));
    let (frames_cb, broken_cb, reference_cb) = (frames.clone(), broken.clone(), reference.clone());
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Flushing)?;
                let buffer = sample.buffer().ok_or(gst::FlowError::Error)?;
                let start = frames_cb.load(Ordering::SeqCst);
                let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
                let n = (map.len() / 4) as u64;
                let stamps_ok = buffer.offset() == start
                    && buffer.pts()
                        == Some(gst::ClockTime::from_nseconds(
                            start * 1_000_000_000 / 48_000,
                        ));
                let samples_ok = map.chunks_exact(2).enumerate().all(|(i, b)| {
                    let expect = reference_cb[(start as usize * 2 + i) % reference_cb.len()];
                    i16::from_ne_bytes([b[0], b[1]]) == expect
                });
                if !(stamps_ok && samples_ok) {
                    broken_cb.store(true, Ordering::SeqCst);
                }
                frames_cb.store(start + n, Ordering::SeqCst);
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );

    let rss_before = rss_bytes();
    pipeline.set_state(gst::State::Playing).unwrap();
    let wait_for = |target: u64| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while frames.load(Ordering::SeqCst) < target {
            assert!(std::time::Instant::now() < deadline, "stalled");
            assert!(!broken.load(Ordering::SeqCst), "output differs");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    };
    wait_for(frames_per_pass * 3 + frames_per_pass / 2);
    let rss_late = rss_bytes();
    pipeline.set_state(gst::State::Null).unwrap();

    assert!(
        !broken.load(Ordering::SeqCst),
        "output differs from the file across a seam"
    );
    // Three seams passed; a cached copy would have added 11.5 MB.
    let growth = rss_late.saturating_sub(rss_before);
    assert!(growth < 2_000_000, "resident memory grew by {growth} bytes");
    // Not a shared decoded copy.
    assert_eq!(gstbgaudio::cache_usage().entries, 0);
}
