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
        let tmp = path.with_extension("part");
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

/// The TAG events `bgaudiosrc` pushes while playing `path` to its end, and the buffers before
/// the first one.
fn tags_of(path: &std::path::Path) -> (Vec<gst::TagList>, usize) {
    let pipeline = pipeline(&format!(
        "bgaudiosrc name=bg location=\"{}\" ! {} ! appsink name=sink",
        path.display(),
        s16("")
    ));
    let seen = Arc::new(Mutex::new((Vec::new(), 0usize)));
    let events = seen.clone();
    pipeline
        .by_name("bg")
        .unwrap()
        .static_pad("src")
        .unwrap()
        .add_probe(
            gst::PadProbeType::EVENT_DOWNSTREAM | gst::PadProbeType::BUFFER,
            move |_, info| {
                let mut seen = events.lock().unwrap();
                match &info.data {
                    Some(gst::PadProbeData::Event(event)) => {
                        if let gst::EventView::Tag(tag) = event.view() {
                            seen.0.push(tag.tag_owned());
                        }
                    }
                    Some(gst::PadProbeData::Buffer(_)) if seen.0.is_empty() => seen.1 += 1,
                    _ => (),
                }
                gst::PadProbeReturn::Ok
            },
        );
    let out = collect_pipeline(&pipeline, None);
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(out.eos);
    let seen = seen.lock().unwrap();
    (seen.0.clone(), seen.1)
}

#[test]
fn the_files_tags_go_downstream() {
    init();
    let path = tagged();
    // The first element decodes the file; the second shares the complete copy.
    for run in ["decoding", "sharing"] {
        let (tags, buffers_before) = tags_of(&path);
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
        // After the first buffer (and its segment), never before.
        assert!(buffers_before >= 1, "{run}");
        // Once, unless the decoder found more on the way.
        assert!(tags.len() <= 2, "{run}: {tags:?}");
    }
}
