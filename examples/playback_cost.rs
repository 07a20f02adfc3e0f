// SPDX-License-Identifier: MIT OR Apache-2.0

//! Measures what part 1 promises: the first-buffer latency of `bgaudiosrc` and the CPU time of
//! looped playback in real time, beside GStreamer's own floor (`audiotestsrc wave=silence`) in
//! the same run.
//!
//!     cargo run --release --example playback_cost [SECONDS]
//!
//! SECONDS is the length of each real-time run (default 60). The input is a 3-minute MP3 that
//! the example encodes once with lamemp3enc into target/, so the first-buffer figure includes
//! opening and probing a real compressed file; the looped runs play the shipped
//! assets/ambience.ogg. CPU time is read from /proc/self/stat (user +
//! system, all threads, in clock ticks of 10 ms).

use gst::prelude::*;
use std::error::Error;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// User + system CPU time of this process so far.
fn cpu_time() -> Result<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').ok_or("bad /proc/self/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(Duration::from_millis(ticks * 10))
}

fn make_mp3(path: &PathBuf) -> Result<()> {
    if path.exists() {
        return Ok(());
    }
    let tmp = path.with_extension("part");
    // 180 s of a chord at 44.1 kHz stereo: 180 * 44100 / 1000 buffers of 1000 frames.
    let desc = format!(
        "audiomixer name=m ! audio/x-raw,rate=44100,channels=2 ! audioconvert ! lamemp3enc \
         ! filesink location={} \
         audiotestsrc freq=220 volume=0.3 num-buffers=7938 samplesperbuffer=1000 ! m. \
         audiotestsrc freq=277 volume=0.2 num-buffers=7938 samplesperbuffer=1000 ! m.",
        tmp.display()
    );
    run_to_eos(&desc, None)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Runs `desc` to EOS (or for `limit`) and returns (time to first buffer at the sink named
/// `sink`, if there is one, and the CPU time spent).
fn run_to_eos(desc: &str, limit: Option<Duration>) -> Result<(Option<Duration>, Duration)> {
    let pipeline = gst::parse::launch(desc)?
        .downcast::<gst::Pipeline>()
        .map_err(|_| "not a pipeline")?;
    let first = Arc::new(Mutex::new(None::<Instant>));
    if let Some(sink) = pipeline.by_name("sink") {
        let first = first.clone();
        let pad = sink.static_pad("sink").ok_or("sink without pad")?;
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            let mut first = first.lock().unwrap_or_else(|e| e.into_inner());
            first.get_or_insert_with(Instant::now);
            gst::PadProbeReturn::Ok
        });
    }
    let cpu_before = cpu_time()?;
    let started = Instant::now();
    pipeline.set_state(gst::State::Playing)?;
    let bus = pipeline.bus().ok_or("no bus")?;
    let timeout = limit
        .map(|l| l + Duration::from_secs(30))
        .unwrap_or(Duration::from_secs(600));
    let msg = bus.timed_pop_filtered(
        gst::ClockTime::from_nseconds(timeout.as_nanos() as u64),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    let cpu = cpu_time()? - cpu_before;
    pipeline.set_state(gst::State::Null)?;
    match msg.as_ref().map(|m| m.view()) {
        Some(gst::MessageView::Error(e)) => return Err(format!("{}: {}", desc, e.error()).into()),
        None => return Err(format!("{desc}: no EOS in time").into()),
        _ => (),
    }
    let first = first
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .map(|t| t - started);
    Ok((first, cpu))
}

fn main() -> Result<()> {
    gst::init()?;
    gstbgaudio::plugin_register_static()?;
    let seconds: u64 = match std::env::args().nth(1) {
        Some(s) => s.parse()?,
        None => 60,
    };

    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("bench-media");
    std::fs::create_dir_all(&dir)?;
    let mp3 = dir.join("three-minutes.mp3");
    make_mp3(&mp3)?;
    let location = mp3.display();

    // First buffer: from set_state(PLAYING) to the first buffer at the sink, 5 runs.
    let mut latencies = Vec::new();
    for _ in 0..5 {
        let (first, _) = run_to_eos(
            &format!("bgaudiosrc location={location} num-buffers=1 ! fakesink name=sink"),
            None,
        )?;
        latencies.push(first.ok_or("no buffer")?);
    }
    latencies.sort();
    println!(
        "first buffer, 3-min MP3, 5 runs: min {:.1} ms, median {:.1} ms, max {:.1} ms",
        latencies[0].as_secs_f64() * 1e3,
        latencies[2].as_secs_f64() * 1e3,
        latencies[4].as_secs_f64() * 1e3
    );

    // Real-time looped playback of the shipped clip (it loops several times a minute): the same
    // number of 20 ms buffers from each source, synced to the clock. The bgaudiosrc figures
    // include decoding the first pass.
    let clip = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("assets")
        .join("ambience.ogg");
    let clip = clip.display();
    let buffers = seconds * 50;
    let cases = [
        (
            "audiotestsrc wave=silence (floor)",
            format!(
                "audiotestsrc wave=silence samplesperbuffer=960 num-buffers={buffers} \
                 ! audio/x-raw,format=S16LE,rate=48000,channels=2 ! fakesink sync=true"
            ),
        ),
        (
            "bgaudiosrc loop=true volume=1.0",
            format!(
                "bgaudiosrc location={clip} loop=true num-buffers={buffers} \
                 ! fakesink sync=true"
            ),
        ),
        (
            "bgaudiosrc loop=true volume=0.5",
            format!(
                "bgaudiosrc location={clip} loop=true volume=0.5 num-buffers={buffers} \
                 ! fakesink sync=true"
            ),
        ),
    ];
    for (name, desc) in cases {
        let (_, cpu) = run_to_eos(&desc, Some(Duration::from_secs(seconds)))?;
        println!(
            "{name}: {seconds} s real time, CPU {:.2} s ({:.2} ms per stream-second)",
            cpu.as_secs_f64(),
            cpu.as_secs_f64() * 1e3 / seconds as f64
        );
    }
    Ok(())
}
