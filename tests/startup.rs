// SPDX-License-Identifier: MIT OR Apache-2.0

//! Many elements starting together, as a media server starts them: each plays exactly what the
//! stock chain decodes from its file. While start-ups are under way, a file fed to its parser
//! (MP3, FLAC) is decoded on its reader's own thread as far as it reads, and by a task of its own
//! once they are over (`src/bgaudiosrc/feeder.rs`); a file read through `filesrc ! typefind`
//! (WAV here) takes a turn. A process of its own: the start-ups of other tests would change
//! which of those ways a decode goes.

mod common;

use common::*;
use gst::prelude::*;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `copies` distinct files (each a copy of `name`, so none shares a decoded copy with another)
/// of a 1.5 s sine.
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

#[test]
fn elements_starting_together_each_play_the_reference() {
    init();
    let caps = s16(",rate=48000,channels=2");
    let mut files = copies("sine.mp3", "lamemp3enc", 10);
    files.extend(copies("sine.flac", "flacenc", 6));
    files.extend(copies("sine.wav", "wavenc", 4));

    let branches: Vec<String> = files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            format!(
                "bgaudiosrc location=\"{}\" ! {caps} ! appsink name=sink{i} sync=false",
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
    let bus = pipeline.bus().expect("bus");
    let deadline = Instant::now() + Duration::from_secs(60);
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(60),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("all branches ended");
    assert!(Instant::now() < deadline);
    if let gst::MessageView::Error(e) = msg.view() {
        panic!("{} ({:?})", e.error(), e.debug());
    }
    pipeline.set_state(gst::State::Null).expect("null");

    // The copies of one file decode alike: one reference each.
    let references: Vec<(String, Vec<i16>)> = ["sine.mp3", "sine.flac", "sine.wav"]
        .iter()
        .map(|name| {
            let reference = reference(&fixture_dir("startup").join(name), &caps);
            assert!(reference.samples.len() > 100_000, "{name}: too short");
            (name.to_string(), reference.samples)
        })
        .collect();
    for (file, out) in files.iter().zip(&outputs) {
        let name = file.file_name().unwrap().to_string_lossy();
        let (_, expected) = references
            .iter()
            .find(|(n, _)| name.ends_with(n.as_str()))
            .expect("a reference");
        let ours = out.lock().unwrap();
        assert_eq!(ours.len(), expected.len(), "{name}: length");
        let first_diff = ours.iter().zip(expected).position(|(a, b)| a != b);
        assert_eq!(first_diff, None, "{name}: samples differ");
    }
}

/// Plays `files` together through `appsink sync=true` (in real time) and checks each against
/// the stock chain's decode of `reference_of(file)`.
fn play_and_compare(files: &[PathBuf], reference_file: &std::path::Path) {
    let caps = s16(",rate=48000,channels=2");
    let branches: Vec<String> = files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            format!(
                "bgaudiosrc location=\"{}\" ! {caps} ! appsink name=sink{i} sync=true",
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
            gst::ClockTime::from_seconds(30),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("all branches ended");
    if let gst::MessageView::Error(e) = msg.view() {
        panic!("{} ({:?})", e.error(), e.debug());
    }
    pipeline.set_state(gst::State::Null).expect("null");
    let expected = reference(reference_file, &caps).samples;
    assert!(expected.len() > 100_000, "reference too short");
    for (file, out) in files.iter().zip(&outputs) {
        let ours = out.lock().unwrap();
        assert_eq!(ours.len(), expected.len(), "{}: length", file.display());
        let first_diff = ours.iter().zip(&expected).position(|(a, b)| a != b);
        assert_eq!(first_diff, None, "{}: samples differ", file.display());
    }
}

/// While another element is starting (here one on an HTTP server that never answers, which
/// counts as starting for a second), fed files are decoded by their readers as they read; once
/// it no longer counts, their own tasks decode the rest. Either way each plays the reference,
/// sample for sample, across the hand-over.
#[test]
fn readers_feed_while_another_element_starts_then_tasks_take_over() {
    init();
    let files = copies("fed.mp3", "lamemp3enc", 3);

    // What the element logs as a reader feeds, and as a task reaches the end of a file (read
    // here, not printed).
    gst::log::remove_default_log_function();
    gst::log::set_active(true);
    let seen = Arc::new(Mutex::new((0usize, 0usize)));
    let seen_log = seen.clone();
    let logger = gst::log::add_log_function(move |_, level, _, _, _, object, message| {
        let about_ours = object.is_some_and(|o| o.to_string().contains("fed.mp3"));
        if !about_ours {
            return;
        }
        let text = message.get().map(|m| m.to_string()).unwrap_or_default();
        let mut seen = seen_log.lock().unwrap();
        if level == gst::DebugLevel::Log && text.starts_with("A reader feeds") {
            seen.0 += 1;
        }
        if text.starts_with("Feeding paused: End") {
            seen.1 += 1;
        }
    });
    gst::log::set_threshold_for_name("bgaudiosrc", gst::DebugLevel::Log);

    // Accepts and holds connections, never answers.
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

    play_and_compare(&files, &fixture_dir("startup").join("fed.mp3"));
    stalled.set_state(gst::State::Null).expect("null");
    gst::log::remove_log_function(logger);
    gst::log::set_threshold_for_name("bgaudiosrc", gst::DebugLevel::None);

    let (reader_fed, tasks_ended) = *seen.lock().unwrap();
    assert!(reader_fed > 0, "no reader fed its decoder");
    assert_eq!(tasks_ended, files.len(), "each file's task decoded its end");
}
