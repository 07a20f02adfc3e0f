// SPDX-License-Identifier: MIT OR Apache-2.0

//! The decode chain: a private pipeline
//! `uridecodebin ! audioconvert ! audioresample ! capsfilter ! appsink` that turns the file into
//! interleaved S16 at the negotiated rate and channel count and appends it to a `PcmCache`.
//!
//! Start-up is in two steps so the element can negotiate with the file's own format in hand:
//! `Decoder::open` starts the pipeline and returns once the first audio stream shows its caps,
//! with data held back by a blocking probe; `Decoder::start_output` then sets the output format
//! and lets the decoded samples flow into the cache, beside playout.
//!
//! Failures of the private pipeline are turned into error messages that name the file, with the
//! GStreamer domain and code of the original failure.

use gst::glib;
use gst::prelude::*;

use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use super::cache::PcmCache;
use super::imp::CAT;

/// How long `open` waits for the file to show its audio format before giving up.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// The decoded stream's own format, before any conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NativeFormat {
    pub rate: i32,
    pub channels: i32,
    pub channel_mask: Option<u64>,
    /// The file's length, when the decoder can tell it up front.
    pub duration: Option<gst::ClockTime>,
}

#[derive(Debug, Default)]
struct Probe {
    native: Option<NativeFormat>,
    error: Option<gst::ErrorMessage>,
    /// Caps of streams decodebin found no decoder for, from `missing-plugin` messages.
    missing: Vec<String>,
    /// The cache once output started; decoded samples, EOS and errors go there.
    cache: Option<Arc<PcmCache>>,
    eos: bool,
}

/// What the private pipeline's callbacks share with the `Decoder`.
#[derive(Debug)]
struct Shared {
    location: String,
    probe: Mutex<Probe>,
    cond: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Probe> {
        self.probe.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn on_native_format(&self, format: NativeFormat) {
        let mut probe = self.lock();
        if probe.native.is_none() {
            probe.native = Some(format);
        }
        drop(probe);
        self.cond.notify_all();
    }

    fn on_error(&self, err: gst::ErrorMessage) {
        let mut probe = self.lock();
        if let Some(cache) = probe.cache.clone() {
            drop(probe);
            cache.fail(err);
            return;
        }
        if probe.error.is_none() {
            probe.error = Some(err);
        }
        drop(probe);
        self.cond.notify_all();
    }

    fn on_eos(&self) {
        let mut probe = self.lock();
        probe.eos = true;
        let cache = probe.cache.clone();
        drop(probe);
        if let Some(cache) = cache {
            cache.finish();
        }
        self.cond.notify_all();
    }

    fn on_samples(&self, bytes: &[u8]) {
        let cache = self.lock().cache.clone();
        if let Some(cache) = cache {
            cache.push_bytes(bytes);
        }
    }

    /// Rewrites an error of the private pipeline so that it names the file and says what failed.
    fn translate(&self, err: &glib::Error, debug: Option<&str>) -> gst::ErrorMessage {
        let location = &self.location;
        let probe = self.lock();
        let no_audio_pad = probe.native.is_none();
        let missing = probe.missing.clone();
        drop(probe);

        if err.matches(gst::CoreError::MissingPlugin) && no_audio_pad {
            let audio: Vec<&String> = missing.iter().filter(|c| c.starts_with("audio/")).collect();
            if audio.is_empty() {
                let found = if missing.is_empty() {
                    String::new()
                } else {
                    format!(" (it holds {})", missing.join(", "))
                };
                return gst::error_msg!(
                    gst::StreamError::WrongType,
                    ("'{}' has no audio stream{}", location, found),
                    ["{}", debug.unwrap_or_default()]
                );
            }
            let names: Vec<&str> = audio.iter().map(|s| s.as_str()).collect();
            return gst::error_msg!(
                gst::CoreError::MissingPlugin,
                (
                    "No decoder is installed for the audio in '{}' ({})",
                    location,
                    names.join(", ")
                ),
                ["{}", debug.unwrap_or_default()]
            );
        }

        let text = format!("'{}': {}", location, err.message());
        let debug = debug.unwrap_or_default();
        if let Some(code) = err.kind::<gst::ResourceError>() {
            gst::error_msg!(code, ("{}", text), ["{}", debug])
        } else if let Some(code) = err.kind::<gst::StreamError>() {
            gst::error_msg!(code, ("{}", text), ["{}", debug])
        } else if let Some(code) = err.kind::<gst::CoreError>() {
            gst::error_msg!(code, ("{}", text), ["{}", debug])
        } else if let Some(code) = err.kind::<gst::LibraryError>() {
            gst::error_msg!(code, ("{}", text), ["{}", debug])
        } else {
            gst::error_msg!(gst::StreamError::Failed, ("{}", text), ["{}", debug])
        }
    }
}

/// The running decode chain for one file. Dropping it shuts the private pipeline down.
#[derive(Debug)]
pub struct Decoder {
    pipeline: gst::Pipeline,
    capsfilter: gst::Element,
    shared: Arc<Shared>,
    block: Option<(gst::Pad, gst::PadProbeId)>,
}

impl Decoder {
    /// Builds and starts the decode chain for `uri` and waits until the first audio stream shows
    /// its format. `location` is what the user set, used in error messages.
    pub fn open(uri: &str, location: &str) -> Result<(Decoder, NativeFormat), gst::ErrorMessage> {
        let shared = Arc::new(Shared {
            location: location.to_owned(),
            probe: Mutex::new(Probe::default()),
            cond: Condvar::new(),
        });
        let mut decoder = Self::build(uri, &shared).map_err(|err| {
            gst::error_msg!(
                gst::CoreError::MissingPlugin,
                ("Cannot build the decode chain for '{}': {}", location, err)
            )
        })?;

        if decoder.pipeline.set_state(gst::State::Paused).is_err() {
            // The element that failed has normally posted the reason on the bus already.
            let err = shared.lock().error.take();
            decoder.shutdown();
            return Err(err.unwrap_or_else(|| {
                gst::error_msg!(
                    gst::ResourceError::OpenRead,
                    ("Could not open '{}'", location)
                )
            }));
        }

        let deadline = Instant::now() + OPEN_TIMEOUT;
        let mut probe = shared.lock();
        let result = loop {
            if let Some(err) = probe.error.take() {
                break Err(err);
            }
            if let Some(native) = probe.native {
                break Ok(native);
            }
            let now = Instant::now();
            if now >= deadline {
                break Err(gst::error_msg!(
                    gst::ResourceError::Read,
                    (
                        "'{}' showed no audio format within {} s",
                        location,
                        OPEN_TIMEOUT.as_secs()
                    )
                ));
            }
            probe = shared
                .cond
                .wait_timeout(probe, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        };
        drop(probe);

        match result {
            Ok(mut native) => {
                native.duration = decoder.duration();
                gst::debug!(CAT, "'{}' decodes to {:?}", location, native);
                Ok((decoder, native))
            }
            Err(err) => {
                decoder.shutdown();
                Err(err)
            }
        }
    }

    fn build(uri: &str, shared: &Arc<Shared>) -> Result<Decoder, glib::BoolError> {
        let pipeline = gst::Pipeline::builder().name("bgaudiosrc-decoder").build();
        let source = gst::ElementFactory::make("uridecodebin")
            .property("uri", uri)
            .property("caps", gst::Caps::builder("audio/x-raw").build())
            // Streams that are not audio are neither decoded nor exposed.
            .property("expose-all-streams", false)
            .build()?;
        // No dither: the cache is replayed many times, so a deterministic conversion (the same
        // samples on every run and in every instance) matters more than shaping the rounding noise
        // of float decoders once.
        let convert = gst::ElementFactory::make("audioconvert")
            .property_from_str("dithering", "none")
            .build()?;
        let resample = gst::ElementFactory::make("audioresample").build()?;
        let capsfilter = gst::ElementFactory::make("capsfilter").build()?;
        let appsink = gst_app::AppSink::builder()
            .caps(
                &gst_audio::AudioCapsBuilder::new_interleaved()
                    .format(gst_audio::AUDIO_FORMAT_S16)
                    .build(),
            )
            .sync(false)
            .build();

        pipeline.add_many([
            &source,
            &convert,
            &resample,
            &capsfilter,
            appsink.upcast_ref(),
        ])?;
        gst::Element::link_many([&convert, &resample, &capsfilter, appsink.upcast_ref()])?;

        // Hold decoded data back until the output format is known (see `start_output`); caps
        // and other events still pass, so the native format can be read off the pad.
        let convert_sink = convert
            .static_pad("sink")
            .ok_or_else(|| glib::bool_error!("audioconvert has no sink pad"))?;
        let block = convert_sink
            .add_probe(
                gst::PadProbeType::BLOCK
                    | gst::PadProbeType::BUFFER
                    | gst::PadProbeType::BUFFER_LIST,
                |_, _| gst::PadProbeReturn::Ok,
            )
            .ok_or_else(|| glib::bool_error!("cannot block the decode chain"))?;

        let weak_shared: Weak<Shared> = Arc::downgrade(shared);
        let convert_sink_weak = convert_sink.downgrade();
        source.connect_pad_added(move |_, pad| {
            let (Some(shared), Some(sink)) = (weak_shared.upgrade(), convert_sink_weak.upgrade())
            else {
                return;
            };
            let Some(caps) = pad.current_caps() else {
                return;
            };
            let Some(s) = caps.structure(0) else {
                return;
            };
            if s.name() != "audio/x-raw" || sink.is_linked() {
                return;
            }
            let native = NativeFormat {
                rate: s.get::<i32>("rate").unwrap_or(48_000),
                channels: s.get::<i32>("channels").unwrap_or(2),
                channel_mask: s.get::<gst::Bitmask>("channel-mask").ok().map(|m| *m),
                duration: None,
            };
            if let Err(err) = pad.link(&sink) {
                shared.on_error(gst::error_msg!(
                    gst::CoreError::Negotiation,
                    (
                        "Cannot convert the audio of '{}': {:?}",
                        shared.location,
                        err
                    )
                ));
                return;
            }
            shared.on_native_format(native);
        });

        let weak_shared = Arc::downgrade(shared);
        let weak_eos = Arc::downgrade(shared);
        appsink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Flushing)?;
                    let shared = weak_shared.upgrade().ok_or(gst::FlowError::Flushing)?;
                    if let Some(buffer) = sample.buffer() {
                        let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
                        shared.on_samples(&map);
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .eos(move |_| {
                    if let Some(shared) = weak_eos.upgrade() {
                        shared.on_eos();
                    }
                })
                .build(),
        );

        let bus = pipeline
            .bus()
            .ok_or_else(|| glib::bool_error!("pipeline without bus"))?;
        let weak_shared = Arc::downgrade(shared);
        bus.set_sync_handler(move |_, msg| {
            let Some(shared) = weak_shared.upgrade() else {
                return gst::BusSyncReply::Drop;
            };
            match msg.view() {
                gst::MessageView::Error(e) => {
                    let translated = shared.translate(&e.error(), e.debug().as_deref());
                    gst::debug!(CAT, "decoder error {:?} -> {:?}", e, translated);
                    shared.on_error(translated);
                }
                gst::MessageView::Element(e) => {
                    if let Some(s) = e.structure() {
                        if s.name() == "missing-plugin" {
                            if let Ok(caps) = s.get::<gst::Caps>("detail") {
                                let name = caps
                                    .structure(0)
                                    .map(|s| s.name().to_string())
                                    .unwrap_or_else(|| caps.to_string());
                                shared.lock().missing.push(name);
                            }
                        }
                    }
                }
                _ => (),
            }
            gst::BusSyncReply::Drop
        });

        Ok(Decoder {
            pipeline,
            capsfilter,
            shared: shared.clone(),
            block: Some((convert_sink, block)),
        })
    }

    /// Sets the output format and lets decoded samples flow into `cache`.
    pub fn start_output(
        &mut self,
        info: &gst_audio::AudioInfo,
        cache: Arc<PcmCache>,
    ) -> Result<(), gst::ErrorMessage> {
        let caps = info.to_caps().map_err(|_| {
            gst::error_msg!(
                gst::CoreError::Negotiation,
                ("Cannot express {:?} as caps", info)
            )
        })?;
        self.capsfilter.set_property("caps", &caps);

        let mut probe = self.shared.lock();
        probe.cache = Some(cache.clone());
        let (eos, error) = (probe.eos, probe.error.take());
        drop(probe);
        if let Some(err) = error {
            cache.fail(err);
        } else if eos {
            cache.finish();
        }

        if let Some((pad, id)) = self.block.take() {
            pad.remove_probe(id);
        }
        self.pipeline.set_state(gst::State::Playing).map_err(|_| {
            gst::error_msg!(
                gst::StreamError::Decode,
                ("Could not start decoding '{}'", self.shared.location)
            )
        })?;
        Ok(())
    }

    /// The length of the file, as far as the decoder knows it.
    pub fn duration(&self) -> Option<gst::ClockTime> {
        self.pipeline.query_duration::<gst::ClockTime>()
    }

    /// Starts the file again from its beginning (a flushing seek), for the next pass of a
    /// file too long to cache.
    pub fn rewind(&self) -> Result<(), gst::ErrorMessage> {
        self.pipeline
            .seek_simple(
                gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE,
                gst::ClockTime::ZERO,
            )
            .map_err(|_| {
                gst::error_msg!(
                    gst::ResourceError::Seek,
                    (
                        "Could not seek back to the start of '{}' to loop it",
                        self.shared.location
                    )
                )
            })
    }

    fn shutdown(&mut self) {
        // A writer waiting for room in a bounded cache must not hold the streaming thread.
        let cache = self.shared.lock().cache.clone();
        if let Some(cache) = cache {
            cache.close();
        }
        // Going to NULL deactivates the pads, which also releases a blocked streaming thread.
        let _ = self.pipeline.set_state(gst::State::Null);
        if let Some((pad, id)) = self.block.take() {
            pad.remove_probe(id);
        }
        if let Some(bus) = self.pipeline.bus() {
            bus.unset_sync_handler();
        }
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        self.shutdown();
    }
}
