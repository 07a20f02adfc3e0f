// SPDX-License-Identifier: MIT OR Apache-2.0

//! Plays `assets/ambience.ogg` through `bgaudiosrc`, looped at 30 % volume, for about ten
//! seconds, then stops with an EOS.
//!
//! Where there is no usable audio device (no sound card, no sound server), it writes the same
//! ten seconds to `demo-output.wav` in the crate directory instead, as fast as it can.
//!
//! Run it with `cargo run --example demo` or `make demo`. The plugin is registered statically,
//! so no `GST_PLUGIN_PATH` is needed.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use gst::prelude::*;

#[path = "common/mod.rs"]
mod common;
use common::{audio_sink, bus_error, Error};

/// How long to play, or how much to write to the WAV file.
const PLAY_TIME: Duration = Duration::from_secs(10);
/// `bgaudiosrc` volume.
const VOLUME: f64 = 0.3;
/// How long the audio sink gets to drain after the EOS.
const EOS_TIMEOUT: gst::ClockTime = gst::ClockTime::from_seconds(5);

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("demo: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Error> {
    gst::init()?;
    gstbgaudio::plugin_register_static()?;

    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let clip = dir.join("assets").join("ambience.ogg");
    if !clip.is_file() {
        return Err(format!(
            "{} not found; scripts/make-clip.sh regenerates it",
            clip.display()
        )
        .into());
    }

    let src = gst::ElementFactory::make("bgaudiosrc")
        .property("location", path_str(&clip)?)
        .property("loop", true)
        .property("volume", VOLUME)
        .build()?;

    match audio_sink()? {
        Some(sink) => play(&src, &sink, &clip),
        None => render(&src, &clip, &dir.join("demo-output.wav")),
    }
}

/// Plays to the audio device for `PLAY_TIME`, in real time.
fn play(src: &gst::Element, sink: &gst::Element, clip: &Path) -> Result<(), Error> {
    let convert = gst::ElementFactory::make("audioconvert").build()?;
    let resample = gst::ElementFactory::make("audioresample").build()?;
    let pipeline = Pipeline::new([src, &convert, &resample, sink])?;

    println!(
        "Playing {} (loop=true, volume={VOLUME}) to the audio device for {} s",
        clip.display(),
        PLAY_TIME.as_secs()
    );
    let started = Instant::now();
    pipeline.start()?;

    let deadline = started + PLAY_TIME;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let timeout = gst::ClockTime::from_nseconds(left.as_nanos().try_into()?);
        // The file loops, so an early EOS means the element stopped by itself.
        if pipeline.wait_for_eos(timeout)? {
            println!("bgaudiosrc ended the stream by itself");
            return Ok(());
        }
    }

    let position = pipeline.position();
    pipeline.stop_with_eos()?;
    println!(
        "Played {} of audio in {:.1} s, then stopped with an EOS",
        position.map_or_else(|| "an unknown amount".to_owned(), |p| p.to_string()),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Writes `PLAY_TIME` of the same audio to a WAV file, as fast as the pipeline runs.
fn render(src: &gst::Element, clip: &Path, out: &Path) -> Result<(), Error> {
    // `num-buffers` (a GstBaseSrc property) ends the stream after PLAY_TIME.
    let buffer_duration = gst::ClockTime::from_nseconds(src.property::<u64>("buffer-duration"));
    let num_buffers = (PLAY_TIME.as_nanos() as u64).div_ceil(buffer_duration.nseconds());
    src.set_property("num-buffers", i32::try_from(num_buffers)?);

    let convert = gst::ElementFactory::make("audioconvert").build()?;
    let wavenc = gst::ElementFactory::make("wavenc").build()?;
    let filesink = gst::ElementFactory::make("filesink")
        .property("location", path_str(out)?)
        .build()?;
    let pipeline = Pipeline::new([src, &convert, &wavenc, &filesink])?;

    println!(
        "No usable audio device: writing {} s of {} (loop=true, volume={VOLUME}) to a WAV file",
        PLAY_TIME.as_secs(),
        clip.display()
    );
    let started = Instant::now();
    pipeline.start()?;
    if !pipeline.wait_for_eos(gst::ClockTime::NONE)? {
        return Err("the bus closed before the end of the stream".into());
    }
    drop(pipeline);

    let bytes = std::fs::metadata(out)
        .map_err(|err| format!("cannot read {}: {err}", out.display()))?
        .len();
    println!(
        "Wrote {} s ({num_buffers} buffers of {buffer_duration}, {bytes} bytes) in {:.2} s to {}",
        PLAY_TIME.as_secs(),
        started.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}

/// A linear pipeline with its bus, set to NULL when dropped, whatever happened.
struct Pipeline {
    pipeline: gst::Pipeline,
    bus: gst::Bus,
}

impl Pipeline {
    fn new(elements: [&gst::Element; 4]) -> Result<Self, Error> {
        let pipeline = gst::Pipeline::with_name("demo");
        pipeline.add_many(elements)?;
        gst::Element::link_many(elements)?;
        let bus = pipeline.bus().ok_or("pipeline without a bus")?;
        Ok(Self { pipeline, bus })
    }

    fn start(&self) -> Result<(), Error> {
        if self.pipeline.set_state(gst::State::Playing).is_err() {
            // The element that failed has posted why. Not `timed_pop_filtered` with a zero
            // timeout: gstreamer-rs 0.25 returns None from that before looking at the queue.
            return Err(match self.bus.pop_filtered(&[gst::MessageType::Error]) {
                Some(msg) => bus_error(&msg),
                None => "cannot start the pipeline".into(),
            });
        }
        Ok(())
    }

    /// Waits up to `timeout` (`None`: for ever) for an EOS: `true` when it came, `false` on
    /// timeout, and the error when an element posted one first.
    fn wait_for_eos(&self, timeout: impl Into<Option<gst::ClockTime>>) -> Result<bool, Error> {
        let Some(msg) = self
            .bus
            .timed_pop_filtered(timeout, &[gst::MessageType::Error, gst::MessageType::Eos])
        else {
            return Ok(false);
        };
        match msg.type_() {
            gst::MessageType::Eos => Ok(true),
            _ => Err(bus_error(&msg)),
        }
    }

    fn position(&self) -> Option<gst::ClockTime> {
        self.pipeline.query_position::<gst::ClockTime>()
    }

    /// Sends an EOS and waits for the sink to drain it.
    fn stop_with_eos(&self) -> Result<(), Error> {
        self.pipeline.send_event(gst::event::Eos::new());
        if self.wait_for_eos(EOS_TIMEOUT)? {
            Ok(())
        } else {
            Err(format!("no EOS within {EOS_TIMEOUT} after sending one").into())
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// `path` as the UTF-8 string a `location` property takes.
fn path_str(path: &Path) -> Result<&str, Error> {
    path.to_str()
        .ok_or_else(|| format!("{} is not valid UTF-8", path.display()).into())
}
