// SPDX-License-Identifier: MIT OR Apache-2.0

//! The decode chain: a private pipeline of stock elements,
//! `uridecodebin ! audioconvert ! audioresample ! appsink`, that turns the file into
//! interleaved S16 at the output's rate and channel layout and appends it to a `PcmCache` (the
//! appsink's caps are the output format). uridecodebin plugs whatever parsers and decoders the
//! installed plugins give, so a copy holds what the stock chain decodes, sample for sample.
//!
//! The caller never waits for a remote source. `Decoder::start` builds the pipeline; a local
//! file starts on the caller's thread (to PAUSED, with only its appsink PLAYING: no clock is
//! needed), anything else hands its state changes to a GStreamer pool thread (`call_async`):
//! some sources connect or open inside them (rtmp://, srt://). Decoded data is held back by a
//! blocking probe until the output format is known. Whoever needs the file's own format waits
//! for it on the chain's `Shared` (`wait_native`), with a deadline and a cancel check, and may
//! share that wait with other elements on the same file. `Decoder::start_output` then sets the
//! output format and lets the samples flow into the copy, whose readers pace them (see `cache`).
//!
//! At the end of the file a complete copy is frozen and the chain shuts itself down; a window
//! marks the end of the pass and the chain seeks back to the start at once, from a pool thread,
//! so the next pass decodes while the readers are still a lead behind.
//!
//! Failures of the private pipeline become error messages that name the file, with the
//! GStreamer domain and code of the original failure.

use gst::glib;
use gst::prelude::*;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use super::cache::PcmCache;
use super::CAT;

/// How long dropping a `Decoder` waits for its pipeline to reach NULL: a source stuck inside a
/// state change (a connect with a long timeout) finishes going to NULL in the background
/// rather than hold the element's own state change.
const SHUTDOWN_WAIT: Duration = Duration::from_millis(150);

/// The chain's own elements, by name (`fresh_resampler` finds them).
const CONVERT: &str = "bgaudiosrc-convert";
const RESAMPLE: &str = "bgaudiosrc-resample";
const SINK: &str = "bgaudiosrc-sink";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The decoded stream's own format, before any conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NativeFormat {
    pub rate: i32,
    pub channels: i32,
    pub channel_mask: Option<u64>,
    /// The file's length, when the decoder can tell it up front.
    pub duration: Option<gst::ClockTime>,
    /// The source is live: it produces in real time and cannot seek.
    pub live: bool,
}

/// Why `wait_native` returned without a format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitError {
    /// The waiter is flushing (its `cancelled` check said so).
    Cancelled,
    /// The deadline passed first.
    TimedOut,
    /// The decode chain was shut down before it showed a format (its owner stopped): whoever
    /// still needs the format starts a probe of their own.
    Abandoned,
    /// The decode chain failed.
    Failed(gst::ErrorMessage),
}

#[derive(Debug, Default)]
struct Chain {
    native: Option<NativeFormat>,
    error: Option<gst::ErrorMessage>,
    /// Caps of streams decodebin found no decoder for, from `missing-plugin` messages.
    missing: Vec<String>,
    /// The copy once output started; decoded samples, EOS and errors go there.
    cache: Option<Arc<PcmCache>>,
    eos: bool,
    /// The decode chain was shut down.
    abandoned: bool,
    live: bool,
    /// Tags found before the output started; they go to the copy then.
    tags: Option<gst::TagList>,
}

/// What the private pipeline's callbacks share with the `Decoder`, and with every element
/// waiting for the stream's format.
#[derive(Debug)]
pub struct Shared {
    location: String,
    chain: Mutex<Chain>,
    cond: Condvar,
}

impl Shared {
    /// `location` is what the user set, used in error messages.
    pub fn new(location: &str) -> Arc<Shared> {
        Arc::new(Shared {
            location: location.to_owned(),
            chain: Mutex::new(Chain::default()),
            cond: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Chain> {
        lock(&self.chain)
    }

    /// Whether the decode chain behind this was shut down.
    pub fn is_abandoned(&self) -> bool {
        self.lock().abandoned
    }

    /// Waits until the stream shows its format, the chain fails or is shut down, `deadline`
    /// passes, or `cancelled()` is true after a `wake()`.
    pub fn wait_native(
        &self,
        deadline: Option<Instant>,
        cancelled: impl Fn() -> bool,
    ) -> Result<NativeFormat, WaitError> {
        let mut chain = self.lock();
        loop {
            if let Some(native) = chain.native {
                return Ok(native);
            }
            if let Some(err) = &chain.error {
                return Err(WaitError::Failed(err.clone()));
            }
            if chain.abandoned {
                return Err(WaitError::Abandoned);
            }
            if cancelled() {
                return Err(WaitError::Cancelled);
            }
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                return Err(WaitError::TimedOut);
            }
            chain = super::wait(&self.cond, chain, deadline);
        }
    }

    /// The decode chain is going away: waiters see `Abandoned`.
    fn abandon(&self) {
        self.lock().abandoned = true;
        self.cond.notify_all();
    }

    /// Wakes every waiter in `wait_native`, so it can check its `cancelled` condition.
    pub fn wake(&self) {
        let _guard = self.lock();
        self.cond.notify_all();
    }

    fn on_native_format(&self, mut format: NativeFormat) {
        let mut chain = self.lock();
        format.live = chain.live;
        chain.native.get_or_insert(format);
        drop(chain);
        self.cond.notify_all();
    }

    /// Tags from the decoded stream: into the copy, or kept until there is one.
    fn on_tags(&self, tags: &gst::TagList) {
        let mut chain = self.lock();
        match &chain.cache {
            Some(cache) => {
                let cache = cache.clone();
                drop(chain);
                cache.merge_tags(tags);
            }
            None => {
                chain.tags = Some(match chain.tags.take() {
                    Some(old) => old.merge(tags, gst::TagMergeMode::Replace),
                    None => tags.clone(),
                });
            }
        }
    }

    /// An ERROR of the private pipeline, named after the file, to every element waiting.
    fn on_bus_error(&self, err: &gst::message::Error) {
        let translated = self.translate(&err.error(), err.debug().as_deref());
        let id = gst::glib::GString::from(self.location.as_str());
        gst::debug!(CAT, id = id, "Decoder error {err:?} -> {translated:?}");
        self.on_error(translated);
    }

    fn on_error(&self, err: gst::ErrorMessage) {
        let mut chain = self.lock();
        if let Some(cache) = chain.cache.clone() {
            drop(chain);
            cache.fail(err);
            return;
        }
        chain.error.get_or_insert(err);
        drop(chain);
        self.cond.notify_all();
    }

    /// The end of the file reached the appsink (on its streaming thread). A complete copy's
    /// chain shuts itself down; a window's seeks back to the start for the next pass. Both from
    /// a pool thread: a state change or a flushing seek must come from outside the streaming
    /// thread. `control` is the chain's (see `Decoder::control`): neither runs once the chain
    /// is shut down.
    fn on_eos(&self, pipeline: Option<gst::Element>, control: &Arc<Mutex<bool>>) {
        let mut chain = self.lock();
        chain.eos = true;
        let (cache, live) = (chain.cache.clone(), chain.live);
        drop(chain);
        self.cond.notify_all();
        let (Some(cache), Some(pipeline)) = (cache, pipeline) else {
            return;
        };
        let next_pass = cache.end_pass();
        let (location, control) = (self.location.clone(), control.clone());
        pipeline.call_async(move |pipeline| {
            let shut = lock(&control);
            if *shut {
                return;
            }
            if !next_pass {
                // Decoded whole (or nothing more will come): its threads and file go now.
                gst::debug!(CAT, obj = pipeline, "'{}' decoded: stopping", location);
                stop(pipeline);
                return;
            }
            if let Err(err) = fresh_resampler(pipeline) {
                drop(shut);
                cache.end_stream(format!("'{location}' cannot be looped: {err}"));
                return;
            }
            let seeked = pipeline.seek_simple(
                gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE,
                gst::ClockTime::ZERO,
            );
            drop(shut);
            match seeked {
                Ok(()) => gst::debug!(CAT, obj = pipeline, "Next pass of '{}'", location),
                Err(_) => {
                    gst::info!(CAT, obj = pipeline, "'{}' cannot seek back", location);
                    cache.end_stream(if live {
                        format!("'{location}' is a live source: it cannot be looped")
                    } else {
                        format!(
                            "'{location}' cannot be looped: it decodes to more than \
                             max-cache-size and its source cannot seek back to the start"
                        )
                    });
                }
            }
        });
    }

    /// Decoded samples into the copy; false once it takes no more.
    fn on_samples(&self, bytes: &[u8]) -> bool {
        let cache = self.lock().cache.clone();
        cache.is_none_or(|cache| cache.push_bytes(bytes))
    }

    /// Rewrites an error of the private pipeline so that it names the file and says what failed.
    fn translate(&self, err: &glib::Error, debug: Option<&str>) -> gst::ErrorMessage {
        let location = &self.location;
        let chain = self.lock();
        let no_audio_pad = chain.native.is_none();
        let missing = chain.missing.clone();
        drop(chain);
        let debug = debug.unwrap_or_default();

        if err.matches(gst::CoreError::MissingPlugin) && no_audio_pad {
            let audio: Vec<&str> = missing
                .iter()
                .filter(|c| c.starts_with("audio/"))
                .map(String::as_str)
                .collect();
            if audio.is_empty() {
                let found = if missing.is_empty() {
                    String::new()
                } else {
                    format!(" (it holds {})", missing.join(", "))
                };
                return gst::error_msg!(
                    gst::StreamError::WrongType,
                    ("'{location}' has no audio stream{found}"),
                    ["{debug}"]
                );
            }
            let audio = audio.join(", ");
            return gst::error_msg!(
                gst::CoreError::MissingPlugin,
                ("No decoder is installed for the audio in '{location}' ({audio})"),
                ["{debug}"]
            );
        }

        let text = format!("'{}': {}", location, err.message());
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

/// Channels without positions (more than two, no channel mask) cannot be converted to a
/// positioned output by audioconvert, and a stream may switch to them half-way (a damaged AAC
/// that turns into 20 channels, a chained Ogg): map its first channels onto the output's through
/// audioconvert's mix matrix (the rest are left out), as the output is already running in its
/// format. `mapping` says whether a matrix is set; returns whether one is now.
fn map_unpositioned(
    convert: &gst::Element,
    sink: &gst::Element,
    caps: &gst::CapsRef,
    mapping: bool,
    location: &str,
) -> bool {
    let Some(s) = caps.structure(0) else {
        return mapping;
    };
    let channels = s.get::<i32>("channels").unwrap_or(1).max(1) as usize;
    let unpositioned = channels > 2
        && match s.get::<gst::Bitmask>("channel-mask") {
            Ok(mask) => *mask == 0,
            Err(_) => channels > 8,
        };
    let output = sink
        .property::<Option<gst::Caps>>("caps")
        .and_then(|c| c.structure(0).and_then(|s| s.get::<i32>("channels").ok()))
        .map(|c| c.max(1) as usize);
    let rows = match output {
        Some(out) if unpositioned => out,
        _ if mapping => 0,
        _ => return false,
    };
    if rows > 0 {
        gst::warning!(
            CAT,
            obj = convert,
            "'{location}' changed to {channels} channels without positions: playing its first \
             {rows} as the output's"
        );
    }
    // Output channel `o` plays input channel `o` (no rows: no matrix).
    let row = |o: usize| gst::Array::new((0..channels).map(move |i| f32::from(i == o)));
    convert.set_property("mix-matrix", gst::Array::new((0..rows).map(row)));
    rows > 0
}

/// `element`'s pad `name`, one it always has.
fn pad_of(element: &gst::Element, name: &str) -> Result<gst::Pad, glib::BoolError> {
    element
        .static_pad(name)
        .ok_or_else(|| glib::bool_error!("{} has no {} pad", element.name(), name))
}

/// Links `src`'s source pad to `sink`'s sink pad, unchecked: the chain's own elements take any
/// raw audio.
fn link_raw(src: &gst::Element, sink: &gst::Element) -> Result<(), glib::BoolError> {
    pad_of(src, "src")?
        .link_full(&pad_of(sink, "sink")?, gst::PadLinkCheck::empty())
        .map(|_| ())
        .map_err(|err| glib::bool_error!("cannot link {} to {}: {err:?}", src.name(), sink.name()))
}

/// Sets the chain's pipeline to NULL, and its appsink, which has a state of its own for a local
/// file (see `Decoder::start`).
fn stop(pipeline: &gst::Element) {
    let _ = pipeline.set_state(gst::State::Null);
    let sink = pipeline
        .downcast_ref::<gst::Bin>()
        .and_then(|bin| bin.by_name(SINK));
    if let Some(sink) = sink {
        let _ = sink.set_state(gst::State::Null);
    }
}

fn new_resampler() -> Result<gst::Element, glib::BoolError> {
    gst::ElementFactory::make("audioresample")
        .name(RESAMPLE)
        .build()
}

/// Puts a new resampler in the chain, for the next pass of a window: every pass is then
/// resampled as the first one was, as a copy's passes are. GStreamer 1.22's resampler keeps its
/// phase across the seek (its reset does not clear it) while its history starts again from
/// zeros after the tail it drained at the end, so each seam lost about a sample
/// (`tests/long_file.rs`). Called between the end of a pass and the seek to the next, when no
/// data flows, under the chain's `control` lock; relinked, audioconvert sends its format to the
/// new resampler again, which negotiates here rather than with the next data. An error leaves
/// the chain unable to go on (the pass ends the stream).
fn fresh_resampler(pipeline: &gst::Element) -> Result<(), glib::BoolError> {
    let bin = pipeline
        .downcast_ref::<gst::Bin>()
        .ok_or_else(|| glib::bool_error!("not a bin"))?;
    let find = |name: &str| {
        bin.by_name(name)
            .ok_or_else(|| glib::bool_error!("no {} in the chain", name))
    };
    let (convert, old, sink) = (find(CONVERT)?, find(RESAMPLE)?, find(SINK)?);
    let new = new_resampler()?;
    let convert_src = pad_of(&convert, "src")?;
    let _ = convert_src.unlink(&pad_of(&old, "sink")?);
    let _ = pad_of(&old, "src")?.unlink(&pad_of(&sink, "sink")?);
    let _ = old.set_state(gst::State::Null);
    bin.remove(&old)?;
    bin.add(&new)?;
    link_raw(&convert, &new)?;
    link_raw(&new, &sink)?;
    new.sync_state_with_parent()?;
    let new_sink = pad_of(&new, "sink")?;
    let start = convert_src.sticky_event::<gst::event::StreamStart>(0);
    let caps = convert_src.sticky_event::<gst::event::Caps>(0);
    for event in [start.map(gst::Event::from), caps.map(gst::Event::from)] {
        if !event.is_none_or(|event| new_sink.send_event(event)) {
            return Err(glib::bool_error!(
                "the new resampler refused the stream's format"
            ));
        }
    }
    convert_src.check_reconfigure();
    pad_of(&new, "src")?.check_reconfigure();
    Ok(())
}

/// The running decode chain for one file. Dropping it shuts the private pipeline down.
#[derive(Debug)]
pub struct Decoder {
    pipeline: gst::Pipeline,
    /// Its caps are the output format.
    appsink: gst_app::AppSink,
    shared: Arc<Shared>,
    block: Option<(gst::Pad, gst::PadProbeId)>,
    /// Set once the chain is shut down, under its lock, so that a state change or seek still
    /// queued on a pool thread does not run after it.
    control: Arc<Mutex<bool>>,
    /// `shutdown` ran.
    stopped: bool,
}

impl Decoder {
    /// Builds the decode chain for `uri` and starts it (a remote one on a pool thread); returns
    /// at once.
    /// The stream's format arrives on `shared` (`Shared::wait_native`); failures too, and are
    /// returned here as well when the chain cannot be built. `output`, when already known, is
    /// the format to convert to (`start_output` may still change it).
    pub fn start(
        uri: &str,
        local: bool,
        shared: &Arc<Shared>,
        output: Option<&gst_audio::AudioInfo>,
    ) -> Result<Decoder, gst::ErrorMessage> {
        let decoder = Self::build(uri, shared, output).map_err(|err| {
            let location = &shared.location;
            let err = gst::error_msg!(
                gst::CoreError::MissingPlugin,
                ("Cannot build the decode chain for '{location}': {err}")
            );
            shared.on_error(err.clone());
            err
        })?;

        // A live source (udp://, rtsp://) produces nothing in PAUSED: it is told by the answer
        // to PAUSED, then the chain goes on to PLAYING either way. A local file is never live.
        let (shared, control) = (shared.clone(), decoder.control.clone());
        let appsink = decoder.appsink.clone();
        let start = move |pipeline: &gst::Pipeline| {
            let shut = lock(&control);
            if *shut {
                return;
            }
            let playing = if local {
                // No clock needed: the appsink, which does not sync, is set PLAYING on its own
                // and the rest only PAUSED, where they decode just as well. That spares the
                // pipeline its clock selection and the hop to PLAYING after decodebin's
                // asynchronous preroll (see `stop`).
                appsink.set_locked_state(true);
                appsink
                    .set_state(gst::State::Playing)
                    .and_then(|_| pipeline.set_state(gst::State::Paused))
            } else {
                let paused = pipeline.set_state(gst::State::Paused);
                shared.lock().live = paused == Ok(gst::StateChangeSuccess::NoPreroll);
                paused.and_then(|_| pipeline.set_state(gst::State::Playing))
            };
            drop(shut);
            if playing.is_err() {
                // The element that failed has normally posted the reason on the bus already.
                let err = shared.lock().error.clone().unwrap_or_else(|| {
                    let location = &shared.location;
                    gst::error_msg!(
                        gst::ResourceError::OpenRead,
                        ("Could not open '{location}'")
                    )
                });
                shared.on_error(err);
            }
        };
        // A local file opens on the caller's thread, as a filesrc in its own pipeline would
        // (`start` has already asked the filesystem about it; a pool thread per chain measured
        // slower to the first buffer). Anything else may connect or wait inside its state
        // change, so it goes to a pool thread.
        if local {
            start(&decoder.pipeline);
        } else {
            decoder.pipeline.call_async(move |pipeline| start(pipeline));
        }
        Ok(decoder)
    }

    fn build(
        uri: &str,
        shared: &Arc<Shared>,
        output: Option<&gst_audio::AudioInfo>,
    ) -> Result<Decoder, glib::BoolError> {
        // Named after what it decodes, so its log lines (and its elements') say which file.
        let pipeline = gst::Pipeline::builder()
            .name(format!("bgaudiosrc-decoder:{}", shared.location))
            .build();
        // Stops at raw audio and leaves other streams alone (neither decoded nor exposed).
        let source = gst::ElementFactory::make("uridecodebin")
            .property("uri", uri)
            .property("caps", gst::Caps::builder("audio/x-raw").build())
            .property("expose-all-streams", false)
            .build()?;
        // No dither: the copy is replayed many times, so a deterministic conversion (the same
        // samples on every run and in every instance) matters more than shaping the rounding
        // noise of float decoders once.
        let convert = gst::ElementFactory::make("audioconvert")
            .name(CONVERT)
            .property_from_str("dithering", "none")
            .build()?;
        let resample = new_resampler()?;
        // The appsink's caps are the output format, once known. It does not preroll: the first
        // samples reach the copy without waiting for the chain's own state change.
        let caps = match output {
            Some(output) => output.to_caps()?,
            None => gst_audio::AudioCapsBuilder::new_interleaved()
                .format(gst_audio::AUDIO_FORMAT_S16)
                .build(),
        };
        let appsink = gst_app::AppSink::builder()
            .name(SINK)
            .caps(&caps)
            .sync(false)
            .async_(false)
            .enable_last_sample(false)
            .build();
        pipeline.add_many([&source, &convert, &resample, appsink.upcast_ref()])?;
        link_raw(&convert, &resample)?;
        link_raw(&resample, appsink.upcast_ref())?;

        let convert_sink = pad_of(&convert, "sink")?;
        // Decoded data waits here until the output format is known (see `start_output`); caps
        // and other events pass, so the native format can be read off the pad.
        let block = convert_sink
            .add_probe(
                gst::PadProbeType::BLOCK
                    | gst::PadProbeType::BUFFER
                    | gst::PadProbeType::BUFFER_LIST,
                |_, _| gst::PadProbeReturn::Ok,
            )
            .ok_or_else(|| glib::bool_error!("cannot block the decode chain"))?;
        watch_events(&convert_sink, &convert, appsink.upcast_ref(), shared);
        link_decoded_pads(&source, &convert_sink, shared);

        let control = Arc::new(Mutex::new(false));
        deliver_samples(&appsink, shared, &control);
        watch_bus(&pipeline, shared)?;

        Ok(Decoder {
            pipeline,
            appsink,
            shared: shared.clone(),
            block: Some((convert_sink, block)),
            control,
            stopped: false,
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
                ("Cannot express {info:?} as caps")
            )
        })?;
        // Set again only when it changes, and then the chain told to negotiate again (as a
        // capsfilter does when its caps change; an appsink does not on its own). No buffer has
        // passed yet (the block is still on), so none in the old format reaches the copy.
        let current = self
            .appsink
            .caps()
            .filter(|c| c.is_fixed())
            .and_then(|c| gst_audio::AudioInfo::from_caps(&c).ok());
        if current.as_ref() != Some(info) {
            self.appsink.set_caps(Some(&caps));
            if let Some(pad) = self.appsink.static_pad("sink") {
                pad.push_event(gst::event::Reconfigure::new());
            }
        }

        let mut chain = self.shared.lock();
        chain.cache = Some(cache.clone());
        let (eos, error, tags) = (chain.eos, chain.error.clone(), chain.tags.take());
        drop(chain);
        if let Some(tags) = tags {
            cache.merge_tags(&tags);
        }
        if let Some(err) = error {
            cache.fail(err);
        } else if eos {
            // An empty stream: nothing will be decoded, the pass is over.
            self.shared
                .on_eos(Some(self.pipeline.clone().upcast()), &self.control);
        }
        if let Some((pad, id)) = self.block.take() {
            pad.remove_probe(id);
        }
        Ok(())
    }

    /// The private pipeline, to query it.
    pub fn pipeline(&self) -> &gst::Pipeline {
        &self.pipeline
    }

    /// Shuts the chain down: its copy takes no more writes (a writer waiting for readers
    /// returns), and the pipeline goes to NULL on a pool thread, which releases a blocked
    /// streaming thread. With `wait`, for `SHUTDOWN_WAIT` at most.
    pub fn shutdown(&mut self, wait: bool) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        self.shared.abandon();
        let cache = self.shared.lock().cache.clone();
        if let Some(cache) = cache {
            cache.close();
        }
        let (done, finished) = std::sync::mpsc::channel();
        let control = self.control.clone();
        self.pipeline.call_async(move |pipeline| {
            let mut shut = lock(&control);
            *shut = true;
            stop(pipeline.upcast_ref());
            drop(shut);
            let _ = done.send(());
        });
        if wait && finished.recv_timeout(SHUTDOWN_WAIT).is_err() {
            let location = &self.shared.location;
            gst::warning!(
                CAT,
                obj = self.pipeline,
                "'{location}' is still stopping; it finishes in the background"
            );
        }
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
        self.shutdown(true);
    }
}

/// A raw audio pad of uridecodebin's goes on to audioconvert: the first one, checked as
/// decodebin checks a link (the pad's caps against audioconvert's); its caps are the file's
/// own format.
fn link_decoded_pads(source: &gst::Element, convert_sink: &gst::Pad, shared: &Arc<Shared>) {
    let weak_shared: Weak<Shared> = Arc::downgrade(shared);
    let convert_sink = convert_sink.downgrade();
    source.connect_pad_added(move |_, pad| {
        let (Some(shared), Some(sink)) = (weak_shared.upgrade(), convert_sink.upgrade()) else {
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
            duration: pad.query_duration::<gst::ClockTime>(),
            live: false,
        };
        let linked = if sink.query_accept_caps(&caps) {
            pad.link_full(&sink, gst::PadLinkCheck::empty())
        } else {
            Err(gst::PadLinkError::Noformat)
        };
        if let Err(err) = linked {
            let location = &shared.location;
            shared.on_error(gst::error_msg!(
                gst::CoreError::Negotiation,
                ("Cannot convert the audio of '{location}': {err:?}")
            ));
            return;
        }
        shared.on_native_format(native);
    });
}

/// The stream's tags (title, artist, …), for the elements to send downstream; and a format
/// change half-way to channels without positions, which audioconvert cannot map on its own.
fn watch_events(
    convert_sink: &gst::Pad,
    convert: &gst::Element,
    sink: &gst::Element,
    shared: &Arc<Shared>,
) {
    let weak_shared: Weak<Shared> = Arc::downgrade(shared);
    let (convert, sink) = (convert.downgrade(), sink.downgrade());
    let mapping = AtomicBool::new(false);
    convert_sink.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
        let (Some(gst::PadProbeData::Event(event)), Some(shared)) =
            (&info.data, weak_shared.upgrade())
        else {
            return gst::PadProbeReturn::Ok;
        };
        match event.view() {
            gst::EventView::Tag(tag) => shared.on_tags(&tag.tag_owned()),
            gst::EventView::Caps(caps) => {
                if let (Some(convert), Some(sink)) = (convert.upgrade(), sink.upgrade()) {
                    let mapped = map_unpositioned(
                        &convert,
                        &sink,
                        caps.caps(),
                        mapping.load(Ordering::SeqCst),
                        &shared.location,
                    );
                    mapping.store(mapped, Ordering::SeqCst);
                }
            }
            _ => (),
        }
        gst::PadProbeReturn::Ok
    });
}

/// Decoded samples go into the copy, and the end of the file ends the pass.
fn deliver_samples(appsink: &gst_app::AppSink, shared: &Arc<Shared>, control: &Arc<Mutex<bool>>) {
    let (weak_samples, weak_eos) = (Arc::downgrade(shared), Arc::downgrade(shared));
    let control = control.clone();
    appsink.set_callbacks(
        gst_app::AppSinkCallbacks::builder()
            .new_sample(move |sink| {
                let sample = sink.pull_sample().map_err(|_| gst::FlowError::Flushing)?;
                let shared = weak_samples.upgrade().ok_or(gst::FlowError::Flushing)?;
                if let Some(buffer) = sample.buffer() {
                    let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
                    if !shared.on_samples(&map) {
                        // Shut down, or complete: upstream stops instead of decoding on.
                        return Err(gst::FlowError::Flushing);
                    }
                }
                Ok(gst::FlowSuccess::Ok)
            })
            .eos(move |sink| {
                if let Some(shared) = weak_eos.upgrade() {
                    let pipeline = sink
                        .parent()
                        .and_then(|p| p.downcast::<gst::Element>().ok());
                    shared.on_eos(pipeline, &control);
                }
            })
            .build(),
    );
}

/// The chain's errors, named after the file, and the streams decodebin found no decoder for.
fn watch_bus(pipeline: &gst::Pipeline, shared: &Arc<Shared>) -> Result<(), glib::BoolError> {
    let bus = pipeline
        .bus()
        .ok_or_else(|| glib::bool_error!("pipeline without bus"))?;
    let weak_shared = Arc::downgrade(shared);
    bus.set_sync_handler(move |_, msg| {
        let Some(shared) = weak_shared.upgrade() else {
            return gst::BusSyncReply::Drop;
        };
        match msg.view() {
            gst::MessageView::Error(err) => shared.on_bus_error(err),
            gst::MessageView::Element(e) => {
                let caps = e
                    .structure()
                    .filter(|s| s.name() == "missing-plugin")
                    .and_then(|s| s.get::<gst::Caps>("detail").ok());
                if let Some(caps) = caps {
                    let name = caps
                        .structure(0)
                        .map(|s| s.name().to_string())
                        .unwrap_or_else(|| caps.to_string());
                    shared.lock().missing.push(name);
                }
            }
            _ => (),
        }
        gst::BusSyncReply::Drop
    });
    Ok(())
}
