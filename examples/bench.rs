// SPDX-License-Identifier: MIT OR Apache-2.0

//! Whole-pipeline benchmark: bgaudiosrc against GStreamer's floor and the stock ways of looping
//! a file, in the same run, at 48 kHz stereo S16 with 20 ms buffers.
//!
//!     cargo run --release --example bench            # everything (about 3 minutes)
//!     cargo run --release --example bench -- quick   # shorter runs, fewer instances
//!     cargo run --release --example bench -- startup # only the start-up rows (50 files)
//!     cargo run --release --example bench -- replay  # only the replay-after-stop row
//!
//! Each scenario runs in a child process of its own (this program started again with the
//! scenario's name), so CPU time and resident memory are that scenario's alone. CPU time is
//! user + system from /proc/self/stat over a steady-state window that starts after a warm-up;
//! resident memory is VmRSS from /proc/self/status.
//!
//! Scenarios:
//! - `sync`: N instances, each `SOURCE ! fakesink sync=true`, in real time. SOURCE is
//!   `audiotestsrc wave=silence samplesperbuffer=960` (the floor), `bgaudiosrc loop=true
//!   volume=0.5` on the shipped clip, the segment-seek loop (`filesrc ! decodebin ! audioconvert !
//!   audioresample ! volume`, seeked back on SEGMENT_DONE) or `multifilesrc loop=true ! decodebin
//!   ! …`. Reported as CPU per instance-second.
//! - `unsynced`: one instance, one hour of 20 ms buffers into `fakesink sync=false`.
//! - `memory`: N instances looping the same 3-minute MP3; resident memory once decoded.
//! - `first-buffer`: N instances of the 3-minute MP3 started at once, from each one's
//!   set_state(PLAYING) to its first buffer.
//! - `start-distinct`: N branches on N distinct files (copies of one 5 s MP3) in one pipeline,
//!   from the pipeline's set_state(PLAYING) to each branch's first buffer at its sink: bgaudiosrc
//!   against the stock chain (`uridecodebin ! audioconvert ! audioresample ! caps ! fakesink`),
//!   each in a fresh process on fresh copies, so no file is known to either before it starts.
//!   Run 5 times for each chain, in turn; the medians of the runs are reported.
//! - `start-one`: 30 distinct copies of the 5 s MP3 started one after another, each in a
//!   pipeline of its own: CPU time and time from set_state(PLAYING) to its first buffer.
//! - `replay`: the 3-minute MP3 played for 3 s, stopped, and played again: CPU of each play.

use gst::prelude::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

type Error = Box<dyn std::error::Error>;

const CAPS: &str = "audio/x-raw,format=S16LE,layout=interleaved,rate=48000,channels=2";

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    gst::init()?;
    gstbgaudio::plugin_register_static()?;
    match args.first().map(String::as_str) {
        Some("scenario") => scenario(&args[1..]),
        Some("quick") => run_all(true),
        // Sections on their own: the start-up rows and the replay row.
        Some("startup") => start_up(50, 5),
        Some("replay") => replay(),
        None => run_all(false),
        Some(other) => Err(format!("unknown argument {other:?}").into()),
    }
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn clip() -> PathBuf {
    manifest_dir().join("assets").join("ambience.ogg")
}

/// A 3-minute stereo MP3 at 44.1 kHz, encoded once into target/.
fn long_mp3() -> Result<PathBuf, Error> {
    let dir = manifest_dir().join("target").join("bench-media");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("three-minutes.mp3");
    if !path.exists() {
        let tmp = path.with_extension("part");
        let pipeline = gst::parse::launch(&format!(
            "audiomixer name=m ! audio/x-raw,rate=44100,channels=2 ! audioconvert ! lamemp3enc \
             ! filesink location={} \
             audiotestsrc freq=220 volume=0.3 num-buffers=7938 samplesperbuffer=1000 ! m. \
             audiotestsrc freq=277 volume=0.2 num-buffers=7938 samplesperbuffer=1000 ! m.",
            tmp.display()
        ))?;
        run_to_eos(&pipeline)?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(path)
}

/// `n` copies of one 5 s stereo MP3 at 44.1 kHz in a folder of their own, made for this process
/// (distinct paths: nothing about them is known to a decoded-copy registry yet).
fn distinct_mp3s(n: usize) -> Result<Vec<PathBuf>, Error> {
    let dir = manifest_dir().join("target").join("bench-media");
    let source = dir.join("five-seconds.mp3");
    if !source.exists() {
        let tmp = source.with_extension("part");
        run_to_eos(&gst::parse::launch(&format!(
            "audiotestsrc freq=330 volume=0.3 num-buffers=221 samplesperbuffer=1000 \
             ! audio/x-raw,rate=44100,channels=2 ! audioconvert ! lamemp3enc \
             ! filesink location={}",
            tmp.display()
        ))?)?;
        std::fs::rename(&tmp, &source)?;
    }
    let copies = dir.join(format!("distinct-{}", std::process::id()));
    std::fs::create_dir_all(&copies)?;
    (0..n)
        .map(|i| {
            let path = copies.join(format!("copy-{i}.mp3"));
            std::fs::copy(&source, &path)?;
            Ok(path)
        })
        .collect()
}

/// CPU time (user + system) of this process, to the microsecond.
fn precise_cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn run_to_eos(pipeline: &gst::Element) -> Result<(), Error> {
    pipeline.set_state(gst::State::Playing)?;
    let bus = pipeline.bus().ok_or("no bus")?;
    let msg = bus.timed_pop_filtered(
        gst::ClockTime::from_seconds(600),
        &[gst::MessageType::Eos, gst::MessageType::Error],
    );
    pipeline.set_state(gst::State::Null)?;
    match msg.as_ref().map(|m| m.view()) {
        Some(gst::MessageView::Eos(_)) => Ok(()),
        Some(gst::MessageView::Error(e)) => Err(format!("{}", e.error()).into()),
        _ => Err("no EOS".into()),
    }
}

fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

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

/// The source part of one instance's pipeline, for a synced or unsynced scenario.
fn source(kind: &str, location: &Path, volume: f64) -> String {
    let location = location.display();
    match kind {
        "floor" => "audiotestsrc wave=silence samplesperbuffer=960".to_owned(),
        "bgaudiosrc" => format!("bgaudiosrc location={location} loop=true volume={volume}"),
        "bgaudiosrc-shaped" => format!(
            "bgaudiosrc location={location} loop=true volume={volume} trim-silence=true \
             loop-crossfade=200000000"
        ),
        "segment-seek" => format!(
            "filesrc location={location} ! decodebin ! audioconvert ! audioresample \
             ! volume volume={volume}"
        ),
        "multifilesrc" => format!(
            "multifilesrc location={location} loop=true ! decodebin ! audioconvert \
             ! audioresample ! volume volume={volume}"
        ),
        other => panic!("unknown source {other}"),
    }
}

/// A server has its plugins loaded already: load them with one throwaway run on another MP3
/// (so the measured file is neither probed nor cached yet).
fn warm_up(mp3: &Path) -> Result<(), Error> {
    let warmup = mp3.with_file_name("warm-up.mp3");
    if !warmup.exists() {
        run_to_eos(&gst::parse::launch(&format!(
            "audiotestsrc num-buffers=40 ! lamemp3enc ! filesink location={}",
            warmup.display()
        ))?)?;
    }
    run_to_eos(&gst::parse::launch(&format!(
        "bgaudiosrc location={} num-buffers=1 ! {CAPS} ! fakesink",
        warmup.display()
    ))?)
}

/// The decoding part of a start-up scenario's branch: bgaudiosrc, or the stock chain.
fn start_up_source(kind: &str, file: &Path) -> Result<String, Error> {
    Ok(match kind {
        "bgaudiosrc" => format!("bgaudiosrc location={}", file.display()),
        "stock" => format!(
            "uridecodebin uri={} ! audioconvert ! audioresample",
            gst::glib::filename_to_uri(file, None)?
        ),
        other => return Err(format!("unknown chain {other}").into()),
    })
}

/// Runs one scenario in this process and prints one line `key=value ...` for the parent.
fn scenario(args: &[String]) -> Result<(), Error> {
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    match arg(0).as_str() {
        "sync" => {
            let (kind, n, seconds): (String, usize, u64) =
                (arg(1), arg(2).parse()?, arg(3).parse()?);
            let pipelines = (0..n)
                .map(|_| {
                    gst::parse::launch(&format!(
                        "{} ! {CAPS} ! fakesink name=sink sync=true",
                        source(&kind, &clip(), 0.5)
                    ))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let segment_loop = kind == "segment-seek";
            // First buffer: from each pipeline's set_state to its first buffer at the sink.
            let mut firsts = Vec::new();
            for p in &pipelines {
                let first = Arc::new(Mutex::new(None::<Duration>));
                let first_probe = first.clone();
                let started = Instant::now();
                let pad = p
                    .downcast_ref::<gst::Bin>()
                    .and_then(|b| b.by_name("sink"))
                    .and_then(|s| s.static_pad("sink"))
                    .ok_or("no sink pad")?;
                pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                    if let Ok(mut first) = first_probe.lock() {
                        first.get_or_insert_with(|| started.elapsed());
                    }
                    gst::PadProbeReturn::Remove
                });
                p.set_state(gst::State::Paused)?;
                firsts.push(first);
            }
            for p in &pipelines {
                let _ = p.state(gst::ClockTime::from_seconds(10));
                if segment_loop {
                    p.seek_simple(
                        gst::SeekFlags::FLUSH | gst::SeekFlags::SEGMENT,
                        gst::ClockTime::ZERO,
                    )?;
                }
                p.set_state(gst::State::Playing)?;
            }
            let start = Instant::now();
            let warmup = Duration::from_secs(3);
            let mut cpu_start = None;
            while start.elapsed() < warmup + Duration::from_secs(seconds) {
                if cpu_start.is_none() && start.elapsed() >= warmup {
                    cpu_start = Some((cpu_time(), Instant::now()));
                }
                for p in &pipelines {
                    let bus = p.bus().ok_or("no bus")?;
                    while let Some(msg) = bus.pop() {
                        match msg.view() {
                            gst::MessageView::Error(e) => {
                                return Err(format!("{kind}: {}", e.error()).into())
                            }
                            gst::MessageView::SegmentDone(_) => {
                                p.seek_simple(gst::SeekFlags::SEGMENT, gst::ClockTime::ZERO)?;
                            }
                            _ => (),
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let (cpu0, t0) = cpu_start.ok_or("no window")?;
            let cpu = cpu_time() - cpu0;
            let wall = t0.elapsed().as_secs_f64();
            for p in &pipelines {
                p.set_state(gst::State::Null)?;
            }
            let mut firsts: Vec<Duration> = firsts
                .iter()
                .filter_map(|f| f.lock().ok().and_then(|f| *f))
                .collect();
            firsts.sort();
            println!(
                "cpu_ms_per_instance_second={:.4} rss_mb={:.1} first_buffer_ms={:.2}",
                cpu.as_secs_f64() * 1e3 / (n as f64 * wall),
                rss_bytes() as f64 / 1e6,
                firsts
                    .get(firsts.len() / 2)
                    .map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
            );
        }
        "unsynced" => {
            let (kind, buffers): (String, u64) = (arg(1), arg(2).parse()?);
            let pipeline = gst::parse::launch(&format!(
                "{} num-buffers={buffers} ! {CAPS} ! fakesink sync=false",
                source(&kind, &clip(), 0.5)
            ))?;
            // Start-up (and, for bgaudiosrc, decoding the first pass) is part of the figure.
            let cpu0 = cpu_time();
            run_to_eos(&pipeline)?;
            println!("cpu_s={:.3}", (cpu_time() - cpu0).as_secs_f64());
        }
        "memory" => {
            let n: usize = arg(1).parse()?;
            let mp3 = long_mp3()?;
            warm_up(&mp3)?;
            let base = rss_bytes();
            let pipelines = (0..n)
                .map(|_| {
                    gst::parse::launch(&format!(
                        "bgaudiosrc location={} loop=true ! {CAPS} ! fakesink sync=true",
                        mp3.display()
                    ))
                })
                .collect::<Result<Vec<_>, _>>()?;
            for p in &pipelines {
                p.set_state(gst::State::Playing)?;
            }
            // Wait until the shared copy is complete (its size stops growing).
            let mut last = 0;
            loop {
                std::thread::sleep(Duration::from_millis(500));
                let bytes = gstbgaudio::cache_usage().bytes;
                if bytes == last && bytes > 0 {
                    break;
                }
                last = bytes;
            }
            let usage = gstbgaudio::cache_usage();
            println!(
                "rss_mb={:.1} rss_growth_mb={:.1} cache_entries={} cache_mb={:.1}",
                rss_bytes() as f64 / 1e6,
                (rss_bytes().saturating_sub(base)) as f64 / 1e6,
                usage.entries,
                usage.bytes as f64 / 1e6
            );
            for p in &pipelines {
                p.set_state(gst::State::Null)?;
            }
        }
        "first-buffer" => {
            let n: usize = arg(1).parse()?;
            let mp3 = long_mp3()?;
            warm_up(&mp3)?;
            let latencies = Arc::new(Mutex::new(Vec::new()));
            let threads: Vec<_> = (0..n)
                .map(|_| {
                    let pipeline = gst::parse::launch(&format!(
                        "bgaudiosrc location={} ! {CAPS} ! fakesink name=sink sync=true",
                        mp3.display()
                    ));
                    let latencies = latencies.clone();
                    std::thread::spawn(move || -> Result<gst::Element, String> {
                        let pipeline = pipeline.map_err(|e| e.to_string())?;
                        let bin = pipeline.downcast_ref::<gst::Bin>().ok_or("not a bin")?;
                        let pad = bin
                            .by_name("sink")
                            .and_then(|s| s.static_pad("sink"))
                            .ok_or("no sink pad")?;
                        let (tx, rx) = std::sync::mpsc::channel();
                        let tx = Mutex::new(Some(tx));
                        pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                            if let Some(tx) = tx.lock().ok().and_then(|mut t| t.take()) {
                                let _ = tx.send(Instant::now());
                            }
                            gst::PadProbeReturn::Ok
                        });
                        let started = Instant::now();
                        pipeline
                            .set_state(gst::State::Playing)
                            .map_err(|e| e.to_string())?;
                        let first = rx
                            .recv_timeout(Duration::from_secs(10))
                            .map_err(|e| e.to_string())?;
                        latencies
                            .lock()
                            .map_err(|e| e.to_string())?
                            .push(first - started);
                        Ok(pipeline)
                    })
                })
                .collect();
            let mut pipelines = Vec::new();
            for t in threads {
                pipelines.push(t.join().map_err(|_| "thread panicked")??);
            }
            for p in &pipelines {
                p.set_state(gst::State::Null)?;
            }
            let mut l = latencies.lock().map_err(|e| e.to_string())?.clone();
            l.sort();
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            println!(
                "median_ms={:.2} max_ms={:.2}",
                ms(l[l.len() / 2]),
                ms(l[l.len() - 1])
            );
        }
        "start-distinct" => {
            let (kind, n): (String, usize) = (arg(1), arg(2).parse()?);
            let mp3 = long_mp3()?;
            warm_up(&mp3)?;
            let files = distinct_mp3s(n)?;
            let branches: Vec<String> = files
                .iter()
                .enumerate()
                .map(|(i, f)| -> Result<String, Error> {
                    let source = start_up_source(&kind, f)?;
                    Ok(format!(
                        "{source} ! {CAPS} ! fakesink name=sink{i} sync=true"
                    ))
                })
                .collect::<Result<_, _>>()?;
            let pipeline = gst::parse::launch(&branches.join(" "))?
                .downcast::<gst::Bin>()
                .map_err(|_| "not a bin")?;
            let firsts: Vec<Arc<Mutex<Option<Instant>>>> =
                (0..n).map(|_| Arc::new(Mutex::new(None))).collect();
            // CPU time when the last branch got its first buffer, read right there: the main
            // thread may be scheduled late, once decoders are filling the rest of their files.
            let started_count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let cpu_at_last = Arc::new(Mutex::new(None::<Duration>));
            for (i, first) in firsts.iter().enumerate() {
                let (first, count, cpu_at_last) =
                    (first.clone(), started_count.clone(), cpu_at_last.clone());
                let pad = pipeline
                    .by_name(&format!("sink{i}"))
                    .and_then(|s| s.static_pad("sink"))
                    .ok_or("no sink pad")?;
                pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                    if let Ok(mut first) = first.lock() {
                        first.get_or_insert_with(Instant::now);
                    }
                    if count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == n {
                        if let Ok(mut cpu) = cpu_at_last.lock() {
                            *cpu = Some(precise_cpu_time());
                        }
                    }
                    gst::PadProbeReturn::Remove
                });
            }
            let cpu0 = precise_cpu_time();
            let started = Instant::now();
            pipeline.set_state(gst::State::Playing)?;
            let returned = started.elapsed();
            let deadline = started + Duration::from_secs(20);
            let mut latencies = loop {
                let got: Vec<Duration> = firsts
                    .iter()
                    .filter_map(|f| f.lock().ok().and_then(|f| *f))
                    .map(|t| t - started)
                    .collect();
                if got.len() == n {
                    break got;
                }

                if Instant::now() > deadline {
                    return Err(format!("{kind}: {} of {n} branches started", got.len()).into());
                }
                std::thread::sleep(Duration::from_millis(2));
            };
            let cpu = cpu_at_last
                .lock()
                .ok()
                .and_then(|c| *c)
                .ok_or("no CPU figure")?
                - cpu0;
            pipeline.set_state(gst::State::Null)?;
            if let Some(dir) = files.first().and_then(|f| f.parent()) {
                let _ = std::fs::remove_dir_all(dir);
            }
            latencies.sort();
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            println!(
                "median_ms={:.2} max_ms={:.2} set_state_ms={:.2} cpu_ms={:.1}",
                ms(latencies[n / 2]),
                ms(latencies[n - 1]),
                ms(returned),
                ms(cpu)
            );
        }
        "start-one" => {
            let (kind, n): (String, usize) = (arg(1), arg(2).parse()?);
            let mp3 = long_mp3()?;
            warm_up(&mp3)?;
            // Three more than measured: the first start-ups of each chain load its plugins.
            let files = distinct_mp3s(n + 3)?;
            let (mut cpus, mut walls) = (Vec::new(), Vec::new());
            for (i, f) in files.iter().enumerate() {
                let source = start_up_source(&kind, f)?;
                let pipeline = gst::parse::launch(&format!(
                    "{source} ! {CAPS} ! fakesink name=sink sync=true"
                ))?
                .downcast::<gst::Bin>()
                .map_err(|_| "not a bin")?;
                let pad = pipeline
                    .by_name("sink")
                    .and_then(|s| s.static_pad("sink"))
                    .ok_or("no sink pad")?;
                let (tx, rx) = std::sync::mpsc::channel();
                pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                    let _ = tx.send((Instant::now(), precise_cpu_time()));
                    gst::PadProbeReturn::Remove
                });
                let (cpu0, started) = (precise_cpu_time(), Instant::now());
                pipeline.set_state(gst::State::Playing)?;
                let (first, cpu) = rx.recv_timeout(Duration::from_secs(10))?;
                pipeline.set_state(gst::State::Null)?;
                if i >= 3 {
                    cpus.push((cpu - cpu0).as_secs_f64() * 1e3);
                    walls.push((first - started).as_secs_f64() * 1e3);
                }
                // Whatever the last one left running settles before the next.
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Some(dir) = files.first().and_then(|f| f.parent()) {
                let _ = std::fs::remove_dir_all(dir);
            }
            let median = |mut v: Vec<f64>| {
                v.sort_by(|a, b| a.total_cmp(b));
                v[v.len() / 2]
            };
            println!("cpu_ms={:.3} wall_ms={:.3}", median(cpus), median(walls));
        }
        "replay" => {
            let mp3 = long_mp3()?;
            warm_up(&mp3)?;
            let play_with = |head: &str| -> Result<Duration, Error> {
                let pipeline =
                    gst::parse::launch(&format!("{head} ! {CAPS} ! fakesink sync=true"))?;
                let cpu0 = precise_cpu_time();
                pipeline.set_state(gst::State::Playing)?;
                std::thread::sleep(Duration::from_secs(3));
                pipeline.set_state(gst::State::Null)?;
                Ok(precise_cpu_time() - cpu0)
            };
            let play = || play_with(&format!("bgaudiosrc location={}", mp3.display()));
            let (first, second) = (play()?, play()?);
            // What any source costs here (pipeline, state changes, 150 paced 20 ms buffers), and
            // what the stock chain costs for the same play.
            let floor = play_with("audiotestsrc wave=silence samplesperbuffer=960")?;
            let stock = play_with(&format!(
                "uridecodebin uri={} ! audioconvert ! audioresample",
                gst::glib::filename_to_uri(&mp3, None)?
            ))?;
            // The same again with nothing retained: what the second play would cost if the copy
            // were dropped at the stop (decoded again from the start).
            let budget = gstbgaudio::retain_budget();
            gstbgaudio::set_retain_budget(0);
            let unretained = play()?;
            gstbgaudio::set_retain_budget(budget);
            println!(
                "first_s={:.4} second_s={:.4} ratio={:.3} unretained_s={:.4} floor_s={:.4} \
                 stock_s={:.4}",
                first.as_secs_f64(),
                second.as_secs_f64(),
                second.as_secs_f64() / first.as_secs_f64(),
                unretained.as_secs_f64(),
                floor.as_secs_f64(),
                stock.as_secs_f64()
            );
        }
        other => return Err(format!("unknown scenario {other:?}").into()),
    }
    Ok(())
}

/// Runs a scenario in a child process and returns its `key=value` figures.
fn child(args: &[&str]) -> Result<Vec<(String, f64)>, Error> {
    let exe = std::env::current_exe()?;
    let out = Command::new(exe).arg("scenario").args(args).output()?;
    if !out.status.success() {
        return Err(format!(
            "scenario {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    Ok(line
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| v.parse().ok().map(|v| (k.to_owned(), v)))
        .collect())
}

fn get(figures: &[(String, f64)], key: &str) -> f64 {
    figures
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| *v)
        .unwrap_or(f64::NAN)
}

fn run_all(quick: bool) -> Result<(), Error> {
    let (n, stock_n, seconds) = if quick { (50, 10, 5) } else { (200, 20, 20) };
    let hour_buffers = if quick { 18_000 } else { 180_000 };
    let (mem_n, fb_n) = if quick { (20, 10) } else { (100, 50) };
    long_mp3()?;
    println!(
        "bgaudiosrc benchmark, 48 kHz stereo S16, 20 ms buffers, {} cores",
        num_cores()
    );
    println!();

    println!("1. Real-time looping, `SOURCE ! fakesink sync=true`, volume 0.5, {seconds} s window");
    let floor = child(&["sync", "floor", &n.to_string(), &seconds.to_string()])?;
    let floor_cpu = get(&floor, "cpu_ms_per_instance_second");
    let mut rows = vec![("audiotestsrc wave=silence (floor)", n, floor.clone())];
    rows.push((
        "bgaudiosrc loop=true",
        n,
        child(&["sync", "bgaudiosrc", &n.to_string(), &seconds.to_string()])?,
    ));
    rows.push((
        "bgaudiosrc loop=true trim-silence=true loop-crossfade=200 ms",
        n,
        child(&[
            "sync",
            "bgaudiosrc-shaped",
            &n.to_string(),
            &seconds.to_string(),
        ])?,
    ));
    rows.push((
        "segment-seek loop (filesrc ! decodebin ! …)",
        stock_n,
        child(&[
            "sync",
            "segment-seek",
            &stock_n.to_string(),
            &seconds.to_string(),
        ])?,
    ));
    rows.push((
        "multifilesrc loop=true ! decodebin ! …",
        stock_n,
        child(&[
            "sync",
            "multifilesrc",
            &stock_n.to_string(),
            &seconds.to_string(),
        ])?,
    ));
    println!(
        "| source | instances | CPU ms per instance-second | × floor | RSS MB | \
         first buffer ms (median) |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, count, f) in &rows {
        let cpu = get(f, "cpu_ms_per_instance_second");
        println!(
            "| {name} | {count} | {cpu:.3} | {:.2} | {:.0} | {:.1} |",
            cpu / floor_cpu,
            get(f, "rss_mb"),
            get(f, "first_buffer_ms")
        );
    }
    println!();

    let hours = hour_buffers as f64 / 180_000.0;
    println!("2. Unsynced replay, one instance, {hours} h of 20 ms buffers, volume 0.5");
    let floor = get(
        &child(&["unsynced", "floor", &hour_buffers.to_string()])?,
        "cpu_s",
    );
    let ours = get(
        &child(&["unsynced", "bgaudiosrc", &hour_buffers.to_string()])?,
        "cpu_s",
    );
    println!("| source | CPU s | × floor |");
    println!("|---|---|---|");
    println!("| audiotestsrc wave=silence (floor) | {floor:.3} | 1.00 |");
    println!("| bgaudiosrc loop=true | {ours:.3} | {:.2} |", ours / floor);
    println!();

    println!("3. Memory, {mem_n} instances looping one 3-minute MP3");
    let mem = child(&["memory", &mem_n.to_string()])?;
    println!(
        "resident memory {:.1} MB, growth over the warmed-up process {:.1} MB; shared copies {}, \
         {:.1} MB of decoded audio",
        get(&mem, "rss_mb"),
        get(&mem, "rss_growth_mb"),
        get(&mem, "cache_entries"),
        get(&mem, "cache_mb")
    );
    println!();

    println!("4. First buffer after set_state(PLAYING), 3-minute MP3");
    for count in [1, fb_n] {
        let f = child(&["first-buffer", &count.to_string()])?;
        println!(
            "{count} instance(s) started at once: median {:.1} ms, max {:.1} ms",
            get(&f, "median_ms"),
            get(&f, "max_ms")
        );
    }
    println!();

    start_up(if quick { 20 } else { 50 }, if quick { 3 } else { 5 })?;
    println!();
    replay()
}

fn start_up(distinct: usize, rounds: usize) -> Result<(), Error> {
    let chains = [
        ("bgaudiosrc", "bgaudiosrc"),
        (
            "uridecodebin ! audioconvert ! audioresample (stock)",
            "stock",
        ),
    ];
    println!(
        "5. Start-up, {distinct} branches on {distinct} distinct 5 s MP3s in one pipeline, \
         set_state(PLAYING) to each branch's first buffer; medians of {rounds} runs of each \
         chain, taken in turn"
    );
    println!(
        "| chain | median ms | max ms | set_state returned after ms | CPU ms until the last |"
    );
    println!("|---|---|---|---|---|");
    let mut runs: Vec<Vec<Vec<(String, f64)>>> = vec![Vec::new(); chains.len()];
    for _ in 0..rounds {
        for (i, (_, kind)) in chains.iter().enumerate() {
            runs[i].push(child(&["start-distinct", kind, &distinct.to_string()])?);
        }
    }
    let median_of = |figures: &[Vec<(String, f64)>], key: &str| {
        let mut v: Vec<f64> = figures.iter().map(|f| get(f, key)).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    for ((name, _), figures) in chains.iter().zip(&runs) {
        println!(
            "| {name} | {:.1} | {:.1} | {:.1} | {:.0} |",
            median_of(figures, "median_ms"),
            median_of(figures, "max_ms"),
            median_of(figures, "set_state_ms"),
            median_of(figures, "cpu_ms")
        );
    }
    println!();
    println!(
        "5b. One start-up at a time: 30 distinct 5 s MP3s, each in a pipeline of its own started \
         after the last one stopped; medians"
    );
    println!("| chain | CPU ms until the first buffer | ms until the first buffer |");
    println!("|---|---|---|");
    for (name, kind) in chains {
        let f = child(&["start-one", kind, "30"])?;
        println!(
            "| {name} | {:.2} | {:.2} |",
            get(&f, "cpu_ms"),
            get(&f, "wall_ms")
        );
    }
    Ok(())
}

fn replay() -> Result<(), Error> {
    println!("6. Replay after stop: 3-minute MP3 played 3 s, stopped, played 3 s again");
    let f = child(&["replay"])?;
    let (first, second, floor) = (get(&f, "first_s"), get(&f, "second_s"), get(&f, "floor_s"));
    println!(
        "first play {first:.3} s CPU, second play {second:.3} s CPU (x {:.2}); a play with \
         nothing retained {:.3} s; the stock chain {:.3} s; audiotestsrc (the floor) {floor:.3} s; \
         above the floor the second play costs x {:.2} of the first",
        get(&f, "ratio"),
        get(&f, "unretained_s"),
        get(&f, "stock_s"),
        (second - floor) / (first - floor)
    );
    Ok(())
}

fn num_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
