// SPDX-License-Identifier: MIT OR Apache-2.0

//! Many elements starting together, as a media server starts them: each plays exactly what the
//! stock chain decodes from its file. While start-ups are under way, a file fed to its parser
//! (MP3, FLAC) is decoded on its reader's own thread as far as it reads, and by a task of its own
//! once they are over (`src/bgaudiosrc/feeder.rs`); a file read through `filesrc ! typefind`
//! (WAV here) takes a turn. A process of its own, and one test at a time: the start-ups of other
//! tests would change which of those ways a decode goes.

mod common;

use common::*;
use gst::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// `copies` distinct files (each a copy of `name`, so none shares a decoded copy with another)
/// of a 1.5 s sine, named `copy-N-name`.
fn copies(name: &str, encoder: &str, copies: usize) -> Vec<PathBuf> {
    let dir = fixture_dir("startup");
    let source = dir.join(name);
    make_sine(&source, 44_100, 2, 440.0, 66_000, encoder);
    (0..copies)
        .map(|i| {
            let copy = dir.join(format!("copy-{i}-{name}"));
            make_once(&copy, |tmp| {
                std::fs::copy(&source, tmp).expect("copy");
            });
            copy
        })
        .collect()
}

/// The file `copy` was copied from.
fn source_of(copy: &Path) -> PathBuf {
    let name = copy.file_name().unwrap().to_string_lossy();
    let source = name.splitn(3, '-').nth(2).expect("copy-N-name");
    copy.with_file_name(source)
}

/// Counts the element's log lines about files whose name contains `about` (read here, not
/// printed) that `counted` picks, by level and text, until dropped.
struct LogCount {
    count: Arc<Mutex<usize>>,
    logger: Option<gst::log::DebugLogFunction>,
}

impl LogCount {
    fn new(
        about: &'static str,
        counted: impl Fn(gst::DebugLevel, &str) -> bool + Send + Sync + 'static,
    ) -> Self {
        gst::log::remove_default_log_function();
        gst::log::set_active(true);
        gst::log::set_threshold_for_name("bgaudiosrc", gst::DebugLevel::Log);
        let count = Arc::new(Mutex::new(0));
        let seen = count.clone();
        let logger = gst::log::add_log_function(move |_, level, _, _, _, object, message| {
            if !object.is_some_and(|o| o.to_string().contains(about)) {
                return;
            }
            let text = message.get().map(|m| m.to_string()).unwrap_or_default();
            if counted(level, &text) {
                *seen.lock().unwrap() += 1;
            }
        });
        LogCount {
            count,
            logger: Some(logger),
        }
    }

    fn get(&self) -> usize {
        *self.count.lock().unwrap()
    }
}

impl Drop for LogCount {
    fn drop(&mut self) {
        if let Some(logger) = self.logger.take() {
            gst::log::remove_log_function(logger);
        }
        gst::log::set_threshold_for_name("bgaudiosrc", gst::DebugLevel::None);
    }
}

/// An element on an HTTP server that accepts and never answers: it counts as starting (other
/// decoders give way to it) for a second.
fn stalled_element() -> gst::Pipeline {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    let stalled = pipeline(&format!(
        "bgaudiosrc location=http://127.0.0.1:{port}/never.mp3 ! fakesink"
    ));
    let _ = stalled.set_state(gst::State::Playing);
    stalled
}

/// Plays `files` together in one pipeline, through `appsink sync={sync}`, and checks each
/// against the stock chain's decode of the file it is a copy of.
fn play_and_compare(files: &[PathBuf], sync: bool) {
    let caps = s16(",rate=48000,channels=2");
    let branches: Vec<String> = files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            format!(
                "bgaudiosrc location=\"{}\" ! {caps} ! appsink name=sink{i} sync={sync}",
                f.display()
            )
        })
        .collect();
    let pipeline = pipeline(&branches.join(" "));
    let outputs: Vec<Arc<Mutex<Vec<i16>>>> = (0..files.len())
        .map(|i| {
            let samples = Arc::new(Mutex::new(Vec::new()));
            let sink = pipeline
                .by_name(&format!("sink{i}"))
                .expect("sink")
                .downcast::<gst_app::AppSink>()
                .expect("appsink");
            let out = samples.clone();
            sink.set_callbacks(
                gst_app::AppSinkCallbacks::builder()
                    .new_sample(move |sink| {
                        let sample = sink.pull_sample().map_err(|_| gst::FlowError::Flushing)?;
                        if let Some(buffer) = sample.buffer() {
                            out.lock().unwrap().extend(samples_of(buffer));
                        }
                        Ok(gst::FlowSuccess::Ok)
                    })
                    .build(),
            );
            samples
        })
        .collect();
    pipeline.set_state(gst::State::Playing).expect("play");
    let msg = pipeline
        .bus()
        .expect("bus")
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(60),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("all branches ended");
    if let gst::MessageView::Error(e) = msg.view() {
        panic!("{} ({:?})", e.error(), e.debug());
    }
    pipeline.set_state(gst::State::Null).expect("null");

    let mut references: Vec<(PathBuf, Vec<i16>)> = Vec::new();
    for (file, out) in files.iter().zip(&outputs) {
        let source = source_of(file);
        if !references.iter().any(|(s, _)| *s == source) {
            let samples = reference(&source, &caps).samples;
            assert!(samples.len() > 100_000, "{}: too short", source.display());
            references.push((source.clone(), samples));
        }
        let expected = &references.iter().find(|(s, _)| *s == source).unwrap().1;
        let ours = out.lock().unwrap();
        assert_eq!(ours.len(), expected.len(), "{}: length", file.display());
        let first_diff = ours.iter().zip(expected).position(|(a, b)| a != b);
        assert_eq!(first_diff, None, "{}: samples differ", file.display());
    }
}

/// Twenty distinct files starting together, as fast as they decode: the MP3s and FLACs are fed
/// to their parsers (each says so in its log), the WAVs read through `filesrc ! typefind`.
#[test]
fn elements_starting_together_each_play_the_reference() {
    let _serial = serial();
    init();
    let mut files = copies("sine.mp3", "lamemp3enc", 10);
    files.extend(copies("sine.flac", "flacenc", 6));
    files.extend(copies("sine.wav", "wavenc", 4));

    let fed = LogCount::new("startup", |level, text| {
        level == gst::DebugLevel::Debug
            && text.starts_with("Started decoding")
            && text.ends_with("(fed)")
    });
    play_and_compare(&files, false);
    assert_eq!(fed.get(), 16, "the MP3s and FLACs are fed, the WAVs not");
}

/// While another element is starting, fed files are decoded by their readers as they read;
/// once it no longer counts, their own tasks decode the rest. Either way each plays the
/// reference, sample for sample, across the hand-over.
#[test]
fn readers_feed_while_another_element_starts_then_tasks_take_over() {
    let _serial = serial();
    init();
    let files = copies("fed.mp3", "lamemp3enc", 3);
    let reader_fed = LogCount::new("fed.mp3", |level, text| {
        level == gst::DebugLevel::Log && text.starts_with("A reader feeds")
    });
    let tasks_ended = LogCount::new("fed.mp3", |_, text| text.starts_with("Feeding paused: End"));

    let stalled = stalled_element();
    play_and_compare(&files, true);
    stalled.set_state(gst::State::Null).expect("null");

    assert!(reader_fed.get() > 0, "no reader fed its decoder");
    assert_eq!(
        tasks_ended.get(),
        files.len(),
        "each file's task decoded its end"
    );
}

/// A streamed MP3 (over its `max-cache-size`) looping while another element is starting: the
/// reader feeds it until the pass ends, and from the first rewind on its task does, which the
/// reader then waits for (it never waits for the task's lock on the file). Twenty seconds of
/// it play as fast as they decode, each pass the first one again.
#[test]
fn a_streamed_file_loops_while_another_element_starts() {
    let _serial = serial();
    init();
    let dir = fixture_dir("startup");
    let path = dir.join("streamed.mp3");
    // Half a second (220 whole periods): 88 kB decoded against a 50 kB window.
    make_sine(&path, 44_100, 2, 441.0, 22_000, "lamemp3enc");
    let caps = s16(",rate=44100,channels=2");
    let once = bgaudio(&path, "", &caps, None);
    assert!(once.eos, "{:?}", once.error);
    let pass = once.samples.len();

    let stalled = stalled_element();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(bgaudio(
            &path,
            "loop=true max-cache-size=50000",
            &caps,
            Some(44_100 * 20),
        ));
    });
    let looped = finished.recv_timeout(Duration::from_secs(30));
    stalled.set_state(gst::State::Null).expect("null");
    let looped = looped.expect("twenty seconds played within thirty");
    assert!(looped.error.is_none(), "{:?}", looped.error);
    assert!(
        looped.samples.len() >= 44_100 * 20 * 2,
        "{}",
        looped.samples.len()
    );
    for (i, chunk) in looped.samples.chunks_exact(pass).enumerate() {
        assert_eq!(chunk, &once.samples[..], "pass {i} differs");
    }
}
