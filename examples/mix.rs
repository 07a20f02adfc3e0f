// SPDX-License-Identifier: MIT OR Apache-2.0

//! A voice agent's output, in miniature: a live "speech" source goes through `audiomixer` to the
//! output, and `bgaudiosrc mode=mixing` plays background music under it, started and stopped by
//! the application while the pipeline keeps running.
//!
//! Timeline (running time):
//! - 0 s: speech only. The "speech" is a 220 Hz tone switched on and off in syllables, talking
//!   for 1.5 s out of every 3 s.
//! - 1 s: the background joins (fade-in) at volume 0.4, ducked to 0.1 while the speech talks
//!   (the application sets `volume`; the element ramps it, so ducking makes no click).
//! - 6 s: the background leaves: the `fade-out` action signal, then, at its EOS, the element is
//!   set to NULL and its mixer pad released.
//! - 7.5 s: it joins again; 11 s: the end.
//!
//! Output: the audio device, or `mix-output.wav` where there is none (still in real time: the
//! sources are live).
//!
//!     cargo run --example mix

use gst::prelude::*;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

#[path = "common/mod.rs"]
mod common;
use common::{audio_sink, bus_error, Error};

const RATE: i32 = 48_000;
const END: gst::ClockTime = gst::ClockTime::from_seconds(11);
const BACKGROUND: f64 = 0.4;
const DUCKED: f64 = 0.1;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("mix: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The background element and its mixer pad while it is in the mix.
struct Background {
    element: gst::Element,
    pad: gst::Pad,
    /// Set from the streaming thread when the element's EOS passed (after its fade-out).
    ended: Arc<Mutex<bool>>,
    /// The fade-out was asked for.
    fading: bool,
}

fn run() -> Result<(), Error> {
    gst::init()?;
    gstbgaudio::plugin_register_static()?;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let clip = dir.join("assets").join("ambience.ogg");
    let clip = clip.to_str().ok_or("path is not UTF-8")?.to_owned();

    let sink_desc = match audio_sink()? {
        Some(sink) => {
            let _ = sink.set_state(gst::State::Null);
            println!("Playing to the audio device");
            "audioconvert ! audioresample ! autoaudiosink".to_owned()
        }
        None => {
            let out = dir.join("mix-output.wav");
            println!("No usable audio device: writing {}", out.display());
            format!("wavenc ! filesink location=\"{}\"", out.display())
        }
    };
    let pipeline = gst::parse::launch(&format!(
        "audiotestsrc name=speech is-live=true wave=sine freq=220 volume=0.5 \
           samplesperbuffer=480 ! audio/x-raw,rate={RATE},channels=2 \
           ! volume name=syllables volume=0 ! audiomixer name=mix \
           ! audio/x-raw,format=S16LE,rate={RATE},channels=2 ! {sink_desc}"
    ))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| "not a pipeline")?;
    let mixer = pipeline.by_name("mix").ok_or("no mixer")?;
    let syllables = pipeline.by_name("syllables").ok_or("no syllables")?;
    let bus = pipeline.bus().ok_or("no bus")?;
    pipeline.set_state(gst::State::Playing)?;

    let mut background: Option<Background> = None;
    let mut joins = 0;
    let mut ending = false;
    loop {
        // The application's own loop: every 10 ms, look at the time and the bus.
        if let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(10)) {
            match msg.view() {
                gst::MessageView::Error(_) => return Err(bus_error(&msg)),
                // A source joined: let the pipeline take its latency into account.
                gst::MessageView::Latency(_) => {
                    let _ = pipeline.recalculate_latency();
                }
                gst::MessageView::Eos(_) => break,
                _ => (),
            }
        }
        let Some(now) = pipeline
            .clock()
            .zip(pipeline.base_time())
            .map(|(clock, base)| clock.time().saturating_sub(base))
        else {
            continue;
        };
        let ms = now.mseconds();

        // Speech: talking for 1.5 s of every 3 s, in 150 ms syllables.
        let talking = ms % 3000 < 1500;
        let syllable_on = talking && (ms / 150) % 2 == 0;
        syllables.set_property("volume", if syllable_on { 1.0 } else { 0.0 });

        let want_background = (1000..6000).contains(&ms) || (7500..END.mseconds()).contains(&ms);
        let ended = background.as_ref().is_some_and(|bg| *lock(&bg.ended));
        match background.as_mut() {
            None if want_background => {
                background = Some(join(&pipeline, &mixer, &clip)?);
                joins += 1;
                println!("{now:.2}: background joins (join {joins})");
            }
            Some(_) if ended => {
                if let Some(bg) = background.take() {
                    leave(&pipeline, &mixer, bg)?;
                    println!("{now:.2}: background left");
                }
            }
            Some(bg) if !want_background && !bg.fading => {
                println!("{now:.2}: background fades out");
                bg.element.emit_by_name::<()>("fade-out", &[]);
                bg.fading = true;
            }
            Some(_) if !want_background => {}
            Some(bg) => {
                // Ducking: the application sets the volume; the element ramps it.
                let volume = if talking { DUCKED } else { BACKGROUND };
                if bg.element.property::<f64>("volume") != volume {
                    bg.element.set_property("volume", volume);
                }
            }
            None => (),
        }

        if now >= END && !ending {
            println!("{now:.2}: end");
            pipeline.send_event(gst::event::Eos::new());
            ending = true;
        }
    }
    pipeline.set_state(gst::State::Null)?;
    println!("Done: the background joined {joins} times");
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Adds a background element to the running pipeline on a new mixer pad.
fn join(pipeline: &gst::Pipeline, mixer: &gst::Element, clip: &str) -> Result<Background, Error> {
    let element = gst::ElementFactory::make("bgaudiosrc")
        .property_from_str("mode", "mixing")
        .property("location", clip)
        .property("loop", true)
        .property("volume", BACKGROUND)
        .property("fade-in-duration", 50_000_000u64)
        .property("fade-out-duration", 300_000_000u64)
        .build()?;
    let ended = Arc::new(Mutex::new(false));
    let ended_probe = ended.clone();
    let src = element.static_pad("src").ok_or("no src pad")?;
    src.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
        if let Some(gst::EventView::Eos(_)) = info.event().map(|e| e.view()) {
            // The EOS goes on to the mixer pad, which ends; the mixer carries on with its
            // other inputs.
            *lock(&ended_probe) = true;
        }
        gst::PadProbeReturn::Ok
    });
    pipeline.add(&element)?;
    let pad = mixer
        .request_pad_simple("sink_%u")
        .ok_or("the mixer gave no pad")?;
    src.link(&pad)?;
    element.sync_state_with_parent()?;
    Ok(Background {
        element,
        pad,
        ended,
        fading: false,
    })
}

/// Takes a background element out of the running pipeline.
fn leave(pipeline: &gst::Pipeline, mixer: &gst::Element, bg: Background) -> Result<(), Error> {
    bg.element.set_state(gst::State::Null)?;
    if let Some(src) = bg.element.static_pad("src") {
        let _ = src.unlink(&bg.pad);
    }
    mixer.release_request_pad(&bg.pad);
    pipeline.remove(&bg.element)?;
    Ok(())
}
