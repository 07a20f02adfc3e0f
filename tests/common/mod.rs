// SPDX-License-Identifier: MIT OR Apache-2.0

//! Shared helpers for the integration tests: plugin registration, fixtures made with GStreamer's
//! own encoders, and pipeline runners that collect samples, timestamps and bus messages.
#![allow(dead_code)]

use gst::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        gst::init().expect("gst init");
        gstbgaudio::plugin_register_static().expect("register bgaudio");
    });
}

/// A directory of fixtures for one test binary, removed when the process exits cleanly is not
/// needed: it lives under the target directory's tmp folder.
pub fn fixture_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&dir).expect("fixture dir");
    dir
}

/// A pipeline from a gst-launch description.
pub fn pipeline(desc: &str) -> gst::Pipeline {
    gst::parse::launch(desc)
        .expect("parse")
        .downcast::<gst::Pipeline>()
        .expect("a pipeline")
}

/// Runs a pipeline description to EOS; panics on error or after 30 s.
pub fn run(desc: &str) {
    let pipeline = gst::parse::launch(desc).expect("parse");
    pipeline.set_state(gst::State::Playing).expect("play");
    let bus = pipeline.bus().expect("bus");
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(30),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("pipeline finished in time");
    if let gst::MessageView::Error(e) = msg.view() {
        panic!("{desc}: {} ({:?})", e.error(), e.debug());
    }
    pipeline.set_state(gst::State::Null).expect("null");
}

/// Encodes `frames` frames of a `freq` Hz sine at `rate`/`channels` through `encoder` (a
/// gst-launch fragment such as "vorbisenc ! oggmux") into `path`, once.
pub fn make_sine(path: &Path, rate: i32, channels: i32, freq: f64, frames: u64, encoder: &str) {
    let spb = 1000.min(frames);
    assert_eq!(frames % spb, 0, "frames must be a multiple of {spb}");
    make_once(path, |tmp| {
        run(&format!(
            "audiotestsrc wave=sine freq={freq} volume=0.8 samplesperbuffer={spb} num-buffers={} \
             ! audio/x-raw,format=S16LE,rate={rate},channels={channels} ! audioconvert \
             ! {encoder} ! filesink location={}",
            frames / spb,
            tmp.display()
        ))
    });
}

/// Makes the fixture `path` once: `write` fills a file of its own. Tests run in parallel and may
/// make the same fixture: each writes its own file, and the rename makes whichever finishes
/// first the fixture.
pub fn make_once(path: &Path, write: impl FnOnce(&Path)) {
    if path.exists() {
        return;
    }
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let tmp = path.with_extension(format!("part{}-{n}", std::process::id()));
    write(&tmp);
    std::fs::rename(&tmp, path).expect("rename fixture");
}

/// An ID3v1 tag (the 128 bytes from "TAG" at the end of an MP3): title "Title v1", artist
/// "Artist v1", album "Album v1", year 2026.
pub fn id3v1_tag() -> Vec<u8> {
    let mut tag = b"TAG".to_vec();
    for (field, len) in [
        ("Title v1", 30),
        ("Artist v1", 30),
        ("Album v1", 30),
        ("2026", 4),
    ] {
        let mut f = field.as_bytes().to_vec();
        f.resize(len, 0);
        tag.extend(f);
    }
    tag.resize(127, 0);
    // Genre 12, "Other".
    tag.push(12);
    tag
}

/// (pts, duration, offset, offset_end, frames) of one buffer.
pub type BufferMeta = (
    Option<gst::ClockTime>,
    Option<gst::ClockTime>,
    u64,
    u64,
    usize,
);

/// What a pipeline with an appsink named `sink` produced.
#[derive(Debug, Default)]
pub struct Output {
    pub samples: Vec<i16>,
    pub caps: Option<gst::Caps>,
    pub buffers: Vec<BufferMeta>,
    pub eos: bool,
    pub error: Option<gst::glib::Error>,
}

impl Output {
    pub fn channels(&self) -> usize {
        self.caps
            .as_ref()
            .and_then(|c| c.structure(0)?.get::<i32>("channels").ok())
            .unwrap_or(1) as usize
    }
    pub fn rate(&self) -> i32 {
        self.caps
            .as_ref()
            .and_then(|c| c.structure(0)?.get::<i32>("rate").ok())
            .unwrap_or(0)
    }
}

/// Runs `desc` (which must end in `appsink name=sink`) until EOS, an error, or until
/// `max_frames` frames arrived; collects samples and buffer metadata.
pub fn collect(desc: &str, max_frames: Option<usize>) -> Output {
    let pipeline = pipeline(desc);
    let out = collect_pipeline(&pipeline, max_frames);
    pipeline.set_state(gst::State::Null).expect("null");
    out
}

pub fn collect_pipeline(pipeline: &gst::Pipeline, max_frames: Option<usize>) -> Output {
    let sink = pipeline
        .by_name("sink")
        .expect("appsink named sink")
        .downcast::<gst_app::AppSink>()
        .expect("appsink");
    sink.set_property("sync", false);
    let out = Arc::new(Mutex::new(Output::default()));
    let out_cb = out.clone();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done_cb = done.clone();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Flushing)?;
                let mut out = out_cb.lock().unwrap();
                if out.caps.is_none() {
                    out.caps = sample.caps().map(|c| c.to_owned());
                }
                let channels = out.channels();
                let buffer = sample.buffer().expect("buffer");
                let before = out.samples.len();
                out.samples.extend(samples_of(buffer));
                let frames = (out.samples.len() - before) / channels;
                out.buffers.push((
                    buffer.pts(),
                    buffer.duration(),
                    buffer.offset(),
                    buffer.offset_end(),
                    frames,
                ));
                if let Some(max) = max_frames {
                    if out.samples.len() / channels >= max {
                        done_cb.store(true, std::sync::atomic::Ordering::SeqCst);
                        return Err(gst::FlowError::Eos);
                    }
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    // A start-up failure makes this fail; its reason is an ERROR on the bus, collected below.
    let _ = pipeline.set_state(gst::State::Playing);
    let bus = pipeline.bus().expect("bus");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if done.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pipeline did not finish: {desc:?}",
            desc = pipeline.name()
        );
        if let Some(msg) = bus.timed_pop_filtered(
            gst::ClockTime::from_mseconds(20),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        ) {
            let mut out = out.lock().unwrap();
            match msg.view() {
                gst::MessageView::Eos(_) => out.eos = true,
                gst::MessageView::Error(e) => out.error = Some(e.error()),
                _ => (),
            }
            break;
        }
    }
    pipeline.set_state(gst::State::Null).expect("null");
    let mut out = out.lock().unwrap();
    std::mem::take(&mut *out)
}

/// The S16 samples of `buffer` (native endianness, interleaved).
pub fn samples_of(buffer: &gst::BufferRef) -> Vec<i16> {
    buffer
        .map_readable()
        .expect("map")
        .chunks_exact(2)
        .map(|b| i16::from_ne_bytes([b[0], b[1]]))
        .collect()
}

/// Caps of the element's output format (S16 in native endianness, interleaved), narrowed by
/// `extra` (for example ",rate=24000,channels=1").
pub fn s16(extra: &str) -> String {
    let format = if cfg!(target_endian = "little") {
        "S16LE"
    } else {
        "S16BE"
    };
    format!("audio/x-raw,format={format},layout=interleaved{extra}")
}

/// The rate, channels, format and layout of caps: what two chains must agree on.
pub fn format_of(caps: &Option<gst::Caps>) -> Option<(i32, i32, String, String)> {
    let s = caps.as_ref()?.structure(0)?;
    Some((
        s.get("rate").ok()?,
        s.get("channels").ok()?,
        s.get::<String>("format").ok()?,
        s.get::<String>("layout").ok()?,
    ))
}

/// Decodes `path` with the stock chain the element is measured against.
pub fn reference(path: &Path, caps: &str) -> Output {
    let uri = gst::glib::filename_to_uri(path, None).expect("uri");
    let out = collect(
        &format!(
            "uridecodebin uri={uri} ! audioconvert dithering=none ! audioresample ! {caps} \
             ! appsink name=sink"
        ),
        None,
    );
    assert!(out.error.is_none(), "reference failed: {:?}", out.error);
    assert!(out.eos);
    out
}

/// Plays `path` through bgaudiosrc with extra `props`.
pub fn bgaudio(path: &Path, props: &str, caps: &str, max_frames: Option<usize>) -> Output {
    collect(
        &format!(
            "bgaudiosrc location=\"{}\" {props} ! {caps} ! appsink name=sink",
            path.display()
        ),
        max_frames,
    )
}

/// Plays `path` once through bgaudiosrc at `caps` and asserts it equals `reference` (the stock
/// chain's decode) sample for sample, in the same format, with contiguous timestamps.
pub fn assert_plays_as(path: &Path, caps: &str, reference: &Output, what: &str) {
    let ours = bgaudio(path, "loop=false", caps, None);
    assert!(ours.error.is_none() && ours.eos, "{what}: {:?}", ours.error);
    assert_eq!(format_of(&ours.caps), format_of(&reference.caps), "{what}");
    assert_eq!(
        ours.samples.len(),
        reference.samples.len(),
        "{what} at {caps}: length"
    );
    let first_diff = ours
        .samples
        .iter()
        .zip(&reference.samples)
        .position(|(a, b)| a != b);
    assert_eq!(first_diff, None, "{what} at {caps}: samples differ");
    assert_contiguous(&ours);
}

/// Asserts that buffers start at 0 and that each one starts where the previous one ended, in
/// timestamps and in offsets, with timestamps computed from the sample counter.
pub fn assert_contiguous(out: &Output) {
    let rate = out.rate() as u64;
    assert!(rate > 0);
    let mut next_offset = 0u64;
    for (i, (pts, duration, offset, offset_end, frames)) in out.buffers.iter().enumerate() {
        let expect_pts =
            gst::ClockTime::from_nseconds(next_offset * gst::ClockTime::SECOND.nseconds() / rate);
        let expect_end = gst::ClockTime::from_nseconds(
            (next_offset + *frames as u64) * gst::ClockTime::SECOND.nseconds() / rate,
        );
        assert_eq!(*offset, next_offset, "buffer {i} offset");
        assert_eq!(
            *offset_end,
            next_offset + *frames as u64,
            "buffer {i} offset_end"
        );
        assert_eq!(*pts, Some(expect_pts), "buffer {i} pts");
        assert_eq!(
            *duration,
            Some(expect_end - expect_pts),
            "buffer {i} duration"
        );
        next_offset += *frames as u64;
    }
}
