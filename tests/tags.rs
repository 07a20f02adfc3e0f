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
    make_once(&path, |tmp| {
        run(&format!(
            "audiotestsrc num-buffers=48 samplesperbuffer=1000 \
             ! audio/x-raw,rate=48000,channels=2 ! audioconvert \
             ! taginject tags=\"title=Ambience,artist=Recorder\" \
             ! vorbisenc ! oggmux ! filesink location=\"{}\"",
            tmp.display()
        ))
    });
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

fn title_of(tags: &[gst::TagList]) -> Option<String> {
    tags.iter()
        .rev()
        .find_map(|t| t.get::<gst::tags::Title>().map(|t| t.get().to_owned()))
}

/// Tags at the end of a file reach downstream: an ID3v1 tag after an MP3's frames (the only tag
/// of many MP3s), and a WAV's LIST chunk after its data (where wavenc writes it). Their readers
/// (id3demux, wavparse) pull to reach the end, as in decodebin.
#[test]
fn tags_at_the_end_of_the_file_go_downstream() {
    init();
    let dir = fixture_dir("tags");
    let mp3 = dir.join("id3v1-only.mp3");
    make_once(&mp3, |tmp| {
        run(&format!(
            "audiotestsrc num-buffers=48 samplesperbuffer=1000 \
             ! audio/x-raw,rate=44100,channels=2 ! lamemp3enc ! filesink location=\"{}\"",
            tmp.display()
        ));
        let mut bytes = std::fs::read(tmp).unwrap();
        bytes.extend(id3v1_tag());
        std::fs::write(tmp, bytes).unwrap();
    });
    let wav = dir.join("list-after-data.wav");
    make_once(&wav, |tmp| {
        run(&format!(
            "audiotestsrc num-buffers=48 samplesperbuffer=1000 \
             ! audio/x-raw,rate=44100,channels=2 ! wavenc ! filesink location=\"{}\"",
            tmp.display()
        ));
        // A LIST INFO chunk with a title (INAM) after the data, the RIFF size grown to match.
        let mut bytes = std::fs::read(tmp).unwrap();
        let name = b"Wav title\0";
        let mut info = b"INFO".to_vec();
        info.extend(b"INAM");
        info.extend((name.len() as u32).to_le_bytes());
        info.extend(name);
        bytes.extend(b"LIST");
        bytes.extend((info.len() as u32).to_le_bytes());
        bytes.extend(info);
        let riff = (bytes.len() - 8) as u32;
        bytes[4..8].copy_from_slice(&riff.to_le_bytes());
        std::fs::write(tmp, bytes).unwrap();
    });
    // The WAV's tags do come after its samples.
    let bytes = std::fs::read(&wav).unwrap();
    let find = |what: &[u8]| bytes.windows(what.len()).position(|w| w == what);
    assert!(find(b"LIST") > find(b"data"), "LIST before data");
    for (path, title) in [(&mp3, "Title v1"), (&wav, "Wav title")] {
        let (tags, _) = tags_of(path);
        assert_eq!(
            title_of(&tags).as_deref(),
            Some(title),
            "{}: {tags:?}",
            path.display()
        );
    }
}
