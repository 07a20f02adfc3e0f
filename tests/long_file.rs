// SPDX-License-Identifier: MIT OR Apache-2.0

//! A file that decodes to more than `max-cache-size` is not cached: it loops by seeking the
//! internal decoder back to its start, seamlessly, with timestamps contiguous and memory flat.

mod common;

use common::*;
use gst::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

#[test]
fn a_long_file_loops_by_seeking_with_flat_memory() {
    let _serial = serial();
    init();
    // 60 s of 48 kHz stereo: 11.5 MB decoded, against a 1 MB limit. 441 Hz does not divide
    // the length, so a seam that lost or repeated samples would show.
    const FRAMES: usize = 2_880_000;
    let path = fixture_dir("long_file").join("sixty-seconds.wav");
    make_sine(&path, 48_000, 2, 441.0, FRAMES as u64, "wavenc");
    let caps = s16(",rate=48000,channels=2");
    let reference = bgaudio(&path, "max-cache-size=1000000", &caps, None);
    assert!(reference.eos, "{:?}", reference.error);
    assert_eq!(reference.samples.len(), 2 * FRAMES);
    let reference = Arc::new(reference.samples);
    let frames_per_pass = (reference.len() / 2) as u64;

    let pipeline = pipeline(&format!(
        "bgaudiosrc location=\"{}\" loop=true max-cache-size=1000000 ! {caps} \
         ! appsink name=sink sync=false",
        path.display()
    ));
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    // Compare every sample on the fly (keeping none) and check the stamps.
    let frames = Arc::new(AtomicU64::new(0));
    let broken = Arc::new(AtomicBool::new(false));
    let (frames_cb, broken_cb, reference_cb) = (frames.clone(), broken.clone(), reference.clone());
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Flushing)?;
                let buffer = sample.buffer().ok_or(gst::FlowError::Error)?;
                let start = frames_cb.load(Ordering::SeqCst);
                let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
                let n = (map.len() / 4) as u64;
                let stamps_ok = buffer.offset() == start
                    && buffer.pts()
                        == Some(gst::ClockTime::from_nseconds(
                            start * 1_000_000_000 / 48_000,
                        ));
                let samples_ok = map.chunks_exact(2).enumerate().all(|(i, b)| {
                    let expect = reference_cb[(start as usize * 2 + i) % reference_cb.len()];
                    i16::from_ne_bytes([b[0], b[1]]) == expect
                });
                if !(stamps_ok && samples_ok) {
                    broken_cb.store(true, Ordering::SeqCst);
                }
                frames_cb.store(start + n, Ordering::SeqCst);
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );

    let rss_before = rss_bytes();
    pipeline.set_state(gst::State::Playing).unwrap();
    let wait_for = |target: u64| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while frames.load(Ordering::SeqCst) < target {
            assert!(std::time::Instant::now() < deadline, "stalled");
            assert!(!broken.load(Ordering::SeqCst), "output differs");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    };
    wait_for(frames_per_pass * 3 + frames_per_pass / 2);
    let rss_late = rss_bytes();
    pipeline.set_state(gst::State::Null).unwrap();

    assert!(
        !broken.load(Ordering::SeqCst),
        "output differs from the file across a seam"
    );
    // Three seams passed; a cached copy would have added 11.5 MB.
    let growth = rss_late.saturating_sub(rss_before);
    assert!(growth < 2_000_000, "resident memory grew by {growth} bytes");
    // Not a shared decoded copy.
    assert_eq!(gstbgaudio::cache_usage().entries, 0);
}

/// The tests here measure the process's resident memory: one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A 3-minute stereo MP3 at 44.1 kHz: 31.75 MB once decoded.
fn three_minutes() -> std::path::PathBuf {
    let path = fixture_dir("long_file").join("three-minutes.mp3");
    make_sine(
        &path,
        44_100,
        2,
        330.0,
        7_938_000,
        "lamemp3enc encoding-engine-quality=fast",
    );
    path
}

/// Plays `desc` (ending in `appsink name=sink`) to EOS or error, keeping no samples: returns
/// the frames it produced, the RMS of its last second, the peak RSS growth and the peak
/// decoded bytes held, and the bus messages (warnings and errors) it posted.
fn play_counting(desc: &str, stop_after: Option<u64>) -> (u64, f64, u64, u64, Vec<gst::Message>) {
    // Load the decoders' libraries first: their pages are resident memory too.
    let warm = fixture_dir("long_file").join("warm-up.mp3");
    make_sine(&warm, 44_100, 2, 330.0, 44_000, "lamemp3enc");
    bgaudio(&warm, "", &s16(""), None);

    let pipeline = pipeline(desc);
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    sink.set_property("sync", false);
    let frames = Arc::new(AtomicU64::new(0));
    let last: Arc<std::sync::Mutex<Vec<i16>>> = Arc::default();
    let peaks = Arc::new(std::sync::Mutex::new((0u64, 0u64)));
    let rss_before = rss_bytes();
    let (frames_cb, last_cb, peaks_cb) = (frames.clone(), last.clone(), peaks.clone());
    sink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Flushing)?;
                let buffer = sample.buffer().ok_or(gst::FlowError::Error)?;
                let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
                let n = frames_cb.fetch_add(map.len() as u64 / 4, Ordering::SeqCst);
                let mut last = last_cb.lock().unwrap();
                last.extend(
                    map.chunks_exact(2)
                        .map(|b| i16::from_ne_bytes([b[0], b[1]])),
                );
                let excess = last.len().saturating_sub(88_200);
                last.drain(..excess);
                if n % 44_100 < 1_200 {
                    let usage = gstbgaudio::cache_usage();
                    let mut peaks = peaks_cb.lock().unwrap();
                    peaks.0 = peaks.0.max(rss_bytes().saturating_sub(rss_before));
                    peaks.1 = peaks.1.max(usage.bytes);
                }
                if stop_after.is_some_and(|stop| n >= stop) {
                    return Err(gst::FlowError::Eos);
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .build(),
    );
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let mut messages = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        assert!(std::time::Instant::now() < deadline, "did not finish");
        let Some(msg) = bus.timed_pop_filtered(
            gst::ClockTime::from_mseconds(50),
            &[
                gst::MessageType::Eos,
                gst::MessageType::Error,
                gst::MessageType::Warning,
            ],
        ) else {
            if stop_after.is_some_and(|stop| frames.load(Ordering::SeqCst) >= stop) {
                break;
            }
            continue;
        };
        let end = !matches!(msg.view(), gst::MessageView::Warning(_));
        messages.push(msg);
        if end {
            break;
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    let last = last.lock().unwrap();
    let rms =
        (last.iter().map(|s| (*s as f64).powi(2)).sum::<f64>() / last.len().max(1) as f64).sqrt();
    let peaks = *peaks.lock().unwrap();
    (
        frames.load(Ordering::SeqCst),
        rms,
        peaks.0,
        peaks.1,
        messages,
    )
}

/// What a 2 MB `max-cache-size` must bound while 31.75 MB of audio stream through: the decoded
/// copy (the limit, plus at most a chunk) and the process (the 25 MB bound).
fn assert_held_to_two_megabytes(most_held: u64, rss_growth: u64) {
    assert!(
        most_held <= 2_300_000,
        "the decoded copy held {most_held} bytes"
    );
    assert!(
        rss_growth <= 25_000_000,
        "resident memory grew {rss_growth} bytes"
    );
}

#[test]
fn a_pipe_of_unknown_length_plays_through_a_bounded_window_then_ends_with_a_warning() {
    let _serial = serial();
    init();
    let path = three_minutes();
    // A pipe: no length, no seeking. Caching it would take 31.75 MB.
    let (reader, mut writer) = std::io::pipe().expect("pipe");
    let bytes = std::fs::read(&path).unwrap();
    let feeder = std::thread::spawn(move || {
        use std::io::Write;
        let _ = writer.write_all(&bytes);
    });
    use std::os::fd::AsRawFd;
    let location = format!("fd://{}", reader.as_raw_fd());
    let (frames, rms, rss_growth, most_held, messages) = play_counting(
        &format!(
            "bgaudiosrc location={location} loop=true max-cache-size=2000000 \
             ! {} ! appsink name=sink",
            s16(",rate=44100,channels=2")
        ),
        None,
    );
    feeder.join().unwrap();
    drop(reader);

    // The whole stream, once (an MP3 decoder may add or drop a frame's worth at the ends).
    assert!(frames.abs_diff(7_938_000) <= 4_000, "{frames} frames");
    assert!(rms > 10_000.0, "rms {rms}");
    assert_held_to_two_megabytes(most_held, rss_growth);
    // It could not loop: a warning that says why, then EOS, and no error.
    let (warning, end) = (&messages[0], messages.last().unwrap());
    let gst::MessageView::Warning(w) = warning.view() else {
        panic!("expected a warning first: {messages:?}");
    };
    assert!(
        w.error().matches(gst::ResourceError::Seek),
        "{:?}",
        w.error()
    );
    assert!(w.error().message().contains(&location));
    assert!(w.error().message().contains("cannot be looped"));
    assert!(
        matches!(end.view(), gst::MessageView::Eos(_)),
        "{messages:?}"
    );
}

#[test]
fn a_seekable_stream_of_unknown_length_loops_through_a_bounded_window() {
    let _serial = serial();
    init();
    let path = three_minutes();
    // An open file as fd://: no duration is known before the first buffer, but it seeks.
    let file = std::fs::File::open(&path).unwrap();
    use std::os::fd::AsRawFd;
    let (frames, rms, rss_growth, most_held, messages) = play_counting(
        &format!(
            "bgaudiosrc location=fd://{} loop=true max-cache-size=2000000 \
             ! {} ! appsink name=sink",
            file.as_raw_fd(),
            s16(",rate=44100,channels=2")
        ),
        Some(7_938_000 * 3 / 2),
    );
    drop(file);
    // Stopped by the sink once it had a pass and a half: no warning, no error on the way.
    assert!(
        messages
            .iter()
            .all(|m| matches!(m.view(), gst::MessageView::Eos(_))),
        "{messages:?}"
    );
    assert!(frames >= 7_938_000 * 3 / 2, "{frames} frames");
    assert!(rms > 10_000.0, "rms {rms}");
    assert_held_to_two_megabytes(most_held, rss_growth);
}

#[test]
fn streaming_seams_in_mixing_mode_are_seamless_and_never_late() {
    let _serial = serial();
    init();
    // 0.3125 s of 48 kHz stereo (60 kB decoded) against a 20 kB limit: it streams, and every
    // seam is a seek of its decoder, started while the reader is still a window behind.
    let path = fixture_dir("long_file").join("short-seams.wav");
    make_sine(&path, 48_000, 2, 441.0, 15_000, "wavenc");
    let caps = s16(",rate=48000,channels=2");
    let reference = bgaudio(&path, "", &caps, None);
    assert_eq!(reference.samples.len(), 30_000);

    // Through a live audiomixer, which drops what comes after its deadline: a late buffer
    // would be a hole in what it mixes.
    let pipeline = pipeline(&format!(
        "bgaudiosrc name=bg mode=mixing loop=true fade-in-duration=0 max-cache-size=20000 \
         location=\"{}\" ! audiomixer start-time-selection=first ! {caps} \
         ! appsink name=sink sync=true",
        path.display()
    ));
    let gaps = Arc::new(AtomicU64::new(0));
    let gaps_cb = gaps.clone();
    pipeline
        .by_name("bg")
        .and_then(|bg| bg.static_pad("src"))
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if info
                .buffer()
                .is_some_and(|b| b.flags().contains(gst::BufferFlags::GAP))
            {
                gaps_cb.fetch_add(1, Ordering::SeqCst);
            }
            gst::PadProbeReturn::Ok
        });
    // Eleven passes: ten seams.
    let out = collect_pipeline(&pipeline, Some(11 * 15_000));
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(
        gaps.load(Ordering::SeqCst),
        0,
        "silent buffers from the element"
    );
    assert!(out.samples.len() >= 11 * 30_000);
    let first_diff = out
        .samples
        .iter()
        .enumerate()
        .position(|(i, s)| *s != reference.samples[i % 30_000]);
    assert_eq!(
        first_diff, None,
        "the mix differs from the file (sample index)"
    );
}

/// A streamed MP3 and FLAC (each over its `max-cache-size`) loop by seeking their decode chain
/// to the start, the seek going upstream in bytes (the parser is pushed the file). Every pass is
/// the first one again, sample for sample, at the file's rate and resampled: each pass gets a
/// new resampler, as GStreamer 1.22's keeps its phase across the seek (then each seam lost about
/// a sample: a step twice the sine's steepest, where a copy's seam has none).
#[test]
fn streamed_mp3_and_flac_passes_repeat_the_first() {
    let _serial = serial();
    init();
    for (name, encoder) in [("seams.mp3", "lamemp3enc"), ("seams.flac", "flacenc")] {
        // 0.75 s of a 441 Hz sine at 44.1 kHz: 330 whole periods, a seamless loop.
        let path = fixture_dir("long_file").join(name);
        make_sine(&path, 44_100, 2, 441.0, 33_000, encoder);
        for rate in [44_100, 48_000] {
            let caps = s16(&format!(",rate={rate},channels=2"));
            let once = bgaudio(&path, "", &caps, None);
            assert!(once.eos, "{name} at {rate}: {:?}", once.error);
            let pass = once.samples.len();
            assert!(pass >= 66_000, "{name} at {rate}: {pass} samples");
            // 35 kB against 130 to 150 kB decoded: a window, seeked at every end.
            let looped = bgaudio(
                &path,
                "loop=true max-cache-size=35000",
                &caps,
                Some(3 * pass / 2 + 1000),
            );
            assert!(looped.error.is_none(), "{name}: {:?}", looped.error);
            assert!(
                looped.samples.len() >= 3 * pass,
                "{name}: {}",
                looped.samples.len()
            );
            for (i, chunk) in looped.samples.chunks(pass).take(3).enumerate() {
                let first_diff = chunk.iter().zip(&once.samples).position(|(a, b)| a != b);
                assert_eq!(first_diff, None, "{name} at {rate}: pass {i} differs");
            }
        }
    }
}

/// A streamed file so short that a pass is about one read (one FLAC frame, or a few MP3 frames,
/// for 4,000 frames against a 4 kB limit): it loops all the same, each pass the first one
/// again, at the file's rate and resampled.
#[test]
fn a_streamed_file_about_one_read_long_loops() {
    let _serial = serial();
    init();
    for (name, encoder) in [("tenth.mp3", "lamemp3enc"), ("tenth.flac", "flacenc")] {
        let path = fixture_dir("long_file").join(name);
        make_sine(&path, 44_100, 2, 441.0, 4_000, encoder);
        for rate in [44_100, 48_000] {
            let caps = s16(&format!(",rate={rate},channels=2"));
            let once = bgaudio(&path, "", &caps, None);
            assert!(once.eos, "{name} at {rate}: {:?}", once.error);
            let pass = once.samples.len();
            let looped = bgaudio(
                &path,
                "loop=true max-cache-size=4000",
                &caps,
                Some(5 * pass / 2 + 1000),
            );
            assert!(looped.error.is_none(), "{name}: {:?}", looped.error);
            assert!(
                looped.samples.len() >= 5 * pass,
                "{name} at {rate}: {} samples, a pass is {pass}",
                looped.samples.len()
            );
            for (i, chunk) in looped.samples.chunks(pass).take(5).enumerate() {
                assert_eq!(
                    chunk,
                    &once.samples[..],
                    "{name} at {rate}: pass {i} differs"
                );
            }
        }
    }
}

/// Three elements on one file through a window far smaller than the file, each in a pipeline of
/// its own started 20 ms and 300 ms after the first (in real time, `appsink sync=true`): each
/// plays every sample of every pass, the first pass again and again, and none is told it lost
/// any (the readers are within the window's limit of one another).
#[test]
fn three_elements_sharing_a_window_each_play_every_pass_whole() {
    let _serial = serial();
    init();
    let path = fixture_dir("long_file").join("shared-window.mp3");
    // 3 s of pink noise: a skip anywhere shows as a difference.
    make_once(&path, |tmp| {
        run(&format!(
            "audiotestsrc wave=pink-noise volume=0.3 samplesperbuffer=1000 num-buffers=132 \
             ! audio/x-raw,rate=44100,channels=1 ! lamemp3enc ! filesink location={}",
            tmp.display()
        ))
    });
    let caps = s16(",rate=44100,channels=1");
    let once = bgaudio(&path, "loop=false", &caps, None);
    assert!(once.eos, "{:?}", once.error);
    let pass = once.samples.len();
    assert!(pass > 130_000, "{pass}");
    // 50 kB is 567 ms of the output: a window, whose limit the three are within.
    let want = 2 * pass + pass / 3;
    let played: Vec<_> = [0u64, 20, 280]
        .into_iter()
        .map(|delay| {
            std::thread::sleep(std::time::Duration::from_millis(delay));
            let pipeline = pipeline(&format!(
                "bgaudiosrc location=\"{}\" loop=true max-cache-size=50000 ! {caps} \
                 ! appsink name=sink sync=true",
                path.display()
            ));
            let sink = pipeline
                .by_name("sink")
                .and_downcast::<gst_app::AppSink>()
                .unwrap();
            let samples = Arc::new(std::sync::Mutex::new(Vec::<i16>::new()));
            let into = samples.clone();
            sink.set_callbacks(
                gst_app::AppSinkCallbacks::builder()
                    .new_sample(move |sink| {
                        let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                        if let Some(buffer) = sample.buffer() {
                            into.lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .extend(samples_of(buffer));
                        }
                        Ok(gst::FlowSuccess::Ok)
                    })
                    .build(),
            );
            pipeline.set_state(gst::State::Playing).unwrap();
            (pipeline, samples)
        })
        .collect();
    assert_eq!(gstbgaudio::cache_usage().entries, 1, "one shared window");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    for (i, (pipeline, samples)) in played.iter().enumerate() {
        while samples.lock().unwrap().len() < want && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let bus = pipeline.bus().unwrap();
        let msg = bus.pop_filtered(&[gst::MessageType::Warning, gst::MessageType::Error]);
        assert!(msg.is_none(), "element {i}: {msg:?}");
        let samples = samples.lock().unwrap();
        assert!(
            samples.len() >= want,
            "element {i}: {} samples",
            samples.len()
        );
        for (p, chunk) in samples[..want].chunks(pass).enumerate() {
            let first_diff = chunk.iter().zip(&once.samples).position(|(a, b)| a != b);
            assert_eq!(first_diff, None, "element {i}, pass {p}: samples differ");
        }
    }
    for (pipeline, _) in played {
        pipeline.set_state(gst::State::Null).unwrap();
    }
}
