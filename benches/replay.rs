// SPDX-License-Identifier: MIT OR Apache-2.0

//! In-process cost of one 20 ms buffer (48 kHz stereo S16), pulled straight from the element
//! with gst_check::Harness (no pipeline threads, no clock), against `audiotestsrc
//! wave=silence` in the same harness:
//!
//!     cargo bench --bench replay
//!
//! `bgaudiosrc` loops the shipped clip from its decoded cache: at volume 1.0 buffers share the
//! cache's memory, at 0.5 every sample goes through the gain stage once.

use criterion::{criterion_group, criterion_main, Criterion};

const CAPS: &str = "audio/x-raw,format=S16LE,layout=interleaved,rate=48000,channels=2";

fn harness(desc: &str) -> gst_check::Harness {
    let mut h = gst_check::Harness::new_parse(&format!("{desc} ! capsfilter caps={CAPS}"));
    h.play();
    // The first pass decodes the clip; pull past it so only replays are measured.
    for _ in 0..1000 {
        h.pull().expect("buffer");
    }
    h
}

fn replay(c: &mut Criterion) {
    gst::init().expect("gst init");
    gstbgaudio::plugin_register_static().expect("register");
    let clip = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/ambience.ogg");

    let mut group = c.benchmark_group("one 20 ms buffer");
    let mut floor = harness("audiotestsrc wave=silence samplesperbuffer=960");
    group.bench_function("audiotestsrc wave=silence", |b| {
        b.iter(|| floor.pull().expect("buffer"))
    });
    for volume in [1.0, 0.5] {
        let mut h = harness(&format!(
            "bgaudiosrc location={clip} loop=true volume={volume}"
        ));
        group.bench_function(format!("bgaudiosrc volume={volume}"), |b| {
            b.iter(|| h.pull().expect("buffer"))
        });
    }
    group.finish();
}

criterion_group!(benches, replay);
criterion_main!(benches);
