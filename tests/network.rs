// SPDX-License-Identifier: MIT OR Apache-2.0

//! Sources that are not local files, served from this process on 127.0.0.1: an HTTP server that
//! accepts and never answers, an endless HTTP stream (internet radio), one that stalls half-way,
//! and a live Ogg/Vorbis stream over UDP.

mod common;

use common::*;
use gst::prelude::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// `init`, then the network sources' classes made once, one after the other, before the tests
/// here (which run side by side) reach them: GLib 2.74 can deadlock when two threads initialise
/// souphttpsrc's and udpsrc's classes at once (both register GIO's socket types; a test run
/// hung on it).
fn init_network() {
    init();
    static CLASSES: std::sync::Once = std::sync::Once::new();
    CLASSES.call_once(|| {
        for factory in ["souphttpsrc", "udpsrc", "fdsrc"] {
            let _ = gst::ElementFactory::make(factory).build();
        }
    });
}

/// An HTTP server on 127.0.0.1 that hands each connection to `serve` on a thread of its own,
/// until dropped. Handlers must return once `stop` is set; the server also stops by itself
/// after a minute.
struct Server {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(serve: impl Fn(TcpStream, &AtomicBool) + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("address").port();
        let stop = Arc::new(AtomicBool::new(false));
        let stop_accept = stop.clone();
        let serve = Arc::new(serve);
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut handlers = Vec::new();
            while !stop_accept.load(Ordering::SeqCst) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        let (serve, stop) = (serve.clone(), stop_accept.clone());
                        handlers.push(std::thread::spawn(move || serve(stream, &stop)));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            stop_accept.store(true, Ordering::SeqCst);
            for h in handlers {
                let _ = h.join();
            }
        });
        Server {
            port,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Keeps a connection open, saying nothing, until the server stops.
fn hold(stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Reads the request head, then answers 200 with no length (a stream that may never end).
fn answer(stream: &mut TcpStream, content_type: &str) -> bool {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return false,
        }
    }
    stream
        .write_all(format!("HTTP/1.0 200 OK\r\nContent-Type: {content_type}\r\n\r\n").as_bytes())
        .is_ok()
}

/// A 5 s 440 Hz stereo MP3 at 44.1 kHz, frames only (no tags), so copies of it concatenate
/// into a valid endless stream.
fn mp3() -> PathBuf {
    let path = fixture_dir("network").join("tone.mp3");
    make_sine(&path, 44_100, 2, 440.0, 220_000, "lamemp3enc");
    path
}

fn rms(samples: &[i16]) -> f64 {
    let sum: f64 = samples.iter().map(|s| (*s as f64).powi(2)).sum();
    (sum / samples.len().max(1) as f64).sqrt()
}

/// The element's ERROR, or `None` if none came within `wait`.
fn error_within(pipeline: &gst::Pipeline, wait: Duration) -> Option<gst::glib::Error> {
    let bus = pipeline.bus().expect("bus");
    let msg = bus.timed_pop_filtered(
        gst::ClockTime::from_nseconds(wait.as_nanos() as u64),
        &[gst::MessageType::Error],
    )?;
    match msg.view() {
        gst::MessageView::Error(e) => Some(e.error()),
        _ => None,
    }
}

#[test]
fn a_server_that_never_answers_blocks_no_state_change_and_fails_within_the_timeout() {
    init_network();
    let server = Server::start(|_stream, stop| hold(stop));
    let url = server.url("/stalled.ogg");
    for mode in ["playback", "mixing"] {
        let pipeline = pipeline(&format!(
            "bgaudiosrc mode={mode} location={url} timeout=1000000000 ! fakesink"
        ));
        let started = Instant::now();
        let _ = pipeline.set_state(gst::State::Playing);
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(100),
            "{mode}: PLAYING took {took:?}"
        );

        let err = error_within(&pipeline, Duration::from_secs(5)).expect("an error");
        let after = started.elapsed();
        assert!(err.matches(gst::ResourceError::Read), "{mode}: {err:?}");
        assert!(err.message().contains(&url), "{mode}: {}", err.message());
        assert!(err.message().contains("within 1 s"), "{}", err.message());
        assert!(
            (Duration::from_millis(900)..Duration::from_secs(3)).contains(&after),
            "{mode}: error after {after:?}"
        );

        let stopping = Instant::now();
        pipeline.set_state(gst::State::Null).expect("null");
        let took = stopping.elapsed();
        assert!(
            took < Duration::from_millis(300),
            "{mode}: NULL took {took:?}"
        );
    }
}

#[test]
fn stopping_while_the_source_says_nothing_is_quick_and_quiet() {
    init_network();
    let server = Server::start(|_stream, stop| hold(stop));
    let url = server.url("/stalled.ogg");
    // The default timeout (10 s) is far off: the wait is cut short by the state change.
    let pipeline = pipeline(&format!("bgaudiosrc location={url} ! fakesink"));
    let _ = pipeline.set_state(gst::State::Playing);
    std::thread::sleep(Duration::from_millis(300));
    for state in [gst::State::Paused, gst::State::Ready, gst::State::Null] {
        let started = Instant::now();
        let _ = pipeline.set_state(state);
        let took = started.elapsed();
        assert!(took < Duration::from_millis(300), "{state:?} took {took:?}");
    }
    assert_eq!(error_within(&pipeline, Duration::ZERO), None);
}

#[test]
fn joining_a_running_mixer_from_a_silent_server_stalls_neither_the_caller_nor_the_mixer() {
    init_network();
    let server = Server::start(|_stream, stop| hold(stop));
    let pipeline = pipeline(
        "audiotestsrc is-live=true samplesperbuffer=480 ! audiomixer name=mix \
         ! audio/x-raw,rate=48000,channels=2 ! fakesink name=out sync=true",
    );
    let buffers = Arc::new(Mutex::new(0usize));
    let count = buffers.clone();
    pipeline
        .by_name("out")
        .and_then(|s| s.static_pad("sink"))
        .expect("sink pad")
        .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            *count.lock().unwrap() += 1;
            gst::PadProbeReturn::Ok
        });
    pipeline.set_state(gst::State::Playing).expect("play");
    std::thread::sleep(Duration::from_millis(300));

    let bg = gst::ElementFactory::make("bgaudiosrc")
        .property("location", server.url("/silent.mp3"))
        .property_from_str("mode", "mixing")
        .build()
        .expect("bgaudiosrc");
    pipeline.add(&bg).expect("add");
    let mixer = pipeline.by_name("mix").expect("mixer");
    let pad = mixer.request_pad_simple("sink_%u").expect("mixer pad");
    bg.static_pad("src").expect("src").link(&pad).expect("link");
    let started = Instant::now();
    bg.sync_state_with_parent().expect("sync");
    let took = started.elapsed();
    assert!(took < Duration::from_millis(100), "joining took {took:?}");

    // The mixer goes on at its pace: 10 ms buffers, about 100 a second.
    let before = *buffers.lock().unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    let produced = *buffers.lock().unwrap() - before;
    assert!(
        produced >= 80,
        "the mixer produced {produced} buffers in 1 s"
    );

    let started = Instant::now();
    bg.set_state(gst::State::Null).expect("null");
    let took = started.elapsed();
    assert!(took < Duration::from_millis(300), "leaving took {took:?}");
    bg.static_pad("src")
        .expect("src")
        .unlink(&pad)
        .expect("unlink");
    mixer.release_request_pad(&pad);
    pipeline.remove(&bg).expect("remove");
    assert_eq!(error_within(&pipeline, Duration::ZERO), None);
    pipeline.set_state(gst::State::Null).expect("null");
}

/// Serves `path` over and over, as fast as the client reads, until the client goes or the
/// server stops (at most 400 MB).
fn serve_endlessly(path: &Path) -> Server {
    let bytes = Arc::new(std::fs::read(path).expect("fixture"));
    Server::start(move |mut stream, stop| {
        if !answer(&mut stream, "audio/mpeg") {
            return;
        }
        let mut sent = 0usize;
        while !stop.load(Ordering::SeqCst) && sent < 400 << 20 {
            if stream.write_all(&bytes).is_err() {
                return;
            }
            sent += bytes.len();
        }
    })
}

#[test]
fn an_endless_http_stream_plays_with_memory_held_to_max_cache_size() {
    init_network();
    let server = serve_endlessly(&mp3());
    let limit = 2_000_000u64;
    // One minute of audio, read as fast as it comes: 10.6 MB decoded, five times the limit.
    let target = 60 * 44_100usize;
    let pipeline = pipeline(&format!(
        "bgaudiosrc location={} max-cache-size={limit} ! {} ! appsink name=sink",
        server.url("/radio.mp3"),
        s16(",rate=44100,channels=2")
    ));
    let most_held = Arc::new(Mutex::new(0u64));
    let held = most_held.clone();
    let sink = pipeline
        .by_name("sink")
        .and_then(|s| s.static_pad("sink"))
        .expect("sink pad");
    sink.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
        let usage = gstbgaudio::cache_usage();
        let mut most = held.lock().unwrap();
        *most = (*most).max(usage.bytes + usage.retained_bytes);
        gst::PadProbeReturn::Ok
    });
    let out = collect_pipeline(&pipeline, Some(target));
    assert!(out.error.is_none(), "{:?}", out.error);
    // (Stopped by the sink at the target, not by an end of the stream.)
    assert!(out.samples.len() / 2 >= target, "the stream ended early");
    // The audio is the tone all the way through.
    let last_second = &out.samples[out.samples.len() - 88_200..];
    assert!(rms(last_second) > 10_000.0, "rms {}", rms(last_second));
    let most = *most_held.lock().unwrap();
    assert!(
        most <= limit + 300_000,
        "the decoded copy held {most} bytes, over max-cache-size {limit}"
    );
}

#[test]
fn a_stream_that_stalls_gives_the_mixer_silence_not_late_buffers() {
    init_network();
    let bytes = std::fs::read(mp3()).expect("fixture");
    // The first fifth of the 5 s file (about a second), then nothing, with the connection
    // kept open.
    let first = bytes[..bytes.len() / 5].to_vec();
    let server = Server::start(move |mut stream, stop| {
        if answer(&mut stream, "audio/mpeg") && stream.write_all(&first).is_ok() {
            hold(stop);
        }
    });
    let pipeline = pipeline(&format!(
        "bgaudiosrc name=bg mode=mixing fade-in-duration=0 location={} \
         ! {} ! fakesink sync=true",
        server.url("/stalls.mp3"),
        s16(",rate=44100,channels=2")
    ));
    // (pts, duration, gap, loudest sample) of every buffer the element pushes.
    type Seen = (gst::ClockTime, gst::ClockTime, bool, i16);
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let seen_cb = seen.clone();
    pipeline
        .by_name("bg")
        .and_then(|e| e.static_pad("src"))
        .expect("src pad")
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(buffer) = info.buffer() {
                let map = buffer.map_readable().expect("map");
                let loudest = map
                    .chunks_exact(2)
                    .map(|b| i16::from_ne_bytes([b[0], b[1]]).saturating_abs())
                    .max()
                    .unwrap_or(0);
                seen_cb.lock().unwrap().push((
                    buffer.pts().expect("pts"),
                    buffer.duration().expect("duration"),
                    buffer.flags().contains(gst::BufferFlags::GAP),
                    loudest,
                ));
            }
            gst::PadProbeReturn::Ok
        });
    pipeline.set_state(gst::State::Playing).expect("play");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(error_within(&pipeline, Duration::ZERO), None);
    pipeline.set_state(gst::State::Null).expect("null");

    let seen = seen.lock().unwrap();
    // Sound first, then silence flagged as a gap, with no hole in the timeline between.
    let heard = seen.iter().take_while(|(_, _, gap, _)| !gap).count();
    assert!(heard >= 20, "only {heard} buffers of sound");
    assert!(seen[..heard]
        .iter()
        .any(|(_, _, _, loudest)| *loudest > 10_000));
    let gaps = &seen[heard..];
    assert!(
        gaps.len() >= 20,
        "only {} silent buffers after the stall",
        gaps.len()
    );
    assert!(gaps
        .iter()
        .all(|(_, _, gap, loudest)| *gap && *loudest == 0));
    for pair in seen.windows(2) {
        assert_eq!(pair[0].0 + pair[0].1, pair[1].0, "the timeline has a hole");
    }
}

#[test]
fn a_live_ogg_vorbis_stream_over_udp_plays() {
    init_network();
    // A free port: bind, read it, let go.
    let port = UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port")
        .port();
    let receiver = pipeline(&format!(
        "bgaudiosrc location=udp://127.0.0.1:{port} ! {} ! appsink name=sink",
        s16(",rate=44100,channels=2")
    ));
    let collected = Arc::new(Mutex::new(None));
    let result = collected.clone();
    let receiving = receiver.clone();
    let collector = std::thread::spawn(move || {
        *result.lock().unwrap() = Some(collect_pipeline(&receiving, Some(44_100)));
    });
    // The receiver has bound the port once a socket of ours can no longer bind it. Vorbis sends
    // its headers only at the start, so the sender must not start before that.
    let deadline = Instant::now() + Duration::from_secs(10);
    while UdpSocket::bind(("127.0.0.1", port)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the receiver never opened the port"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let sender = pipeline(&format!(
        "audiotestsrc is-live=true wave=sine freq=440 samplesperbuffer=441 \
         ! audio/x-raw,rate=44100,channels=2 ! audioconvert ! vorbisenc ! oggmux \
         ! udpsink host=127.0.0.1 port={port}"
    ));
    sender.set_state(gst::State::Playing).expect("send");
    collector.join().expect("collector");
    sender.set_state(gst::State::Null).expect("null");
    let out = collected.lock().unwrap().take().expect("output");
    assert!(out.error.is_none(), "{:?}", out.error);
    // One second of the tone: loud, and 440 zero crossings a second in each direction.
    let left: Vec<i16> = out.samples.iter().step_by(2).copied().collect();
    let tail = &left[left.len() / 2..];
    assert!(rms(tail) > 8_000.0, "rms {}", rms(tail));
    let rising = tail.windows(2).filter(|w| w[0] < 0 && w[1] >= 0).count();
    let expected = 440 * tail.len() / 44_100;
    assert!(
        rising.abs_diff(expected) <= 3,
        "{rising} rising crossings, expected about {expected}"
    );
}
