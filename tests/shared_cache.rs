// SPDX-License-Identifier: MIT OR Apache-2.0

//! One decoded copy per file and format per process: elements playing the same file share it,
//! a changed file or another format is a new copy, and the copy is freed with its last user.

mod common;

use common::*;
use gst::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// The tests here count the process's cache entries, so they run one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn clip(name: &str, freq: f64) -> PathBuf {
    let path = fixture_dir("shared_cache").join(name);
    make_sine(&path, 44_100, 2, freq, 44_000, "vorbisenc ! oggmux");
    path
}

/// Drops the copies earlier tests left retained, so each test counts its own.
fn forget_retained() {
    gstbgaudio::set_retain_budget(0);
    gstbgaudio::set_retain_budget(gstbgaudio::DEFAULT_RETAIN_BYTES);
}

/// A looping element into an appsink, started and left running until dropped.
struct Player {
    pipeline: gst::Pipeline,
    samples: Arc<Mutex<Vec<i16>>>,
    /// Data pointer of the first memory of each buffer, by file position.
    pointers: Arc<Mutex<Vec<(u64, usize)>>>,
}

impl Player {
    fn start(path: &Path, caps: &str) -> Player {
        let pipeline = pipeline(&format!(
            "bgaudiosrc location=\"{}\" loop=true ! {caps} ! appsink name=sink sync=false \
             max-buffers=1",
            path.display()
        ));
        let samples: Arc<Mutex<Vec<i16>>> = Arc::default();
        let pointers: Arc<Mutex<Vec<(u64, usize)>>> = Arc::default();
        let sink = pipeline
            .by_name("sink")
            .unwrap()
            .downcast::<gst_app::AppSink>()
            .unwrap();
        let (samples_cb, pointers_cb) = (samples.clone(), pointers.clone());
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Flushing)?;
                    let buffer = sample.buffer().ok_or(gst::FlowError::Error)?;
                    let mut samples = samples_cb.lock().unwrap();
                    if samples.len() >= 400_000 {
                        return Ok(gst::FlowSuccess::Ok);
                    }
                    let first = buffer.peek_memory(0).map_readable().unwrap().as_ptr() as usize;
                    pointers_cb.lock().unwrap().push((buffer.offset(), first));
                    let map = buffer.map_readable().unwrap();
                    samples.extend(
                        map.chunks_exact(2)
                            .map(|b| i16::from_ne_bytes([b[0], b[1]])),
                    );
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        pipeline.set_state(gst::State::Playing).unwrap();
        Player {
            pipeline,
            samples,
            pointers,
        }
    }

    /// Waits until `n` samples arrived and returns them.
    fn samples(&self, n: usize) -> Vec<i16> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let samples = self.samples.lock().unwrap();
            if samples.len() >= n {
                return samples[..n].to_vec();
            }
            drop(samples);
            assert!(std::time::Instant::now() < deadline, "no samples");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

impl Drop for Player {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

#[test]
fn two_elements_on_one_file_share_one_decoded_copy() {
    let _serial = serial();
    init();
    forget_retained();
    let path = clip("shared.ogg", 440.0);
    assert_eq!(gstbgaudio::cache_usage(), gstbgaudio::CacheUsage::default());

    let a = Player::start(&path, &s16(""));
    let b = Player::start(&path, &s16(""));
    // Both loop several times over: the same samples.
    let (sa, sb) = (a.samples(300_000), b.samples(300_000));
    assert_eq!(sa, sb);
    let usage = gstbgaudio::cache_usage();
    assert_eq!(usage.entries, 1);
    // 44000 frames of stereo S16 (a Vorbis decode may add a few frames of padding).
    assert!((176_000..180_000).contains(&usage.bytes), "{usage:?}");

    // At volume 1.0 both hand out the cache's own memory: once the copy is complete, the same
    // file position is the same memory in both.
    let (pa, pb) = (
        a.pointers.lock().unwrap().clone(),
        b.pointers.lock().unwrap().clone(),
    );
    let len = (usage.bytes / 4) as u64;
    let late = |p: &[(u64, usize)]| -> Vec<(u64, usize)> {
        let mut v: Vec<(u64, usize)> = p
            .iter()
            .filter(|(off, _)| *off >= 2 * len)
            .map(|(off, ptr)| (off % len, *ptr))
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let (la, lb) = (late(&pa), late(&pb));
    let common: Vec<_> = la.iter().filter(|x| lb.contains(x)).collect();
    assert!(!common.is_empty(), "no shared memory seen");

    drop((a, b));
    // No element plays it now; the complete copy is kept for the next one.
    let usage = gstbgaudio::cache_usage();
    assert_eq!((usage.entries, usage.bytes), (0, 0), "{usage:?}");
    assert_eq!(usage.retained_entries, 1, "{usage:?}");
}

/// Where the memory of the file's first frames lies, as each buffer that starts in the first
/// 10000 frames (inside the cache's first chunk) shows it: its data pointer less its position.
/// `from`: buffers from this output offset on; `len`: the file's length in frames.
fn first_chunk_bases(p: &[(u64, usize)], len: u64, from: u64) -> Vec<usize> {
    let mut v: Vec<usize> = p
        .iter()
        .filter(|(off, _)| *off >= from && off % len < 10_000)
        .map(|(off, ptr)| ptr - (off % len) as usize * 4)
        .collect();
    v.dedup();
    v
}

#[test]
fn a_sound_played_again_after_stopping_is_not_decoded_again() {
    let _serial = serial();
    init();
    forget_retained();
    let path = clip("again.ogg", 550.0);

    let a = Player::start(&path, &s16(""));
    let first = a.samples(300_000);
    let len = gstbgaudio::cache_usage().bytes / 4;
    // Once the copy is complete, every pass hands out the same memory.
    let a_bases = first_chunk_bases(&a.pointers.lock().unwrap(), len, 2 * len);
    assert_eq!(a_bases.len(), 1, "{a_bases:?}");
    drop(a);
    let usage = gstbgaudio::cache_usage();
    assert_eq!((usage.entries, usage.retained_entries), (0, 1), "{usage:?}");
    assert_eq!(usage.retained_bytes, len * 4);

    // Started again: the same samples, out of the same memory from its very first buffer.
    let b = Player::start(&path, &s16(""));
    assert_eq!(b.samples(300_000), first);
    let usage = gstbgaudio::cache_usage();
    assert_eq!((usage.entries, usage.retained_entries), (1, 0), "{usage:?}");
    let b_bases = first_chunk_bases(&b.pointers.lock().unwrap(), len, 0);
    assert_eq!(b_bases, a_bases, "the second play reads other memory");
    drop(b);
}

#[test]
fn retained_copies_stay_within_the_budget_least_recently_used_first() {
    let _serial = serial();
    init();
    forget_retained();
    let one = clip("budget-one.ogg", 300.0);
    let two = clip("budget-two.ogg", 400.0);
    let play = |path: &Path| {
        let p = Player::start(path, &s16(""));
        p.samples(200_000);
        drop(p);
    };
    // Room for one copy (each is about 176 kB).
    gstbgaudio::set_retain_budget(250_000);
    play(&one);
    play(&two);
    let usage = gstbgaudio::cache_usage();
    assert_eq!(usage.retained_entries, 1, "{usage:?}");
    // The one kept is the one played last: playing it again makes no new copy and leaves the
    // budget holding nothing else.
    let again = Player::start(&two, &s16(""));
    again.samples(1_000);
    assert_eq!(gstbgaudio::cache_usage().retained_entries, 0);
    drop(again);

    // A budget of 0 keeps nothing, and lowering the budget drops what is over it at once.
    gstbgaudio::set_retain_budget(0);
    assert_eq!(gstbgaudio::cache_usage().retained_entries, 0);
    play(&one);
    assert_eq!(gstbgaudio::cache_usage(), gstbgaudio::CacheUsage::default());
    gstbgaudio::set_retain_budget(gstbgaudio::DEFAULT_RETAIN_BYTES);
}

#[test]
fn another_format_is_another_copy() {
    let _serial = serial();
    init();
    forget_retained();
    let path = clip("formats.ogg", 330.0);
    let a = Player::start(&path, &s16(""));
    let b = Player::start(&path, &s16(",rate=16000,channels=1"));
    let c = Player::start(&path, &s16(",rate=16000,channels=1"));
    a.samples(1000);
    assert_eq!(b.samples(50_000), c.samples(50_000));
    assert_eq!(gstbgaudio::cache_usage().entries, 2);
    drop((a, b, c));
    assert_eq!(gstbgaudio::cache_usage().entries, 0);
}

#[test]
fn a_changed_file_is_a_new_copy_and_the_old_one_is_freed() {
    let _serial = serial();
    init();
    forget_retained();
    let low = clip("low.ogg", 220.0);
    let high = clip("high.ogg", 880.0);
    let path = fixture_dir("shared_cache").join("changing.ogg");
    std::fs::copy(&low, &path).unwrap();

    let a = Player::start(&path, &s16(""));
    let before = a.samples(100_000);
    // The file changes on disk while `a` plays it: a new element decodes the new content.
    std::fs::copy(&high, &path).unwrap();
    let b = Player::start(&path, &s16(""));
    let after = b.samples(100_000);
    assert_ne!(before, after);
    assert_eq!(gstbgaudio::cache_usage().entries, 2);
    // `a` keeps its own copy of what it started with.
    assert_eq!(a.samples(100_000), before);
    drop(a);
    // The old content is not kept for later: the file no longer holds it.
    let usage = gstbgaudio::cache_usage();
    assert_eq!((usage.entries, usage.retained_entries), (1, 0), "{usage:?}");
    drop(b);
    assert_eq!(gstbgaudio::cache_usage().entries, 0);
}

#[test]
fn elements_with_different_loop_shapes_share_one_copy() {
    let _serial = serial();
    init();
    forget_retained();
    let path = clip("shapes.ogg", 550.0);
    assert_eq!(gstbgaudio::cache_usage(), gstbgaudio::CacheUsage::default());
    let caps = s16(",rate=44100,channels=2");
    let pipeline = pipeline(&format!(
        "bgaudiosrc location=\"{0}\" loop=true start-position=500000000 ! {1} ! fakesink \
         bgaudiosrc location=\"{0}\" loop=true random-start=true trim-silence=true ! {1} \
         ! fakesink \
         bgaudiosrc location=\"{0}\" loop=true loop-crossfade=100000000 ! {1} ! fakesink \
         bgaudiosrc location=\"{0}\" loop=true ! {1} ! fakesink",
        path.display(),
        caps
    ));
    pipeline.set_state(gst::State::Paused).unwrap();
    assert!(pipeline.state(gst::ClockTime::from_seconds(10)).0.is_ok());
    let usage = gstbgaudio::cache_usage();
    pipeline.set_state(gst::State::Null).unwrap();
    assert_eq!(usage.entries, 1, "one copy for all four: {usage:?}");
    // Freed with its last user (and kept for later if it was complete by then).
    let usage = gstbgaudio::cache_usage();
    assert!(
        usage.entries == 0 && usage.retained_entries <= 1,
        "{usage:?}"
    );
}
