// SPDX-License-Identifier: MIT OR Apache-2.0

//! mode=mixing against a `TestClock` (gst_check's Harness): the element stamps each buffer with
//! the running time it is due at and waits on the pipeline clock for it, so the tests step the
//! clock and see exactly which buffer comes when, without real time.

mod common;

use common::*;
use gst::prelude::*;

const BUFFER: gst::ClockTime = gst::ClockTime::from_mseconds(20);

fn harness(clock_at_start: gst::ClockTime) -> (gst_check::Harness, gst_check::TestClock) {
    init();
    let path = fixture_dir("mixing_clock").join("sine.wav");
    make_sine(&path, 48_000, 2, 300.0, 48_000, "wavenc");
    let mut h = gst_check::Harness::new("bgaudiosrc");
    let bg = h.element().unwrap();
    bg.set_property("location", path.to_str().unwrap());
    bg.set_property_from_str("mode", "mixing");
    bg.set_property("loop", true);
    h.set_sink_caps_str(&s16(",rate=48000,channels=2"));
    h.use_testclock();
    let clock = h.testclock().unwrap();
    clock.set_time(clock_at_start);
    h.play();
    (h, clock)
}

#[test]
fn each_buffer_waits_for_the_clock_to_reach_its_running_time() {
    let (mut h, clock) = harness(gst::ClockTime::ZERO);
    let mut pts = Vec::new();
    for _ in 0..5 {
        // The element is waiting on the clock: nothing comes until the clock moves.
        let id = clock.wait_for_next_pending_id();
        let due = id.time();
        assert!(
            h.try_pull().is_none(),
            "a buffer before the clock reached {due}"
        );
        assert!(h.crank_single_clock_wait().is_ok());
        let buffer = h.pull().unwrap();
        assert_eq!(
            buffer.pts(),
            Some(due),
            "stamped with the time it waited for"
        );
        assert_eq!(clock.time(), due);
        pts.push(buffer.pts().unwrap());
    }
    for (i, p) in pts.iter().enumerate() {
        assert_eq!(*p, pts[0] + BUFFER * i as u64);
    }
}

/// An element started when the pipeline's running time is already 5 s (a mixer that has been
/// running) stamps its first buffer there, due at once, not at 0 (which a mixer would drop as
/// 5 s late), and goes on every 20 ms from there.
#[test]
fn the_first_buffer_is_stamped_at_the_running_time_of_the_start() {
    let (mut h, clock) = harness(gst::ClockTime::from_seconds(5));
    let bg = h.element().unwrap();
    let base = bg.base_time().unwrap();
    let running = clock.time() - base;
    assert!(running >= gst::ClockTime::from_seconds(5), "{running}");
    for i in 0..3u64 {
        let id = clock.wait_for_next_pending_id();
        assert_eq!(id.time(), base + running + BUFFER * i);
        assert!(h.crank_single_clock_wait().is_ok());
        let buffer = h.pull().unwrap();
        assert_eq!(buffer.pts(), Some(running + BUFFER * i));
        assert_eq!(buffer.duration(), Some(BUFFER));
    }
}
