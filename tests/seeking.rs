// SPDX-License-Identifier: MIT OR Apache-2.0

//! Seeking in playback mode (flushing, SEGMENT, in samples, after EOS, wrapping when looping),
//! refused in mixing mode; position and convert queries against the sample counter.

mod common;

use common::*;
use gst::prelude::*;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const RATE: u64 = 48_000;

/// 12 s of a 48 kHz stereo sine in a WAV file: decoded bit for bit by both chains.
fn twelve_seconds() -> PathBuf {
    let path = fixture_dir("seeking").join("twelve-seconds.wav");
    make_sine(&path, 48_000, 2, 441.0, 576_000, "wavenc");
    path
}

/// 1 s of the same.
fn one_second() -> PathBuf {
    let path = fixture_dir("seeking").join("one-second.wav");
    make_sine(&path, 48_000, 2, 441.0, 48_000, "wavenc");
    path
}

fn caps() -> String {
    s16(",rate=48000,channels=2")
}

/// A paused, prerolled pipeline `bgaudiosrc name=bg {props} ! caps ! appsink name=sink`.
fn prerolled(path: &std::path::Path, props: &str) -> (gst::Pipeline, gst_app::AppSink) {
    let pipeline = pipeline(&format!(
        "bgaudiosrc name=bg location=\"{}\" {props} ! {} ! appsink name=sink sync=false",
        path.display(),
        caps()
    ));
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Paused).unwrap();
    let (result, _, _) = pipeline.state(gst::ClockTime::from_seconds(10));
    assert!(result.is_ok(), "no preroll");
    (pipeline, sink)
}

/// What came out after a seek: samples, the first buffer's timestamp, the segment, and how
/// the stream ended.
#[derive(Debug, Default)]
struct Played {
    samples: Vec<i16>,
    first_pts: Option<gst::ClockTime>,
    segment: Option<gst::FormattedSegment<gst::ClockTime>>,
    eos: bool,
    segment_done: bool,
}

/// Plays from where the pipeline is until EOS or SEGMENT_DONE, or `max_frames` frames.
fn play(pipeline: &gst::Pipeline, sink: &gst_app::AppSink, max_frames: usize) -> Played {
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let mut played = Played::default();
    loop {
        if played.samples.len() / 2 >= max_frames {
            break;
        }
        match sink.try_pull_sample(gst::ClockTime::from_mseconds(200)) {
            Some(sample) => {
                let buffer = sample.buffer().unwrap();
                played.first_pts = played.first_pts.or(buffer.pts());
                if played.segment.is_none() {
                    played.segment = sample
                        .segment()
                        .and_then(|s| s.downcast_ref::<gst::ClockTime>().cloned());
                }
                played.samples.extend(samples_of(buffer));
            }
            None => {
                if sink.is_eos() {
                    played.eos = true;
                    break;
                }
                if let Some(msg) =
                    bus.pop_filtered(&[gst::MessageType::SegmentDone, gst::MessageType::Error])
                {
                    match msg.view() {
                        gst::MessageView::SegmentDone(_) => {
                            // What was pushed before the message is in the sink already.
                            while let Some(sample) =
                                sink.try_pull_sample(gst::ClockTime::from_mseconds(50))
                            {
                                played.samples.extend(samples_of(sample.buffer().unwrap()));
                            }
                            played.segment_done = true;
                            break;
                        }
                        _ => panic!("{msg:?}"),
                    }
                }
            }
        }
    }
    played
}

fn seek(
    pipeline: &gst::Pipeline,
    flags: gst::SeekFlags,
    start: gst::GenericFormattedValue,
    stop: gst::GenericFormattedValue,
) {
    assert!(pipeline
        .seek(
            1.0,
            flags,
            gst::SeekType::Set,
            start,
            if stop.value() < 0 {
                gst::SeekType::None
            } else {
                gst::SeekType::Set
            },
            stop,
        )
        .is_ok());
    let (result, _, _) = pipeline.state(gst::ClockTime::from_seconds(10));
    assert!(result.is_ok());
}

#[test]
fn a_flushing_seek_lands_on_the_sample() {
    init();
    let path = twelve_seconds();
    let reference = reference(&path, &caps());
    let (pipeline, sink) = prerolled(&path, "");
    seek(
        &pipeline,
        gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE,
        gst::ClockTime::from_seconds(10).into(),
        gst::ClockTime::NONE.into(),
    );
    let played = play(&pipeline, &sink, usize::MAX);
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(played.eos);
    assert_eq!(played.first_pts, Some(gst::ClockTime::from_seconds(10)));
    let segment = played.segment.expect("a segment");
    assert_eq!(segment.time(), Some(gst::ClockTime::from_seconds(10)));
    assert_eq!(segment.start(), Some(gst::ClockTime::from_seconds(10)));
    assert_eq!(played.samples.len(), reference.samples.len() - 480_000 * 2);
    assert!(played.samples == reference.samples[480_000 * 2..]);
}

#[test]
fn a_segment_seek_plays_exactly_its_segment_then_segment_done() {
    init();
    let path = twelve_seconds();
    let reference = reference(&path, &caps());
    let (pipeline, sink) = prerolled(&path, "");
    seek(
        &pipeline,
        gst::SeekFlags::FLUSH | gst::SeekFlags::SEGMENT | gst::SeekFlags::ACCURATE,
        gst::ClockTime::from_seconds(5).into(),
        gst::ClockTime::from_seconds(6).into(),
    );
    let played = play(&pipeline, &sink, usize::MAX);
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(played.segment_done, "SEGMENT_DONE");
    assert!(!played.eos, "no EOS");
    assert_eq!(played.samples.len(), 48_000 * 2);
    assert!(played.samples == reference.samples[240_000 * 2..288_000 * 2]);
}

#[test]
fn a_seek_in_samples_lands_on_that_sample() {
    init();
    let path = twelve_seconds();
    let reference = reference(&path, &caps());
    let (pipeline, sink) = prerolled(&path, "");
    seek(
        &pipeline,
        gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE,
        gst::format::Default::from_u64(123_457).into(),
        gst::format::Default::from_u64(130_000).into(),
    );
    let played = play(&pipeline, &sink, usize::MAX);
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(played.eos);
    assert_eq!(played.samples.len(), (130_000 - 123_457) * 2);
    assert!(played.samples == reference.samples[123_457 * 2..130_000 * 2]);
    // The timestamp is the sample's.
    assert_eq!(
        played.first_pts,
        Some(gst::ClockTime::from_nseconds(
            123_457 * 1_000_000_000 / RATE
        ))
    );
}

#[test]
fn a_seek_after_eos_plays_again() {
    init();
    let path = one_second();
    let reference = reference(&path, &caps());
    let (pipeline, sink) = prerolled(&path, "");
    let first = play(&pipeline, &sink, usize::MAX);
    assert!(first.eos);
    assert!(first.samples == reference.samples);
    seek(
        &pipeline,
        gst::SeekFlags::FLUSH,
        gst::ClockTime::ZERO.into(),
        gst::ClockTime::NONE.into(),
    );
    let again = play(&pipeline, &sink, usize::MAX);
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(again.eos);
    assert!(again.samples == reference.samples);
}

#[test]
fn looping_wraps_a_seek_past_the_end_into_the_file() {
    init();
    let path = one_second();
    let reference = reference(&path, &caps());
    let (pipeline, sink) = prerolled(&path, "loop=true");
    seek(
        &pipeline,
        gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE,
        gst::ClockTime::from_mseconds(2_500).into(),
        gst::ClockTime::NONE.into(),
    );
    let played = play(&pipeline, &sink, 72_000);
    pipeline.set_state(gst::State::Null).unwrap();
    assert_eq!(played.first_pts, Some(gst::ClockTime::from_mseconds(2_500)));
    // Half a second from the middle of the file, then the file from its start.
    assert!(played.samples[..24_000 * 2] == reference.samples[24_000 * 2..]);
    assert!(played.samples[24_000 * 2..72_000 * 2] == reference.samples[..]);
}

#[test]
fn mixing_mode_refuses_seeks() {
    init();
    let path = one_second();
    let pipeline = pipeline(&format!(
        "bgaudiosrc name=bg mode=mixing loop=true location=\"{}\" ! {} ! fakesink sync=true",
        path.display(),
        caps()
    ));
    pipeline.set_state(gst::State::Playing).unwrap();
    let (result, _, _) = pipeline.state(gst::ClockTime::from_seconds(10));
    assert!(result.is_ok());
    std::thread::sleep(Duration::from_millis(100));
    let bg = pipeline.by_name("bg").unwrap();
    let mut query = gst::query::Seeking::new(gst::Format::Time);
    assert!(bg.query(&mut query));
    assert!(!query.result().0, "not seekable");
    assert!(bg
        .seek_simple(gst::SeekFlags::FLUSH, gst::ClockTime::from_mseconds(500))
        .is_err());
    pipeline.set_state(gst::State::Null).unwrap();
}

#[test]
fn position_and_convert_answer_from_the_sample_counter() {
    init();
    let path = twelve_seconds();
    let pipeline = pipeline(&format!(
        "bgaudiosrc name=bg location=\"{}\" ! {} ! fakesink sync=false name=sink",
        path.display(),
        caps()
    ));
    let bg = pipeline.by_name("bg").unwrap();
    // The end of the last buffer made: the sample counter.
    let last_end = Arc::new(Mutex::new(0u64));
    let seen = last_end.clone();
    bg.static_pad("src")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(buffer) = info.buffer() {
                *seen.lock().unwrap() = buffer.offset_end();
            }
            gst::PadProbeReturn::Ok
        });
    pipeline.set_state(gst::State::Paused).unwrap();
    let (result, _, _) = pipeline.state(gst::ClockTime::from_seconds(10));
    assert!(result.is_ok());
    // Prerolled: the streaming thread holds its next buffer at the sink.
    std::thread::sleep(Duration::from_millis(100));
    let frames = *last_end.lock().unwrap();
    assert!(frames > 0);
    assert_eq!(
        bg.query_position::<gst::format::Default>(),
        Some(gst::format::Default::from_u64(frames))
    );
    assert_eq!(
        bg.query_position::<gst::ClockTime>(),
        Some(gst::ClockTime::from_nseconds(frames * 1_000_000_000 / RATE))
    );

    // Seeking answers truthfully: seekable, from 0 to the file's length.
    let mut query = gst::query::Seeking::new(gst::Format::Time);
    assert!(bg.query(&mut query));
    let (seekable, start, end) = query.result();
    assert!(seekable);
    assert_eq!(
        start,
        gst::GenericFormattedValue::from(gst::ClockTime::ZERO)
    );
    assert_eq!(
        end,
        gst::GenericFormattedValue::from(gst::ClockTime::from_seconds(12))
    );

    let pad = bg.static_pad("src").unwrap();
    assert_eq!(
        pad.query_convert::<Option<gst::ClockTime>>(gst::format::Default::from_u64(72_000)),
        Some(Some(gst::ClockTime::from_mseconds(1_500)))
    );
    assert_eq!(
        pad.query_convert::<Option<gst::format::Bytes>>(gst::ClockTime::from_seconds(1)),
        Some(Some(gst::format::Bytes::from_u64(48_000 * 4)))
    );
    assert_eq!(
        pad.query_convert::<Option<gst::format::Default>>(gst::format::Bytes::from_u64(400)),
        Some(Some(gst::format::Default::from_u64(100)))
    );

    // After a seek the counter is the seek's sample.
    assert!(bg
        .seek_simple(
            gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE,
            gst::ClockTime::from_seconds(3)
        )
        .is_ok());
    let (result, _, _) = pipeline.state(gst::ClockTime::from_seconds(10));
    assert!(result.is_ok());
    std::thread::sleep(Duration::from_millis(100));
    let frames = *last_end.lock().unwrap();
    assert!(frames > 144_000);
    assert_eq!(
        bg.query_position::<gst::format::Default>(),
        Some(gst::format::Default::from_u64(frames))
    );
    pipeline.set_state(gst::State::Null).unwrap();
}

#[test]
fn a_non_flushing_seek_plays_on_from_the_new_position() {
    init();
    let path = twelve_seconds();
    let reference = reference(&path, &caps());
    // Two buffers in the sink at most: the stream is still near its start at the seek.
    let pipeline = pipeline(&format!(
        "bgaudiosrc location=\"{}\" ! {} ! appsink name=sink sync=false max-buffers=2",
        path.display(),
        caps()
    ));
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    // (first PTS, segment start, samples) of each buffer.
    let mut buffers = Vec::new();
    let mut seeker = None;
    while let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(5)) {
        let buffer = sample.buffer().unwrap();
        let start = sample
            .segment()
            .and_then(|s| s.downcast_ref::<gst::ClockTime>().and_then(|s| s.start()));
        buffers.push((buffer.pts(), start, samples_of(buffer)));
        if buffers.len() == 5 {
            // From another thread: a non-flushing seek waits for the streaming thread, which
            // waits for this one to pull.
            let pipeline = pipeline.clone();
            seeker = Some(std::thread::spawn(move || {
                pipeline.seek(
                    1.0,
                    gst::SeekFlags::ACCURATE,
                    gst::SeekType::Set,
                    gst::ClockTime::from_seconds(10),
                    gst::SeekType::Set,
                    gst::ClockTime::from_mseconds(10_500),
                )
            }));
        }
    }
    assert!(sink.is_eos());
    assert!(seeker.unwrap().join().unwrap().is_ok());
    pipeline.set_state(gst::State::Null).unwrap();

    // Played from the start, then from the seek's position in a new segment, to its stop.
    let seeked = buffers
        .iter()
        .position(|(_, start, _)| *start == Some(gst::ClockTime::from_seconds(10)))
        .expect("a segment from 10 s");
    assert_eq!(buffers[seeked].0, Some(gst::ClockTime::from_seconds(10)));
    let before: Vec<i16> = buffers[..seeked]
        .iter()
        .flat_map(|(_, _, s)| s.clone())
        .collect();
    let after: Vec<i16> = buffers[seeked..]
        .iter()
        .flat_map(|(_, _, s)| s.clone())
        .collect();
    assert!(before.len() >= 5 * 960 * 2);
    assert!(before[..] == reference.samples[..before.len()]);
    assert_eq!(after.len(), 24_000 * 2);
    assert!(after[..] == reference.samples[480_000 * 2..504_000 * 2]);
}

/// Flushing seeks sent while the element is still starting (its streaming thread waiting for
/// the decode chain to show the format, or negotiating), at moments spread over the start-up:
/// the start-up goes on after each flush, and the file plays whole from the last seek to EOS, as
/// the stock chain decodes it. Each round plays a file of its own: a file probed before starts
/// without waiting.
///
/// The seeks come while the pipeline prerolls (READY to PAUSED), and it goes on to PLAYING once
/// it has prerolled after them: a flush that makes the sink lose its state while its bin is
/// busy going from PAUSED to PLAYING can leave GStreamer 1.22's bin waiting for an ASYNC_DONE it
/// ignored, which holds the EOS message back for ever whatever the source (seen with this
/// test's seeks).
#[test]
fn flushing_seeks_while_starting_then_the_whole_file_plays() {
    init();
    let dir = fixture_dir("seeking");
    let source = dir.join("starting.mp3");
    make_sine(&source, 44_100, 2, 440.0, 66_000, "lamemp3enc");
    let reference = reference(&source, &caps()).samples;
    assert!(reference.len() > 100_000, "reference too short");
    for round in 0..40u64 {
        let path = dir.join(format!("starting-{round}.mp3"));
        make_once(&path, |tmp| {
            std::fs::copy(&source, tmp).expect("copy");
        });
        let pipeline = pipeline(&format!(
            "bgaudiosrc name=bg timeout=5000000000 location=\"{}\" ! {} \
             ! appsink name=sink sync=false",
            path.display(),
            caps()
        ));
        let bg = pipeline.by_name("bg").unwrap();
        let sink = pipeline
            .by_name("sink")
            .unwrap()
            .downcast::<gst_app::AppSink>()
            .unwrap();
        let samples = Arc::new(Mutex::new(Vec::new()));
        let out = samples.clone();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Flushing)?;
                    out.lock()
                        .unwrap()
                        .extend(samples_of(sample.buffer().unwrap()));
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        pipeline.set_state(gst::State::Paused).unwrap();
        std::thread::sleep(Duration::from_micros(200 * (round % 20)));
        let started = std::time::Instant::now();
        // (The appsink renders nothing before PLAYING: the seeks go on for the whole 30 ms.)
        while started.elapsed() < Duration::from_millis(30) {
            bg.send_event(gst::event::Seek::new(
                1.0,
                gst::SeekFlags::FLUSH,
                gst::SeekType::Set,
                gst::ClockTime::ZERO,
                gst::SeekType::None,
                gst::ClockTime::NONE,
            ));
            std::thread::sleep(Duration::from_micros(300));
        }
        // Prerolled after the last flush, then PLAYING (see above).
        let _ = pipeline.state(gst::ClockTime::from_seconds(10));
        pipeline.set_state(gst::State::Playing).unwrap();
        let msg = pipeline.bus().unwrap().timed_pop_filtered(
            gst::ClockTime::from_seconds(10),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        );
        pipeline.set_state(gst::State::Null).unwrap();
        match msg.as_ref().map(|m| m.view()) {
            Some(gst::MessageView::Eos(_)) => (),
            other => panic!("round {round}: {other:?}"),
        }
        let ours = samples.lock().unwrap();
        assert!(
            ours.ends_with(&reference),
            "round {round}: {} samples, not ending with the file's {}",
            ours.len(),
            reference.len()
        );
    }
}

/// A flushing seek during a fade-out moves the output, not the fade: the fade goes on from
/// where it was, over the audio at the new position, and ends the stream with EOS.
#[test]
fn a_fade_out_goes_on_after_a_flushing_seek_and_ends_with_eos() {
    init();
    let path = twelve_seconds();
    let reference = reference(&path, &caps());
    let pipeline = pipeline(&format!(
        "bgaudiosrc name=bg location=\"{}\" loop=true fade-out-duration=500000000 ! {} \
         ! appsink name=sink sync=true max-buffers=2",
        path.display(),
        caps()
    ));
    let sink = pipeline
        .by_name("sink")
        .and_downcast::<gst_app::AppSink>()
        .unwrap();
    let bg = pipeline.by_name("bg").unwrap();
    // 0.5 s in real time, then the fade-out, then 0.1 s of it.
    let before = play(&pipeline, &sink, 24_000);
    assert_eq!(before.samples.len(), 48_000);
    bg.emit_by_name::<()>("fade-out", &[]);
    let fading = play(&pipeline, &sink, 4_800);
    assert!(!fading.eos);
    seek(
        &pipeline,
        gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE,
        gst::ClockTime::from_seconds(5).into(),
        gst::ClockTime::NONE.into(),
    );
    // At most the whole fade again: without EOS the loop would play on for ever.
    let after = play(&pipeline, &sink, 24_000);
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(after.eos, "no EOS after the fade-out");
    assert_eq!(after.first_pts, Some(gst::ClockTime::from_seconds(5)));
    // What is left of the fade, give or take the buffers queued when it was asked for.
    let frames = after.samples.len() / 2;
    assert!(
        (9_600..=22_000).contains(&frames),
        "{frames} frames after the seek"
    );
    // The audio from 5 s on, faded: never louder than the file, and silent at the end.
    let from = &reference.samples[480_000 * 2..];
    for (k, (ours, file)) in after.samples.iter().zip(from).enumerate() {
        assert!(ours.unsigned_abs() <= file.unsigned_abs() + 1, "sample {k}");
    }
    let peak = |s: &[i16]| s.iter().map(|v| v.unsigned_abs()).max().unwrap_or(0);
    let head = peak(&after.samples[..960]);
    let tail = peak(&after.samples[after.samples.len() - 960..]);
    assert!(
        head > peak(&from[..960]) / 4,
        "{head}: faded too far already"
    );
    assert!(tail < peak(&from[..960]) / 10, "{tail}: not faded out");
}
