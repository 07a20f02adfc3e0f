// SPDX-License-Identifier: MIT OR Apache-2.0

//! The file's tags go downstream as a TAG event, from a copy of one's own and from a shared one.

mod common;

use common::*;
use gst::prelude::*;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// 1 s of Ogg/Vorbis with a title and an artist in its comments.
fn tagged() -> PathBuf {
    let path = fixture_dir("tags").join("tagged-v2.ogg");
    if !path.exists() {
        // The tests here run side by side: each writes a file of its own, and whichever
        // finishes first renames it into place.
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let tmp = path.with_extension(format!("part{}-{n}", std::process::id()));
        run(&format!(
            "audiotestsrc num-buffers=48 samplesperbuffer=1000 \
             ! audio/x-raw,rate=48000,channels=2 ! audioconvert \
             ! taginject tags=\"title=Ambience,artist=Recorder\" \
             ! vorbisenc ! oggmux ! filesink location=\"{}\"",
            tmp.display()
        ));
        std::fs::rename(&tmp, &path).unwrap();
    }
    path
}

/// What `bgaudiosrc` (named `bg`) sends on its pad: the TAG events, and the order of flushes
/// (`F`), segments (`S`), tags (`T`) and runs of buffers (`B`).
type Seen = Arc<Mutex<(Vec<gst::TagList>, String)>>;

/// `bgaudiosrc name=bg location=path ! S16 ! appsink name=sink sync=false`, watched (`Seen`).
fn watched(path: &std::path::Path) -> (gst::Pipeline, Seen) {
    let pipeline = pipeline(&format!(
        "bgaudiosrc name=bg location=\"{}\" ! {} ! appsink name=sink sync=false",
        path.display(),
        s16("")
    ));
    let seen = Seen::default();
    let events = seen.clone();
    pipeline
        .by_name("bg")
        .unwrap()
        .static_pad("src")
        .unwrap()
        .add_probe(
            gst::PadProbeType::EVENT_DOWNSTREAM
                | gst::PadProbeType::EVENT_FLUSH
                | gst::PadProbeType::BUFFER,
            move |_, info| {
                let mut seen = events.lock().unwrap();
                match &info.data {
                    Some(gst::PadProbeData::Event(event)) => match event.view() {
                        gst::EventView::Tag(tag) => {
                            seen.0.push(tag.tag_owned());
                            seen.1.push('T');
                        }
                        gst::EventView::Segment(_) => seen.1.push('S'),
                        gst::EventView::FlushStop(_) => seen.1.push('F'),
                        _ => (),
                    },
                    Some(gst::PadProbeData::Buffer(_)) if !seen.1.ends_with('B') => {
                        seen.1.push('B')
                    }
                    _ => (),
                }
                gst::PadProbeReturn::Ok
            },
        );
    (pipeline, seen)
}

/// The TAG events `bgaudiosrc` pushes while playing `path` to its end, and the order of
/// segments, tags and buffers on its pad (see `Seen`).
fn tags_of(path: &std::path::Path) -> (Vec<gst::TagList>, String) {
    let (pipeline, seen) = watched(path);
    let out = collect_pipeline(&pipeline, None);
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(out.eos);
    let seen = seen.lock().unwrap();
    (seen.0.clone(), seen.1.clone())
}

#[test]
fn the_files_tags_go_downstream() {
    init();
    let path = tagged();
    // The first element decodes the file; the second shares the complete copy.
    for run in ["decoding", "sharing"] {
        let (tags, order) = tags_of(&path);
        assert!(!tags.is_empty(), "{run}: a TAG event");
        let last = tags.last().unwrap();
        assert_eq!(
            last.get::<gst::tags::Title>().map(|t| t.get().to_owned()),
            Some("Ambience".to_owned()),
            "{run}: {last}"
        );
        assert_eq!(
            last.get::<gst::tags::Artist>().map(|t| t.get().to_owned()),
            Some("Recorder".to_owned()),
            "{run}: {last}"
        );
        // Right after the segment (sticky events in order), before the first buffer.
        assert!(order.starts_with("STB"), "{run}: {order}");
        // Once, unless the decoder found more on the way.
        assert!(tags.len() <= 2, "{run}: {tags:?}");
    }
}

#[test]
fn the_tags_follow_the_new_segment_after_a_flushing_seek() {
    init();
    let path = tagged();
    let (pipeline, seen) = watched(&path);
    pipeline.set_state(gst::State::Paused).unwrap();
    assert!(pipeline.state(gst::ClockTime::from_seconds(10)).0.is_ok());
    for _ in 0..3 {
        pipeline
            .seek_simple(
                gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE,
                gst::ClockTime::from_mseconds(500),
            )
            .unwrap();
        assert!(pipeline.state(gst::ClockTime::from_seconds(10)).0.is_ok());
    }
    pipeline.set_state(gst::State::Null).unwrap();
    let order = &seen.lock().unwrap().1;
    // Every flush is followed by the new segment, then the tags, then the first buffer.
    let after_flushes: Vec<&str> = order.split('F').skip(1).collect();
    assert_eq!(after_flushes.len(), 3, "{order}");
    for after in after_flushes {
        assert!(after.starts_with("STB"), "{order}");
    }
}
