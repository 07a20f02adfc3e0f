// SPDX-License-Identifier: MIT OR Apache-2.0

//! Starting and stopping, again and again, with good and bad files: nothing is left behind (file
//! descriptors, threads) and the element plays the same on every start.

mod common;

use common::*;
use gst::prelude::*;

/// The tests here count the process's descriptors and threads: one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// The names of the process's threads, for a failure message.
fn thread_names() -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                .map(|n| n.trim().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The process's threads, once GLib has let go of its idle pool threads: after a burst of
/// work its thread pools keep threads for reuse (named after the task they last ran), as many
/// as the burst needed, for some seconds. A leak is what stays after that; so the count is the
/// same whether this test runs alone in its process or after others.
fn threads() -> usize {
    // A pool thread waits half a second for more work of its own pool before it counts as
    // unused; then the unused ones are told to exit.
    std::thread::sleep(std::time::Duration::from_millis(600));
    // SAFETY: a plain GLib call with no arguments; it wakes the unused threads to exit.
    unsafe { gst::glib::ffi::g_thread_pool_stop_unused_threads() };
    let mut last = thread_count();
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(10));
        let now = thread_count();
        if now == last {
            break;
        }
        last = now;
    }
    last
}

fn thread_count() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:").map(|v| v.trim().parse().ok()))
                .flatten()
        })
        .unwrap_or(0)
}

/// One cycle: play a looping file until 3 buffers arrived (stopping mid-decode), then NULL; then
/// a missing file to NULL.
fn cycle(good: &std::path::Path, missing: &std::path::Path) -> Vec<i16> {
    let out = bgaudio(good, "loop=true", &s16(""), Some(3 * 882));
    assert!(out.error.is_none(), "{:?}", out.error);
    let bad = bgaudio(missing, "", &s16(""), None);
    assert!(bad.error.is_some());
    out.samples
}

#[test]
fn repeated_start_stop_leaks_no_descriptors_or_threads() {
    let _serial = serial();
    init();
    let dir = fixture_dir("lifecycle");
    let good = dir.join("long.ogg");
    // 20 s: every cycle stops while the first pass is still decoding.
    make_sine(&good, 44_100, 2, 440.0, 882_000, "vorbisenc ! oggmux");
    let missing = dir.join("missing.ogg");

    let first = cycle(&good, &missing);
    for _ in 0..5 {
        cycle(&good, &missing);
    }
    let (fds, thr) = (open_fds(), threads());
    for _ in 0..40 {
        // Every start plays the same samples.
        assert_eq!(cycle(&good, &missing), first);
    }
    let (fds_after, thr_after) = (open_fds(), threads());
    assert!(fds_after <= fds + 2, "descriptors {fds} -> {fds_after}");
    assert!(thr_after <= thr + 2, "threads {thr} -> {thr_after}");
}

#[test]
fn paused_to_ready_and_back_restarts_from_the_beginning() {
    let _serial = serial();
    init();
    let dir = fixture_dir("lifecycle");
    let path = dir.join("short.wav");
    make_sine(&path, 8_000, 1, 400.0, 4_000, "wavenc");
    let pipeline = pipeline(&format!(
        "bgaudiosrc location=\"{}\" ! {} ! appsink name=sink",
        path.display(),
        s16("")
    ));
    let first = collect_pipeline(&pipeline, None);
    let second = collect_pipeline(&pipeline, None);
    assert!(first.eos && second.eos);
    assert_eq!(first.samples.len(), 4_000);
    assert_eq!(first.samples, second.samples);
    assert_eq!(second.buffers[0].0, Some(gst::ClockTime::ZERO));
}

/// GStreamer's own warnings and criticals (GLib's "GStreamer" log domain), from `listen` to
/// `stop`.
struct Complaints {
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    handler: gst::glib::LogHandlerId,
}

impl Complaints {
    fn listen() -> Self {
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let logged = seen.clone();
        let handler = gst::glib::log_set_handler(
            Some("GStreamer"),
            gst::glib::LogLevels::LEVEL_WARNING | gst::glib::LogLevels::LEVEL_CRITICAL,
            false,
            false,
            move |_, _, message| logged.lock().unwrap().push(message.to_owned()),
        );
        Complaints { seen, handler }
    }

    fn stop(self) -> Vec<String> {
        gst::glib::log_remove_handler(Some("GStreamer"), self.handler);
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

/// Sets `pipeline` to PLAYING and at once back to NULL, `cycles` times, and returns the longest
/// NULL took.
fn play_and_stop_at_once(pipeline: &gst::Pipeline, cycles: usize) -> std::time::Duration {
    let mut longest = std::time::Duration::ZERO;
    for _ in 0..cycles {
        let _ = pipeline.set_state(gst::State::Playing);
        let started = std::time::Instant::now();
        pipeline.set_state(gst::State::Null).expect("null");
        longest = longest.max(started.elapsed());
    }
    longest
}

#[test]
fn null_right_after_playing_two_hundred_times_never_hangs_or_leaks() {
    let _serial = serial();
    init();
    let dir = fixture_dir("lifecycle");
    let mp3 = dir.join("five-seconds.mp3");
    make_sine(&mp3, 44_100, 2, 440.0, 220_000, "lamemp3enc");
    let long = dir.join("long.ogg");
    make_sine(&long, 44_100, 2, 440.0, 882_000, "vorbisenc ! oggmux");
    let descs = [
        format!(
            "bgaudiosrc location=\"{}\" loop=true ! fakesink sync=true",
            mp3.display()
        ),
        format!(
            "bgaudiosrc mode=mixing location=\"{}\" ! fakesink sync=true",
            long.display()
        ),
        // Streams through a window, with a decoder of its own each time: one handed to
        // decodebin (Ogg), one plugged by the element (MP3), each stopped while it plugs.
        format!(
            "bgaudiosrc location=\"{}\" max-cache-size=100000 ! fakesink sync=true",
            long.display()
        ),
        format!(
            "bgaudiosrc location=\"{}\" max-cache-size=100000 ! fakesink sync=true",
            mp3.display()
        ),
    ];
    // GStreamer's own warnings and criticals: a state changed from the wrong thread, a pad
    // that failed to deactivate.
    let complaints = Complaints::listen();
    let pipelines: Vec<gst::Pipeline> = descs.iter().map(|d| pipeline(d)).collect();
    for p in &pipelines {
        play_and_stop_at_once(p, 3);
    }
    let (fds, thr) = (open_fds(), threads());

    let mut longest = std::time::Duration::ZERO;
    for p in &pipelines {
        // The same pipeline started and stopped again and again...
        longest = longest.max(play_and_stop_at_once(p, 50));
    }
    for desc in &descs {
        // ... and new ones, each stopped as soon as it starts.
        for _ in 0..13 {
            longest = longest.max(play_and_stop_at_once(&pipeline(desc), 1));
        }
    }
    assert!(
        longest < std::time::Duration::from_secs(1),
        "NULL took {longest:?}"
    );
    assert_eq!(complaints.stop(), Vec::<String>::new());

    // Every run still plays: the element is not left in a broken state.
    let out = bgaudio(&mp3, "", &s16(""), Some(10_000));
    assert!(
        out.error.is_none() && out.samples.len() >= 10_000,
        "{:?}",
        out.error
    );

    // A copy stopped half-way is kept for the next element with its decoder waiting (its file
    // open): let go of those, as a budget of 0 does. GLib's thread pools keep a few idle
    // threads (named after the task they last ran); a leak would be one or more per cycle,
    // hundreds here.
    gstbgaudio::set_retain_budget(0);
    gstbgaudio::set_retain_budget(gstbgaudio::DEFAULT_RETAIN_BYTES);
    let (fds_after, thr_after) = (open_fds(), threads());
    assert!(fds_after <= fds + 2, "descriptors {fds} -> {fds_after}");
    assert!(
        thr_after <= thr + 4,
        "threads {thr} -> {thr_after}: {:?}",
        thread_names()
    );
    let usage = gstbgaudio::cache_usage();
    assert_eq!(usage.entries, 0, "{usage:?}");
}

/// A streamed file whose passes end every few milliseconds (each end puts a new resampler in
/// its chain and seeks it back, or rewinds the feeder of an MP3 or FLAC), stopped at moments
/// spread over its seams: no GStreamer warning or critical, no error, NULL in well under a
/// second, and it plays again afterwards. (The decode chain's own elements may still log "not
/// negotiated" at GStreamer's WARNING debug level when a stop meets a seam: see
/// `fresh_resampler`.)
#[test]
fn stopping_a_streamed_file_at_its_seams_is_clean() {
    let _serial = serial();
    init();
    for (name, encoder) in [
        ("tenth.wav", "wavenc"),
        ("tenth.mp3", "lamemp3enc"),
        ("tenth.flac", "flacenc"),
    ] {
        // 91 ms at 44.1 kHz (40 whole periods), played at 48 kHz: 19 kB decoded against a 4 kB
        // limit.
        let file = fixture_dir("lifecycle").join(name);
        make_sine(&file, 44_100, 2, 441.0, 4_000, encoder);
        let desc = format!(
            "bgaudiosrc location=\"{}\" loop=true max-cache-size=4000 \
             ! audio/x-raw,rate=48000 ! fakesink sync=false",
            file.display()
        );
        let complaints = Complaints::listen();
        let mut longest = std::time::Duration::ZERO;
        let mut errors = Vec::new();
        for i in 0..40u64 {
            let p = pipeline(&desc);
            p.set_state(gst::State::Playing).unwrap();
            std::thread::sleep(std::time::Duration::from_micros(500 * (i % 20)));
            let started = std::time::Instant::now();
            p.set_state(gst::State::Null).unwrap();
            longest = longest.max(started.elapsed());
            let bus = p.bus().unwrap();
            while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
                errors.push(format!("{msg:?}"));
            }
        }
        assert_eq!(complaints.stop(), Vec::<String>::new(), "{name}");
        assert_eq!(errors, Vec::<String>::new(), "{name}");
        assert!(
            longest < std::time::Duration::from_secs(1),
            "{name}: NULL took {longest:?}"
        );
        let out = bgaudio(
            &file,
            "loop=true max-cache-size=4000",
            &s16(",rate=48000"),
            Some(20_000),
        );
        assert!(
            out.error.is_none() && out.samples.len() >= 2 * 20_000,
            "{name}: {:?}, {} samples",
            out.error,
            out.samples.len()
        );
    }
}
