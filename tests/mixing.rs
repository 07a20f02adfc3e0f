// SPDX-License-Identifier: MIT OR Apache-2.0

//! mode=mixing: a live source that joins and leaves a running audiomixer, with fades and volume
//! ramps that keep every sample-to-sample step within the bound the ramp sets.
//!
//! These tests run in real time (a few seconds in all).

mod common;

use common::*;
use gst::prelude::*;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const RATE: i32 = 48_000;

fn caps48() -> String {
    s16(&format!(",rate={RATE},channels=2"))
}

/// A loud stereo sine at 48 kHz, 1 s, for hearing the background in the mix.
fn sine() -> PathBuf {
    let path = fixture_dir("mixing").join("sine.wav");
    make_sine(&path, RATE, 2, 300.0, 48_000, "wavenc");
    path
}

/// A mono WAV of `frames` samples all equal to `value`: any step between consecutive output
/// samples then comes from the gain alone.
fn dc(value: i16, frames: usize) -> PathBuf {
    let path = fixture_dir("mixing").join(format!("dc-{value}-{frames}.wav"));
    if path.exists() {
        return path;
    }
    let data: Vec<u8> = std::iter::repeat_n(value.to_le_bytes(), frames)
        .flatten()
        .collect();
    let mut wav = Vec::new();
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&(RATE as u32).to_le_bytes());
    wav.extend_from_slice(&(RATE as u32 * 2).to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&(data.len() as u32).to_le_bytes());
    wav.extend_from_slice(&data);
    let tmp = path.with_extension(format!("part{}", std::process::id()));
    std::fs::write(&tmp, wav).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

fn running_time(pipeline: &gst::Pipeline) -> gst::ClockTime {
    let clock = pipeline.clock().expect("clock");
    clock.time() - pipeline.base_time().unwrap()
}

/// Pumps the bus until running time `until`: recalculates latency when asked (as gst-launch
/// does) and fails on any ERROR.
fn run_until(pipeline: &gst::Pipeline, until: gst::ClockTime) {
    let bus = pipeline.bus().unwrap();
    while running_time(pipeline) < until {
        if let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(5)) {
            match msg.view() {
                gst::MessageView::Error(e) => panic!("error: {} ({:?})", e.error(), e.debug()),
                gst::MessageView::Latency(_) => {
                    let _ = pipeline.recalculate_latency();
                }
                _ => (),
            }
        }
    }
}

/// Mixer output: (pts, interleaved samples) of each buffer.
type Mixed = Arc<Mutex<Vec<(gst::ClockTime, Vec<i16>)>>>;

/// `audiotestsrc is-live=true wave=silence ! audiomixer ! appsink`: a running live mix whose
/// only sound is what bgaudiosrc adds.
fn live_mix() -> (gst::Pipeline, gst::Element, Mixed) {
    let pipeline = pipeline(&format!(
        "audiotestsrc is-live=true wave=silence samplesperbuffer=480 ! {caps} \
         ! audiomixer name=m ! {caps} ! appsink name=sink sync=false",
        caps = caps48()
    ));
    let mixer = pipeline.by_name("m").unwrap();
    let mixed: Mixed = Arc::default();
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    let mixed_cb = mixed.clone();
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Flushing)?;
                let buffer = sample.buffer().ok_or(gst::FlowError::Error)?;
                let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
                let samples = map
                    .chunks_exact(2)
                    .map(|b| i16::from_ne_bytes([b[0], b[1]]))
                    .collect();
                mixed_cb
                    .lock()
                    .unwrap()
                    .push((buffer.pts().unwrap_or_default(), samples));
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    (pipeline, mixer, mixed)
}

/// Adds a bgaudiosrc to the running pipeline on a new mixer pad; returns it, its pad and the
/// running time at which it was started.
fn join(
    pipeline: &gst::Pipeline,
    mixer: &gst::Element,
    props: &[(&str, glib::Value)],
) -> (gst::Element, gst::Pad, gst::ClockTime) {
    let bg = gst::ElementFactory::make("bgaudiosrc")
        .property_from_str("mode", "mixing")
        .property("location", sine().to_str().unwrap())
        .property("loop", true)
        .build()
        .unwrap();
    for (name, value) in props {
        bg.set_property_from_value(name, value);
    }
    pipeline.add(&bg).unwrap();
    let pad = mixer.request_pad_simple("sink_%u").unwrap();
    bg.static_pad("src").unwrap().link(&pad).unwrap();
    let joined = running_time(pipeline);
    bg.sync_state_with_parent().unwrap();
    (bg, pad, joined)
}

/// Stops bgaudiosrc and releases its mixer pad while the pipeline runs.
fn leave(pipeline: &gst::Pipeline, mixer: &gst::Element, bg: &gst::Element, pad: &gst::Pad) {
    bg.set_state(gst::State::Null).unwrap();
    bg.static_pad("src").unwrap().unlink(pad).unwrap();
    mixer.release_request_pad(pad);
    pipeline.remove(bg).unwrap();
}

use gst::glib;

/// Peak absolute sample of the mixed output in running time [from, to).
fn peak(mixed: &[(gst::ClockTime, Vec<i16>)], from: gst::ClockTime, to: gst::ClockTime) -> i32 {
    let frame = gst::ClockTime::SECOND.nseconds() / RATE as u64;
    let mut peak = 0i32;
    for (pts, samples) in mixed {
        for (i, s) in samples.chunks_exact(2).enumerate() {
            let t = *pts + gst::ClockTime::from_nseconds(i as u64 * frame);
            if t >= from && t < to {
                peak = peak
                    .max(s[0].unsigned_abs() as i32)
                    .max(s[1].unsigned_abs() as i32);
            }
        }
    }
    peak
}

#[test]
fn joins_a_running_mixer_at_once_and_leaves_without_error() {
    init();
    let (pipeline, mixer, mixed) = live_mix();
    pipeline.set_state(gst::State::Playing).unwrap();
    run_until(&pipeline, gst::ClockTime::from_seconds(1));

    let (bg, pad, joined) = join(&pipeline, &mixer, &[]);
    run_until(&pipeline, gst::ClockTime::from_mseconds(2500));
    let left = running_time(&pipeline);
    leave(&pipeline, &mixer, &bg, &pad);
    run_until(&pipeline, gst::ClockTime::from_mseconds(3300));
    pipeline.set_state(gst::State::Null).unwrap();

    let mixed = mixed.lock().unwrap();
    let ms = gst::ClockTime::from_mseconds;
    assert_eq!(peak(&mixed, ms(0), joined), 0, "silence before the join");
    // Heard within two 20 ms buffers of the join...
    let first_heard = mixed
        .iter()
        .flat_map(|(pts, s)| {
            s.chunks_exact(2).enumerate().map(move |(i, f)| {
                (
                    *pts + gst::ClockTime::from_nseconds(i as u64 * 1_000_000_000 / 48_000),
                    f[0],
                )
            })
        })
        .find(|(t, s)| *t >= joined && *s != 0)
        .map(|(t, _)| t)
        .expect("the background is heard");
    assert!(
        first_heard <= joined + ms(40),
        "joined {joined}, first heard {first_heard}"
    );
    // ...then no silent 20 ms window while it is joined.
    let mut t = joined + ms(40);
    while t + ms(20) <= left {
        assert!(peak(&mixed, t, t + ms(20)) > 1000, "silent window at {t}");
        t += ms(20);
    }
    // Silence once it has left (the mixer may still hold one output buffer of it).
    let last = mixed.last().unwrap().0;
    assert!(last > left + ms(500), "the mixer carried on");
    assert_eq!(
        peak(&mixed, left + ms(60), last),
        0,
        "silence after leaving"
    );
}

#[test]
fn answers_latency_as_live_with_one_buffer() {
    init();
    let (pipeline, mixer, _) = live_mix();
    pipeline.set_state(gst::State::Playing).unwrap();
    run_until(&pipeline, gst::ClockTime::from_mseconds(100));
    let (bg, pad, _) = join(&pipeline, &mixer, &[]);
    run_until(&pipeline, gst::ClockTime::from_mseconds(300));
    let mut q = gst::query::Latency::new();
    assert!(bg.static_pad("src").unwrap().query(&mut q));
    let (live, min, max) = q.result();
    assert!(live);
    assert_eq!(min, gst::ClockTime::from_mseconds(20));
    assert!(max.is_none() || max >= Some(min));
    leave(&pipeline, &mixer, &bg, &pad);
    pipeline.set_state(gst::State::Null).unwrap();
}

#[test]
fn buffers_are_stamped_with_the_running_time_they_are_produced_at() {
    init();
    let (pipeline, mixer, _) = live_mix();
    pipeline.set_state(gst::State::Playing).unwrap();
    run_until(&pipeline, gst::ClockTime::from_mseconds(500));
    let (bg, pad, joined) = join(&pipeline, &mixer, &[]);
    let stamps: Arc<Mutex<Vec<(gst::ClockTime, gst::ClockTime)>>> = Arc::default();
    let stamps_probe = stamps.clone();
    let clock = pipeline.clock().unwrap();
    let base = pipeline.base_time().unwrap();
    bg.static_pad("src")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(b) = info.buffer() {
                let now = clock.time() - base;
                stamps_probe.lock().unwrap().push((b.pts().unwrap(), now));
            }
            gst::PadProbeReturn::Ok
        });
    run_until(&pipeline, gst::ClockTime::from_mseconds(1500));
    leave(&pipeline, &mixer, &bg, &pad);
    pipeline.set_state(gst::State::Null).unwrap();

    let stamps = stamps.lock().unwrap();
    assert!(stamps.len() >= 40, "{} buffers", stamps.len());
    // The first buffer is stamped at the join (500 ms into the running time), not at 0.
    let first = stamps[0].0;
    let slack = gst::ClockTime::from_mseconds(100);
    assert!(
        first >= joined && first < joined + slack,
        "first {first}, joined {joined}"
    );
    // Then every 20 ms, one buffer after the other.
    for (i, (pts, _)) in stamps.iter().enumerate() {
        assert_eq!(*pts, first + gst::ClockTime::from_mseconds(20 * i as u64));
    }
    // Each is pushed when the running time reaches its stamp. The bound is loose on purpose: it
    // tells running-time stamps from stamps counted from 0 (500 ms off), not how punctual a
    // loaded machine is (a test run beside other builds was 20-odd ms late).
    for (pts, now) in stamps.iter() {
        let diff = now.nseconds() as i64 - pts.nseconds() as i64;
        assert!(
            diff.abs() <= slack.nseconds() as i64,
            "pts {pts} pushed at {now}"
        );
    }
}

/// Largest absolute difference between consecutive samples in `samples[from..to]`.
fn max_step(samples: &[i16], from: usize, to: usize) -> i32 {
    samples[from..to]
        .windows(2)
        .map(|w| (w[1] as i32 - w[0] as i32).abs())
        .max()
        .unwrap_or(0)
}

#[test]
fn fades_and_volume_ramps_bound_every_step() {
    init();
    const LEVEL: i16 = 16_000;
    let path = dc(LEVEL, 48_000);
    let pipeline = pipeline(&format!(
        "bgaudiosrc name=bg mode=mixing loop=true location=\"{}\" \
         ! audio/x-raw,rate={RATE},channels=1 ! appsink name=sink",
        path.display()
    ));
    let bg = pipeline.by_name("bg").unwrap();
    // Drive the element from its own pad: turn the volume down after 200 ms of output, ask for
    // the fade-out after 400 ms.
    let bg_probe = bg.clone();
    bg.static_pad("src")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            let offset = info.buffer().map(|b| b.offset_end()).unwrap_or(0);
            if offset == 9_600 {
                bg_probe.set_property("volume", 0.2);
            }
            if offset == 19_200 {
                bg_probe.emit_by_name::<()>("fade-out", &[]);
            }
            gst::PadProbeReturn::Ok
        });
    let out = collect_pipeline(&pipeline, None);
    assert!(out.eos, "the fade-out ends with EOS: {:?}", out.error);
    let s = &out.samples;

    // Fade-in: 20 ms = 960 frames from 0 to full level.
    assert_eq!(s[0], 0);
    assert_eq!(s[1000], LEVEL);
    let bound = |delta: f64, frames: f64| (delta / frames).ceil() as i32 + 1;
    assert!(max_step(s, 0, 1000) <= bound(LEVEL as f64, 960.0));
    // Volume 1.0 -> 0.2 from frame 9600: a 10 ms (480 frame) ramp.
    assert_eq!(s[9_599], LEVEL);
    assert_eq!(s[10_200], (LEVEL as f64 * 0.2).round() as i16);
    assert!(max_step(s, 9_500, 10_200) <= bound(LEVEL as f64 * 0.8, 480.0));
    // Fade-out from frame 19200 over 20 ms, then EOS: the stream ends there.
    assert_eq!(s.len(), 19_200 + 960);
    assert!(max_step(s, 19_000, s.len()) <= bound(LEVEL as f64 * 0.2, 960.0));
    assert!(s[s.len() - 1].abs() <= 5);
    // Without the ramps the steps would have been the whole change.
    assert!(bound(LEVEL as f64 * 0.8, 480.0) < 100);
}

#[test]
fn a_non_looping_file_ends_its_pad_and_the_mixer_carries_on() {
    init();
    let (pipeline, mixer, mixed) = live_mix();
    pipeline.set_state(gst::State::Playing).unwrap();
    run_until(&pipeline, gst::ClockTime::from_mseconds(200));
    let short = fixture_dir("mixing").join("short.wav");
    make_sine(&short, RATE, 2, 300.0, 12_000, "wavenc");
    let (bg, pad, joined) = join(
        &pipeline,
        &mixer,
        &[
            ("loop", false.to_value()),
            ("location", short.to_str().unwrap().to_value()),
        ],
    );
    let eos = Arc::new(Mutex::new(false));
    let eos_probe = eos.clone();
    bg.static_pad("src")
        .unwrap()
        .add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
            if let Some(gst::EventView::Eos(_)) = info.event().map(|e| e.view()) {
                *eos_probe.lock().unwrap() = true;
            }
            gst::PadProbeReturn::Ok
        });
    run_until(&pipeline, joined + gst::ClockTime::from_seconds(1));
    assert!(*eos.lock().unwrap(), "EOS on the element's pad");
    let last = mixed.lock().unwrap().last().unwrap().0;
    assert!(
        last > joined + gst::ClockTime::from_mseconds(800),
        "the mixer carried on"
    );
    let ms = gst::ClockTime::from_mseconds;
    assert!(peak(&mixed.lock().unwrap(), joined + ms(60), joined + ms(200)) > 1000);
    assert_eq!(peak(&mixed.lock().unwrap(), joined + ms(300), last), 0);
    leave(&pipeline, &mixer, &bg, &pad);
    pipeline.set_state(gst::State::Null).unwrap();
}

#[test]
fn switching_mode_between_runs() {
    init();
    let path = sine();
    let pipeline = pipeline(&format!(
        "bgaudiosrc name=bg location=\"{}\" ! {} ! appsink name=sink",
        path.display(),
        caps48()
    ));
    let bg = pipeline.by_name("bg").unwrap();
    let playback = collect_pipeline(&pipeline, None);
    assert!(playback.eos);
    assert_eq!(playback.samples.len(), 96_000);

    bg.set_property_from_str("mode", "mixing");
    let started = std::time::Instant::now();
    let mixing = collect_pipeline(&pipeline, Some(9_600));
    assert!(mixing.error.is_none());
    // Live: 200 ms of audio takes about 200 ms to come out.
    assert!(started.elapsed() >= Duration::from_millis(150));
    // Fade-in at the start, then the same samples as in playback.
    assert_eq!(mixing.samples[0], 0);
    assert_eq!(
        mixing.samples[2_000..19_200],
        playback.samples[2_000..19_200]
    );

    bg.set_property_from_str("mode", "playback");
    let again = collect_pipeline(&pipeline, None);
    assert_eq!(again.samples, playback.samples);
    assert_eq!(again.buffers[0].0, Some(gst::ClockTime::ZERO));
}

#[test]
fn fade_out_from_another_thread_always_fades() {
    // The signal may come while a buffer is being built: the fade must still run in full from
    // a later buffer, never be skipped. Playback mode into an unsynced sink runs fast, so the
    // signal lands at arbitrary points of the stream.
    init();
    const LEVEL: i16 = 10_000;
    let path = dc(LEVEL, 4_800);
    for round in 0..20 {
        let pipeline = pipeline(&format!(
            "bgaudiosrc name=bg loop=true volume=0.5 location=\"{}\" ! appsink name=sink",
            path.display()
        ));
        let bg = pipeline.by_name("bg").unwrap();
        // Counted on the element's pad, so the signal comes a few buffers in however fast the
        // unsynced stream runs (it can produce the whole 60 s before a timer fires).
        let pushed = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = pushed.clone();
        bg.static_pad("src")
            .unwrap()
            .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                gst::PadProbeReturn::Ok
            });
        let signaller = std::thread::spawn(move || {
            // A fade-out is for a running element: wait until it plays.
            while pushed.load(std::sync::atomic::Ordering::SeqCst) < 1 + round % 5 {
                std::thread::yield_now();
            }
            std::thread::sleep(Duration::from_micros(20 * round));
            bg.emit_by_name::<()>("fade-out", &[]);
        });
        let out = collect_pipeline(&pipeline, Some(48_000 * 60));
        signaller.join().unwrap();
        assert!(out.eos, "round {round}: the fade-out ends with EOS");
        let s = &out.samples;
        let half = LEVEL / 2;
        // The last 960 frames (20 ms) are the whole fade, from the level down to silence.
        assert!(s.len() > 960);
        let fade = &s[s.len() - 960..];
        assert!(
            (fade[0] - half).abs() <= 1,
            "round {round}: fade starts at {}",
            fade[0]
        );
        assert!(
            fade[959].abs() <= 6,
            "round {round}: fade ends at {}",
            fade[959]
        );
        assert!(
            max_step(s, 0, s.len()) <= (half as i32) / 960 + 2,
            "round {round}"
        );
    }
}
