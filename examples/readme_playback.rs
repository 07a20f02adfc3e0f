// SPDX-License-Identifier: MIT OR Apache-2.0

//! Plays `assets/ambience.ogg` looped at volume 0.3, turns it down to 0.1 after 1.5 s and stops
//! after 3 s. Fails on an error, or when the `level` element saw no audio or no drop in level.
//!
//!     cargo run --example readme_playback                          # to the audio device
//!     cargo run --example readme_playback -- "fakesink sync=true"  # with no audio device

use std::error::Error;
use std::time::{Duration, Instant};

use gst::prelude::*;

fn main() -> Result<(), Box<dyn Error>> {
    gst::init()?;
    gstbgaudio::plugin_register_static()?;

    let sink = std::env::args().nth(1).unwrap_or("autoaudiosink".into());
    let pipeline = gst::parse::launch(&format!(
        "bgaudiosrc name=bg location=assets/ambience.ogg loop=true volume=0.3 \
         ! audioconvert ! level ! audioresample ! {sink}"
    ))?
    .downcast::<gst::Pipeline>()
    .map_err(|_| "not a pipeline")?;
    let bg = pipeline.by_name("bg").ok_or("no element named bg")?;

    let played = play(&pipeline, &bg);
    pipeline.set_state(gst::State::Null)?;
    let (loud, quiet) = played?.ok_or("no audio reached the sink")?;

    println!("Peak level: {loud:.1} dB at volume 0.3, then {quiet:.1} dB at volume 0.1");
    if loud - quiet < 6.0 {
        return Err("turning the volume down did not lower the level".into());
    }
    Ok(())
}

/// Plays for 3 s and returns the first and the last peak level (dB) that `level` reported.
fn play(pipeline: &gst::Pipeline, bg: &gst::Element) -> Result<Option<(f64, f64)>, Box<dyn Error>> {
    let bus = pipeline.bus().ok_or("the pipeline has no bus")?;
    // When this fails, the element that failed posts an ERROR saying why: see below.
    let _ = pipeline.set_state(gst::State::Playing);

    let started = Instant::now();
    let mut turned_down = false;
    let mut peaks = None;
    while started.elapsed() < Duration::from_secs(3) {
        if !turned_down && started.elapsed() >= Duration::from_millis(1500) {
            bg.set_property("volume", 0.1); // the element ramps the change: no click
            turned_down = true;
        }
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(20)) else {
            continue;
        };
        match msg.view() {
            gst::MessageView::Error(err) => {
                let from = msg.src().map(|s| s.path_string());
                return Err(format!("{}: {}", from.unwrap_or_default(), err.error()).into());
            }
            gst::MessageView::Eos(_) => return Err("unexpected EOS (loop=true)".into()),
            gst::MessageView::Element(elem) => {
                if let Some(peak) = elem.structure().and_then(peak_db) {
                    let (first, _) = peaks.unwrap_or((peak, peak));
                    peaks = Some((first, peak));
                }
            }
            _ => (),
        }
    }
    Ok(peaks)
}

/// The loudest channel's peak in a `level` message, in dB.
fn peak_db(s: &gst::StructureRef) -> Option<f64> {
    if s.name() != "level" {
        return None;
    }
    let peaks = s.get::<gst::glib::ValueArray>("peak").ok()?;
    peaks
        .iter()
        .filter_map(|v| v.get::<f64>().ok())
        .reduce(f64::max)
}
