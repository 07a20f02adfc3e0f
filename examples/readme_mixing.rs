// SPDX-License-Identifier: MIT OR Apache-2.0

//! Background music under live "speech" (a test tone) through `audiomixer`: the background joins
//! the running mix at 0.5 s, is ducked at 1.5 s, fades out at 2.5 s and is taken out at its EOS;
//! the speech goes on alone until 3.5 s. Fails on an error, or when the background sent no audio
//! or did not end.
//!
//!     cargo run --example readme_mixing                          # to the audio device
//!     cargo run --example readme_mixing -- "fakesink sync=true"  # with no audio device

use std::error::Error;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gst::prelude::*;

fn main() -> Result<(), Box<dyn Error>> {
    gst::init()?;
    gstbgaudio::plugin_register_static()?;

    let sink = std::env::args().nth(1).unwrap_or("autoaudiosink".into());
    let pipeline = gst::parse::launch(&format!(
        "audiotestsrc is-live=true volume=0.2 ! audiomixer name=mix \
         ! audioconvert ! audioresample ! {sink}"
    ))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| "not a pipeline")?;
    let mixer = pipeline.by_name("mix").ok_or("no element named mix")?;

    let mixed = mix(&pipeline, &mixer);
    pipeline.set_state(gst::State::Null)?;
    let buffers = mixed?;
    println!("The background joined, sent {buffers} buffers to the mixer and left");
    Ok(())
}

/// Runs the timeline; returns how many buffers the background sent to the mixer.
fn mix(pipeline: &gst::Pipeline, mixer: &gst::Element) -> Result<u64, Box<dyn Error>> {
    // When this fails, the element that failed posts an ERROR saying why: see `run_until`.
    let _ = pipeline.set_state(gst::State::Playing);
    let started = Instant::now();
    run_until(pipeline, started + Duration::from_millis(500), || false)?;

    // join
    let bg = gst::ElementFactory::make("bgaudiosrc")
        .name("bg")
        .property_from_str("mode", "mixing")
        .property("location", "assets/ambience.ogg")
        .property("loop", true)
        .property("volume", 0.3)
        .build()?;
    let src = bg.static_pad("src").ok_or("bgaudiosrc has no src pad")?;
    let buffers = Arc::new(AtomicU64::new(0));
    let ended = Arc::new(AtomicBool::new(false));
    let sent = buffers.clone();
    src.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
        sent.fetch_add(1, Ordering::Relaxed);
        gst::PadProbeReturn::Ok
    });
    let eos = ended.clone();
    src.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
        if info
            .event()
            .is_some_and(|e| e.type_() == gst::EventType::Eos)
        {
            eos.store(true, Ordering::Relaxed);
        }
        gst::PadProbeReturn::Ok
    });
    pipeline.add(&bg)?;
    let pad = mixer
        .request_pad_simple("sink_%u")
        .ok_or("the mixer gave no pad")?;
    src.link(&pad)?;
    // When this fails, the element posts an ERROR saying why, which `run_until` reports.
    let _ = bg.sync_state_with_parent();
    run_until(pipeline, started + Duration::from_millis(1500), || false)?;

    // duck under speech: the element ramps the change
    bg.set_property("volume", 0.1);
    run_until(pipeline, started + Duration::from_millis(2500), || false)?;

    // leave: fade out; once its EOS has passed the pad, take it out
    bg.emit_by_name::<()>("fade-out", &[]);
    let deadline = Instant::now() + Duration::from_secs(2);
    if !run_until(pipeline, deadline, || ended.load(Ordering::Relaxed))? {
        return Err("no EOS from the background within 2 s of its fade-out".into());
    }
    bg.set_state(gst::State::Null)?;
    src.unlink(&pad)?;
    mixer.release_request_pad(&pad);
    pipeline.remove(&bg)?;

    // the mixer carries on with the speech alone
    run_until(pipeline, started + Duration::from_millis(3500), || false)?;
    match buffers.load(Ordering::Relaxed) {
        0 => Err("the background sent no audio".into()),
        n => Ok(n),
    }
}

/// Handles the bus until `done()` (returns true) or `deadline` (false): an ERROR ends the run,
/// a LATENCY message (a source joined or left) makes the pipeline work out its latency again.
fn run_until(
    pipeline: &gst::Pipeline,
    deadline: Instant,
    done: impl Fn() -> bool,
) -> Result<bool, Box<dyn Error>> {
    let bus = pipeline.bus().ok_or("the pipeline has no bus")?;
    while !done() {
        if Instant::now() >= deadline {
            return Ok(false);
        }
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(10)) else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Error(err) => {
                let from = msg.src().map(|s| s.path_string());
                return Err(format!("{}: {}", from.unwrap_or_default(), err.error()).into());
            }
            gst::MessageView::Latency(_) => pipeline.recalculate_latency()?,
            _ => (),
        }
    }
    Ok(true)
}
