// SPDX-License-Identifier: MIT OR Apache-2.0

//! Bad input: every case gives an ERROR on the bus within a second, with a fitting domain and
//! code and a text naming the file, and the pipeline shuts down cleanly.

mod common;

use common::*;
use gst::prelude::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn dir() -> PathBuf {
    fixture_dir("errors")
}

/// Plays `location` (or no location) and returns the first error with the time it took.
fn first_error(location: Option<&Path>) -> (gst::glib::Error, Duration) {
    init();
    let src = gst::ElementFactory::make("bgaudiosrc").build().unwrap();
    if let Some(location) = location {
        src.set_property("location", location.to_str().unwrap());
    }
    let sink = gst::ElementFactory::make("fakesink").build().unwrap();
    let pipeline = gst::Pipeline::new();
    pipeline.add_many([&src, &sink]).unwrap();
    src.link(&sink).unwrap();
    let bus = pipeline.bus().unwrap();
    let started = Instant::now();
    // Start-up failures make the state change fail; the error is on the bus either way.
    let _ = pipeline.set_state(gst::State::Playing);
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(5),
            &[gst::MessageType::Error, gst::MessageType::Eos],
        )
        .expect("an error message");
    let elapsed = started.elapsed();
    let err = match msg.view() {
        gst::MessageView::Error(e) => {
            assert_eq!(
                e.src().map(|s| s.name().to_string()),
                Some(src.name().to_string())
            );
            e.error()
        }
        other => panic!("expected an error, got {other:?}"),
    };
    assert_eq!(
        pipeline.set_state(gst::State::Null),
        Ok(gst::StateChangeSuccess::Success)
    );
    (err, elapsed)
}

fn assert_error<T: gst::MessageErrorDomain + std::fmt::Debug>(path: &Path, code: T) {
    let (err, elapsed) = first_error(Some(path));
    assert!(
        err.matches(code),
        "{}: {:?} is not {code:?}",
        path.display(),
        err
    );
    assert!(
        err.message().contains(path.to_str().unwrap()),
        "message does not name the file: {}",
        err.message()
    );
    assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
}

#[test]
fn no_location() {
    let (err, elapsed) = first_error(None);
    assert!(err.matches(gst::ResourceError::NotFound), "{err:?}");
    assert!(err.message().contains("location"));
    assert!(elapsed < Duration::from_secs(1));
}

#[test]
fn missing_file() {
    assert_error(
        &dir().join("does-not-exist.ogg"),
        gst::ResourceError::NotFound,
    );
}

#[test]
fn missing_file_as_uri() {
    init();
    let path = dir().join("also-missing.ogg");
    let uri = gst::glib::filename_to_uri(&path, None).unwrap();
    let (err, _) = first_error(Some(Path::new(uri.as_str())));
    assert!(err.matches(gst::ResourceError::NotFound), "{err:?}");
    assert!(err.message().contains(uri.as_str()));
}

#[test]
fn directory() {
    let path = dir().join("a-directory.ogg");
    std::fs::create_dir_all(&path).unwrap();
    assert_error(&path, gst::ResourceError::OpenRead);
}

#[test]
fn empty_file() {
    let path = dir().join("empty.wav");
    std::fs::write(&path, b"").unwrap();
    assert_error(&path, gst::StreamError::TypeNotFound);
}

#[test]
fn random_bytes() {
    let path = dir().join("random.mp3");
    // Deterministic noise (xorshift) that no typefinder recognises.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let bytes: Vec<u8> = (0..64 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect();
    std::fs::write(&path, bytes).unwrap();
    assert_error(&path, gst::StreamError::TypeNotFound);
}

#[test]
fn text_file() {
    let path = dir().join("notes.txt");
    std::fs::write(&path, "background music playlist\n".repeat(500)).unwrap();
    assert_error(&path, gst::StreamError::WrongType);
}

#[test]
fn video_only_file() {
    init();
    let path = dir().join("video-only.ogg");
    if !path.exists() {
        run(&format!(
            "videotestsrc num-buffers=15 ! video/x-raw,width=160,height=120 ! theoraenc ! oggmux \
             ! filesink location={}",
            path.display()
        ));
    }
    assert_error(&path, gst::StreamError::WrongType);
}

#[test]
fn codec_without_decoder() {
    init();
    // A tiny standard MIDI file: GStreamer recognises audio/midi, and the packages this project
    // installs hold no MIDI synthesiser to decode it.
    let has_midi_decoder = gst::ElementFactory::factories_with_type(
        gst::ElementFactoryType::DECODER,
        gst::Rank::MARGINAL,
    )
    .iter()
    .any(|f| f.can_sink_any_caps(&gst::Caps::builder("audio/midi").build()));
    if has_midi_decoder {
        eprintln!("skipped: this machine has a MIDI decoder");
        return;
    }
    let path = dir().join("tune.mid");
    let track = [
        0x00, 0x90, 0x3C, 0x40, 0x60, 0x80, 0x3C, 0x40, 0x00, 0xFF, 0x2F, 0x00,
    ];
    let mut midi = b"MThd".to_vec();
    midi.extend_from_slice(&6u32.to_be_bytes());
    for v in [0u16, 1, 96] {
        midi.extend_from_slice(&v.to_be_bytes());
    }
    midi.extend_from_slice(b"MTrk");
    midi.extend_from_slice(&(track.len() as u32).to_be_bytes());
    midi.extend_from_slice(&track);
    std::fs::write(&path, midi).unwrap();
    assert_error(&path, gst::CoreError::MissingPlugin);
}

#[test]
fn a_flac_file_without_frames() {
    init();
    // The header and metadata of a FLAC file, up to its first frame: the decoder's own
    // "no valid frames" error, through the chain the element plugs itself.
    let whole = dir().join("with-frames.flac");
    make_sine(&whole, 44_100, 2, 440.0, 5_000, "flacenc");
    let bytes = std::fs::read(&whole).unwrap();
    let first_frame = (4..bytes.len() - 1)
        .find(|&i| bytes[i] == 0xff && bytes[i + 1] == 0xf8)
        .expect("a frame");
    let path = dir().join("no-frames.flac");
    std::fs::write(&path, &bytes[..first_frame]).unwrap();
    assert_error(&path, gst::StreamError::Decode);
}

#[test]
fn truncated_file_plays_what_it_holds_then_stops() {
    init();
    let whole = dir().join("whole.mp3");
    make_sine(&whole, 44_100, 2, 440.0, 88_000, "lamemp3enc");
    let bytes = std::fs::read(&whole).unwrap();
    let cut = dir().join("truncated.mp3");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let started = Instant::now();
    let out = bgaudio(&cut, "", &s16(""), None);
    assert!(out.eos || out.error.is_some());
    // Roughly half of the 2 s clip.
    let frames = out.samples.len() / 2;
    assert!((30_000..60_000).contains(&frames), "{frames} frames");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn truncated_file_loops_what_it_holds() {
    init();
    let whole = dir().join("whole-loop.mp3");
    make_sine(&whole, 44_100, 2, 440.0, 88_000, "lamemp3enc");
    let bytes = std::fs::read(&whole).unwrap();
    let cut = dir().join("truncated-loop.mp3");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    let single = bgaudio(&cut, "", &s16(""), None);
    let looped = bgaudio(&cut, "loop=true", &s16(""), Some(single.samples.len()));
    assert!(looped.error.is_none());
    let len = single.samples.len();
    assert!(len > 0 && looped.samples.len() >= 2 * len);
    for (i, s) in looped.samples.iter().enumerate() {
        assert_eq!(*s, single.samples[i % len], "sample {i}");
    }
}
