// SPDX-License-Identifier: MIT OR Apache-2.0

//! The decode chain: a private pipeline `SOURCE ! audioconvert ! audioresample ! appsink` that
//! turns the file into interleaved S16 at the negotiated rate and channel count and appends it
//! to a `PcmCache` (the appsink's caps are the output format). SOURCE is, for a local file whose
//! type a parser takes (MP3, FLAC, ADTS AAC and others, see `feeder`), a `Feeder` pad pushing
//! the file to that parser; for any other local file `filesrc ! typefind` (told the type found
//! already); both followed by the decoders `autoplug` plugs. Any other URI is read by
//! `uridecodebin`.
//!
//! The caller never waits for a source. `Decoder::start` builds the pipeline and, for anything
//! but a fed file, hands its state changes to a GStreamer pool thread and returns; decoded data
//! is held back by a blocking probe until the output format is known. A fed file is a local
//! file: it is opened and its first frames decoded on the caller's thread (no other thread is
//! needed before the first buffer), and what it decodes is held until then.
//! Whoever needs the file's own format waits for it on the chain's `Shared` (`wait_native`), with
//! a deadline and a cancel check, and may share that wait with other elements on the same file.
//! `Decoder::start_output` then sets the output format and lets the samples flow into the cache.
//!
//! At the end of the file a complete cache is frozen; a streaming one marks the end of the pass
//! and the decoder seeks back to the start at once (a fed one rewinds its feeder), from a thread
//! of its own, so the next pass decodes while the readers are still a window behind.
//!
//! Failures of the private pipeline are turned into error messages that name the file, with the
//! GStreamer domain and code of the original failure.

use gst::glib;
use gst::prelude::*;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use super::autoplug::{self, Plugger};
use super::cache::{without_waiting, FeedHook, PcmCache};
use super::feeder::{Failure, Fed, Feeder, START_BLOCK};
use super::startup;
use super::CAT;
use std::sync::atomic::{AtomicBool, Ordering};

/// The most a fed chain's start-up feeds on the element's thread for its first buffer, once
/// the format is known: a stream that decodes to nothing for that long is left to the feeder's
/// task, which the element waits for as for any other decoder.
const START_BUDGET: u64 = 256 * 1024;

/// How long dropping a `Decoder` waits for its pipeline to reach NULL.
const SHUTDOWN_WAIT: Duration = Duration::from_millis(150);

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
struct Probe {
    native: Option<NativeFormat>,
    error: Option<gst::ErrorMessage>,
    /// Caps of streams decodebin found no decoder for, from `missing-plugin` messages.
    missing: Vec<String>,
    /// The cache once output started; decoded samples, EOS and errors go there.
    cache: Option<Arc<PcmCache>>,
    eos: bool,
    /// The decode chain was shut down.
    abandoned: bool,
    /// The source is live: it cannot seek.
    live: bool,
    /// Tags found before the output started; they go to the cache then.
    tags: Option<gst::TagList>,
}

/// What the private pipeline's callbacks share with the `Decoder`, and with every element
/// waiting for the stream's format.
#[derive(Debug)]
pub struct Shared {
    location: String,
    probe: Mutex<Probe>,
    cond: Condvar,
    /// Elements `autoplug` is starting, with the errors they posted meanwhile: held until it
    /// knows whether the element works (then they count) or not (then the next candidate is
    /// tried, as decodebin does).
    trying: Mutex<Vec<(gst::Element, Vec<gst::Message>)>>,
}

impl Shared {
    /// `location` is what the user set, used in error messages.
    pub fn new(location: &str) -> Arc<Shared> {
        Arc::new(Shared {
            location: location.to_owned(),
            probe: Mutex::new(Probe::default()),
            trying: Mutex::new(Vec::new()),
            cond: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Probe> {
        self.probe.lock().unwrap_or_else(|e| e.into_inner())
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
        let mut probe = self.lock();
        loop {
            if let Some(native) = probe.native {
                return Ok(native);
            }
            if let Some(err) = &probe.error {
                return Err(WaitError::Failed(err.clone()));
            }
            if probe.abandoned {
                return Err(WaitError::Abandoned);
            }
            if cancelled() {
                return Err(WaitError::Cancelled);
            }
            probe = match deadline {
                None => self.cond.wait(probe).unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(WaitError::TimedOut);
                    }
                    self.cond
                        .wait_timeout(probe, deadline - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }

    /// Whether the stream showed its format, or will not: what a start-up feeds for.
    fn settled(&self) -> bool {
        let probe = self.lock();
        probe.native.is_some() || probe.error.is_some() || probe.abandoned
    }

    /// What stopped the feeder when no element said: a flow error, reported as typefind's task
    /// reports one (`not-negotiated`, `not-linked`), or the file failing to read, as filesrc
    /// reports it.
    fn on_feed_failure(&self, failure: Failure) {
        let err = match failure {
            Failure::Flow(flow) => {
                let err = glib::Error::new(gst::StreamError::Failed, "Internal data stream error.");
                self.translate(&err, Some(&format!("streaming stopped, reason {flow:?}")))
            }
            Failure::Read(err) => gst::error_msg!(
                gst::ResourceError::Read,
                ("Could not read '{}': {}", self.location, err)
            ),
            Failure::Task(err) => gst::error_msg!(
                gst::CoreError::Thread,
                (
                    "Could not start a thread to read '{}': {}",
                    self.location,
                    err
                )
            ),
        };
        self.on_error(err);
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

    fn on_native_format(&self, format: NativeFormat) {
        let mut probe = self.lock();
        if probe.native.is_none() {
            probe.native = Some(format);
        }
        drop(probe);
        self.cond.notify_all();
    }

    /// Tags from the decoded stream: into the cache, or kept until there is one.
    fn on_tags(&self, tags: &gst::TagList) {
        let mut probe = self.lock();
        match &probe.cache {
            Some(cache) => {
                let cache = cache.clone();
                drop(probe);
                cache.merge_tags(tags);
            }
            None => {
                probe.tags = Some(match probe.tags.take() {
                    Some(old) => old.merge(tags, gst::TagMergeMode::Replace),
                    None => tags.clone(),
                });
            }
        }
    }

    /// `element` is being started as a candidate: its errors are held (see `trying`).
    pub(super) fn begin_try(&self, element: &gst::Element) {
        lock(&self.trying).push((element.clone(), Vec::new()));
    }

    /// `element` started (its held errors count now) or did not (they are dropped).
    pub(super) fn end_try(&self, element: &gst::Element, worked: bool) {
        let held = {
            let mut trying = lock(&self.trying);
            match trying.iter().position(|(e, _)| e == element) {
                Some(i) => trying.remove(i).1,
                None => Vec::new(),
            }
        };
        for msg in held {
            if worked {
                self.on_bus_error(&msg);
            } else {
                gst::debug!(
                    CAT,
                    obj = element,
                    "Dropped the error of a candidate: {:?}",
                    msg
                );
            }
        }
    }

    /// Holds `msg` if it comes from an element being tried, or from inside one.
    fn hold(&self, msg: &gst::Message) -> bool {
        let Some(src) = msg.src() else {
            return false;
        };
        let mut trying = lock(&self.trying);
        match trying
            .iter_mut()
            .find(|(e, _)| src == e.upcast_ref::<gst::Object>() || src.has_as_ancestor(e))
        {
            Some((_, held)) => {
                held.push(msg.clone());
                true
            }
            None => false,
        }
    }

    /// An ERROR of the private pipeline, named after the file, to every element waiting.
    fn on_bus_error(&self, msg: &gst::Message) {
        if let gst::MessageView::Error(e) = msg.view() {
            let translated = self.translate(&e.error(), e.debug().as_deref());
            gst::debug!(
                CAT,
                id = gst::glib::GString::from(self.location.as_str()),
                "Decoder error {:?} -> {:?}",
                e,
                translated
            );
            self.on_error(translated);
        }
    }

    /// The decode chain could not be built (an element missing or refusing to link).
    pub(super) fn fail_to_build(&self, err: glib::BoolError) {
        self.on_error(gst::error_msg!(
            gst::CoreError::MissingPlugin,
            (
                "Cannot build the decode chain for '{}': {}",
                self.location,
                err
            )
        ));
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

    /// The end of the file reached the appsink (on its streaming thread).
    /// `control` is the chain's (see `Decoder::control`): the next pass is not started once the
    /// chain is shut down.
    fn on_eos(
        &self,
        pipeline: Option<gst::Element>,
        control: &Arc<Mutex<bool>>,
        feeding: Option<(Arc<Feeder>, OnFail)>,
    ) {
        let mut probe = self.lock();
        probe.eos = true;
        let cache = probe.cache.clone();
        drop(probe);
        self.cond.notify_all();
        let Some(cache) = cache else {
            return;
        };
        if !cache.end_pass() {
            return;
        }
        // Streaming: start the next pass now, while the readers are still a window behind. Not
        // from this streaming thread: a flushing seek must come from outside it.
        let Some(pipeline) = pipeline else {
            return;
        };
        let location = self.location.clone();
        let live = self.lock().live;
        let control = control.clone();
        pipeline.call_async(move |pipeline| {
            // Ordered against `Decoder::shutdown`, which takes the chain to NULL under it.
            let shut = lock(&control);
            if *shut {
                return;
            }
            if let Err(err) = fresh_resampler(pipeline) {
                drop(shut);
                cache.end_stream(format!("'{location}' cannot be looped: {err}"));
                return;
            }
            let seeked = match feeding {
                Some((feeder, on_fail)) => {
                    feeder.rewind(on_fail);
                    Ok(())
                }
                None => pipeline.seek_simple(
                    gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE,
                    gst::ClockTime::ZERO,
                ),
            };
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

/// The elements uridecodebin may plug for `caps`: what its default `autoplug-factories` handler
/// answers (decodable factories of at least marginal rank that accept the caps, highest rank
/// first), but worked out once per process and caps instead of once per decode chain. Every
/// uridecodebin and decodebin builds and sorts the registry's factory list for itself and
/// intersects the caps with each factory's templates: the largest part of starting a chain.
/// The answers are dropped whenever the registry's feature list changes.
pub(super) fn decodable_list(caps: &gst::Caps) -> Arc<Vec<gst::ElementFactory>> {
    #[derive(Default)]
    struct Factories {
        cookie: Option<u32>,
        all: Arc<Vec<gst::ElementFactory>>,
        by_caps: HashMap<String, Arc<Vec<gst::ElementFactory>>>,
    }
    static FACTORIES: LazyLock<Mutex<Factories>> = LazyLock::new(Default::default);
    const MAX_CAPS: usize = 256;

    let cookie = gst::Registry::get().feature_list_cookie();
    let key = caps.to_string();
    let lock = || FACTORIES.lock().unwrap_or_else(|e| e.into_inner());
    if lock().cookie != Some(cookie) {
        // Built outside the lock: the registry's feature list changes as plugins load.
        let mut all: Vec<gst::ElementFactory> = gst::ElementFactory::factories_with_type(
            gst::ElementFactoryType::DECODABLE,
            gst::Rank::MARGINAL,
        )
        .into_iter()
        .collect();
        // As uridecodebin does, with gst_plugin_feature_rank_compare_func: rank descending,
        // then name ascending (so equal-rank decoders are chosen as the stock chain does).
        all.sort_by(|a, b| {
            b.rank()
                .cmp(&a.rank())
                .then_with(|| a.name().cmp(&b.name()))
        });
        let mut factories = lock();
        if factories.cookie != Some(cookie) {
            *factories = Factories {
                cookie: Some(cookie),
                all: Arc::new(all),
                by_caps: HashMap::new(),
            };
        }
    }
    let factories = lock();
    if let Some(list) = factories.by_caps.get(&key) {
        return list.clone();
    }
    let all = factories.all.clone();
    drop(factories);
    // As gst_element_factory_list_filter, outside the lock.
    let fixed = caps.is_fixed();
    let list: Arc<Vec<gst::ElementFactory>> = Arc::new(
        all.iter()
            .filter(|f| {
                if fixed {
                    f.can_sink_all_caps(caps)
                } else {
                    f.can_sink_any_caps(caps)
                }
            })
            .cloned()
            .collect(),
    );
    let mut factories = lock();
    if factories.by_caps.len() >= MAX_CAPS {
        factories.by_caps.clear();
    }
    factories.by_caps.insert(key, list.clone());
    list
}

fn decodable_factories(caps: Option<&gst::Caps>) -> glib::ValueArray {
    match caps {
        Some(caps) => glib::ValueArray::new(decodable_list(caps).iter()),
        None => glib::ValueArray::new(std::iter::empty::<gst::ElementFactory>()),
    }
}

/// The running decode chain for one file. Dropping it shuts the private pipeline down.
/// Channels without positions (more than two, no channel mask) cannot be converted to a
/// positioned output by audioconvert, and a stream may switch to them half-way (a damaged AAC
/// that turns into 20 channels, a chained Ogg): map its first channels onto the output's through
/// audioconvert's mix matrix (the rest are left out), as the output is already running in its
/// format. `mapping` says whether a matrix is set; returns whether one is now.
fn map_unpositioned(
    convert: &gst::Element,
    filter: &gst::Element,
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
    let output = filter
        .property::<Option<gst::Caps>>("caps")
        .and_then(|c| c.structure(0).and_then(|s| s.get::<i32>("channels").ok()))
        .map(|c| c.max(1) as usize);
    let matrix: Vec<Vec<f32>> = match output {
        Some(out) if unpositioned => (0..out)
            .map(|o| {
                (0..channels)
                    .map(|i| if i == o { 1.0 } else { 0.0 })
                    .collect()
            })
            .collect(),
        _ if mapping => Vec::new(),
        _ => return false,
    };
    if !matrix.is_empty() {
        gst::warning!(
            CAT,
            obj = convert,
            "'{}' changed to {} channels without positions: playing its first {} as the output's",
            location,
            channels,
            matrix.len()
        );
    }
    let value = gst::Array::new(
        matrix
            .iter()
            .map(|row| gst::Array::new(row.iter().map(|v| v.to_send_value())).to_send_value()),
    );
    convert.set_property("mix-matrix", value);
    !matrix.is_empty()
}

/// The chain's own elements, by name (`fresh_resampler` finds them).
const CONVERT: &str = "bgaudiosrc-convert";
const RESAMPLE: &str = "bgaudiosrc-resample";
const SINK: &str = "bgaudiosrc-sink";

/// `element`'s pad `name`, one it always has.
fn pad_of(element: &gst::Element, name: &str) -> Result<gst::Pad, glib::BoolError> {
    element
        .static_pad(name)
        .ok_or_else(|| glib::bool_error!("{} has no {} pad", element.name(), name))
}

/// Links `src`'s source pad to `sink`'s sink pad, unchecked: the chain's own elements take any
/// raw audio (an element-level link, and a caps check, query each pad's caps first).
fn link_raw(src: &gst::Element, sink: &gst::Element) -> Result<(), glib::BoolError> {
    pad_of(src, "src")?
        .link_full(&pad_of(sink, "sink")?, gst::PadLinkCheck::empty())
        .map(|_| ())
        .map_err(|err| {
            glib::bool_error!("cannot link {} to {}: {:?}", src.name(), sink.name(), err)
        })
}

fn new_resampler() -> Result<gst::Element, glib::BoolError> {
    gst::ElementFactory::make("audioresample")
        .name(RESAMPLE)
        .build()
}

/// Puts a new resampler in the chain, for the next pass of a streamed file: every pass is then
/// resampled as the first one was, as a copy's passes are. GStreamer 1.22's resampler keeps its
/// phase across the seek (its reset does not clear it) while its history starts again from
/// zeros after the tail it drained at the end, so each seam lost about a sample
/// (`tests/long_file.rs`). Called between the end of a pass and the seek to the next, when no
/// data flows, under the chain's `control` lock; relinked, audioconvert sends its format to the
/// new resampler again. An error leaves the chain unable to go on (the pass ends the stream).
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
    // The new resampler negotiates here, under the lock that orders this against the chain's
    // shutdown, rather than on the streaming thread with the next data, where a chain being
    // stopped meanwhile fails it with a warning ("not negotiated"). It is given audioconvert's
    // stream start and caps (the next data brings the same ones again, and the segment), and
    // neither it nor audioconvert is asked to negotiate again. That made the warning rarer, not
    // impossible: the caps the next data brings again can still meet a chain being stopped
    // (`tests/lifecycle.rs`). It is only a line in GStreamer's debug log; the chain's bus
    // drops warnings.
    let new_sink = pad_of(&new, "sink")?;
    for event in [
        convert_src
            .sticky_event::<gst::event::StreamStart>(0)
            .map(gst::Event::from),
        convert_src
            .sticky_event::<gst::event::Caps>(0)
            .map(gst::Event::from),
    ]
    .into_iter()
    .flatten()
    {
        if !new_sink.send_event(event) {
            return Err(glib::bool_error!(
                "the new resampler refused the stream's format"
            ));
        }
    }
    convert_src.check_reconfigure();
    pad_of(&new, "src")?.check_reconfigure();
    Ok(())
}

/// Makes `typefind` push to a parser plugged right after it (mpegaudioparse, flacparse,
/// aacparse): its task, which reads the file, goes on to drive the whole chain. Otherwise the
/// parser pulls, from a task of its own: a second thread per chain, handed over to at the start.
/// Fifty elements starting together in a fresh process create fifty threads fewer, and the
/// bench's start-up row measured 2–4 ms less at the median and 10–12 ms less CPU
/// (`cargo run --release --example bench -- startup`).
///
/// Anything else still pulls, as it reads the end of the file first: a tag demuxer (an ID3v1
/// or APE tag at the end), wavparse (a LIST chunk after the data), a `decodebin` (Ogg, MP4).
/// Whatever comes after a tag demuxer asks through it, so it pulls too: a demuxer's own answer
/// would not tell the two apart.
fn push_only_to_plugged(typefind: &gst::Element) -> Result<(), glib::BoolError> {
    pad_of(typefind, "src")?.add_probe(gst::PadProbeType::QUERY_UPSTREAM, |pad, info| {
        let Some(gst::PadProbeData::Query(query)) = &mut info.data else {
            return gst::PadProbeReturn::Ok;
        };
        let gst::QueryViewMut::Scheduling(scheduling) = query.view_mut() else {
            return gst::PadProbeReturn::Ok;
        };
        let to_parser = pad
            .peer()
            .and_then(|peer| peer.parent_element())
            .and_then(|element| element.factory())
            .is_some_and(|factory| {
                factory
                    .metadata(gst::ELEMENT_METADATA_KLASS)
                    .is_some_and(|klass| klass.split('/').any(|k| k == "Parser"))
            });
        if !to_parser {
            return gst::PadProbeReturn::Ok;
        }
        scheduling.set(gst::SchedulingFlags::SEQUENTIAL, 1, -1, 0);
        scheduling.add_scheduling_modes([gst::PadMode::Push]);
        gst::PadProbeReturn::Handled
    });
    Ok(())
}

/// Told of what stopped the feeder (see `Shared::on_feed_failure`).
type OnFail = Arc<dyn Fn(Failure) + Send + Sync>;

/// What a fed chain's start-up holds at audioconvert until the output format is known (see
/// `Feeding::held`).
#[derive(Debug)]
enum Held {
    Buffer(gst::Buffer),
    List(gst::BufferList),
    /// A serialized event after the first buffer.
    Event(gst::Event),
}

impl Held {
    /// Sends it on into `pad`, as its peer would have.
    fn send(self, pad: &gst::Pad) -> Result<(), gst::FlowError> {
        match self {
            Held::Buffer(buffer) => pad.chain(buffer).map(|_| ()),
            Held::List(list) => pad.chain_list(list).map(|_| ()),
            Held::Event(event) => {
                pad.send_event(event);
                Ok(())
            }
        }
    }
}

/// `Held` things in stream order; `None` once they went on.
type Stash = Arc<Mutex<Option<Vec<Held>>>>;

/// A chain fed from a `Feeder` (see `feeder`), and what its start-up needs.
struct Feeding {
    feeder: Arc<Feeder>,
    /// The file's type.
    caps: gst::Caps,
    plugger: Arc<Plugger>,
    on_fail: OnFail,
    /// Decoded buffers, and the events after them, held at audioconvert until the output
    /// format is known (the feeding thread cannot wait there: it is the one to set it).
    held: Stash,
    /// The feeder's task feeds the rest of the file.
    handed_over: bool,
}

impl std::fmt::Debug for Feeding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feeding")
            .field("feeder", &self.feeder)
            .field("caps", &self.caps)
            .field("handed_over", &self.handed_over)
            .finish()
    }
}

/// What feeds the rest of a fed file (see `PcmCache::set_feed`). While start-ups are under way
/// (`startup::decoders_yield`), the readers feed it on their own threads, as far as they read:
/// a start-up storm creates no feeding threads, and decodes no more than is played (fifty
/// elements starting together took a quarter less CPU to their first buffers). Once they are
/// over, the feeder's task feeds the rest (from GStreamer's thread pool), and readers wait for
/// it again.
fn feed_hook(feeder: &Arc<Feeder>, cache: &Arc<PcmCache>, on_fail: OnFail) -> FeedHook {
    let (feeder, cache) = (Arc::downgrade(feeder), Arc::downgrade(cache));
    Arc::new(move || {
        let Some(feeder) = feeder.upgrade() else {
            return false;
        };
        if !startup::decoders_yield() {
            if let Some(cache) = cache.upgrade() {
                cache.set_feed(None);
            }
            feeder.start_task(on_fail.clone());
            // The reader waits for the task.
            return false;
        }
        gst::log!(
            CAT,
            obj = feeder.pad(),
            "A reader feeds (start-ups under way)"
        );
        // Nothing (`Idle`) once the task feeds: the reader waits for it, never for the stream
        // lock the task holds.
        matches!(
            without_waiting(|| feeder.feed_here(START_BLOCK, false, &*on_fail)),
            Fed::Block | Fed::End
        )
    })
}

#[derive(Debug)]
pub struct Decoder {
    pipeline: gst::Pipeline,
    /// Its caps are the output format.
    appsink: gst_app::AppSink,
    shared: Arc<Shared>,
    block: Option<(gst::Pad, gst::PadProbeId)>,
    /// Set once the chain is shut down, under its lock, so that a state change still queued
    /// from `start` does not run after it.
    control: Arc<Mutex<bool>>,
    /// Set when shutting down, under the lock plugging holds (see `autoplug`): nothing is
    /// plugged from then on.
    closing: Arc<Mutex<bool>>,
    /// A local file fed to its parser (see `feeder`), rather than read by `filesrc ! typefind`.
    feeding: Option<Feeding>,
}

impl Decoder {
    /// Builds the decode chain for `uri` and sets it playing; returns at once. The stream's
    /// format arrives on `shared` (`Shared::wait_native`); failures too, and are returned here
    /// as well when they happen at once. `output`, when already known, is the format to
    /// convert to (`start_output` may still change it).
    ///
    /// `take_turn` is called before a chain that is not fed (see `feeder`) starts: its start-up
    /// runs on other threads from then on (see `startup`). A fed chain starts here, on the
    /// caller's thread, and takes no turn; it stops feeding once `cancelled()` (the caller is
    /// flushing), its format still unknown.
    pub fn start(
        uri: &str,
        file: Option<&Path>,
        shared: &Arc<Shared>,
        output: Option<&gst_audio::AudioInfo>,
        take_turn: &dyn Fn(),
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Decoder, gst::ErrorMessage> {
        let decoder = Self::build(uri, file, shared, output).map_err(|err| {
            let err = gst::error_msg!(
                gst::CoreError::MissingPlugin,
                (
                    "Cannot build the decode chain for '{}': {}",
                    shared.location,
                    err
                )
            );
            shared.on_error(err.clone());
            err
        })?;

        if let Some(feeding) = &decoder.feeding {
            decoder.start_feeding(feeding, cancelled)?;
            return Ok(decoder);
        }
        take_turn();

        // The state changes run on a thread of GStreamer's pool, not the caller's: some sources
        // connect or open inside them (rtmp://, srt:// as a caller, a file on a hung network
        // mount), and nothing here may wait for a source. A live source (udp://, rtsp://)
        // produces nothing in PAUSED: it is told by the answer to PAUSED, then the chain goes
        // on to PLAYING either way. (A local file is never live: PLAYING in one step.) Data is
        // held back by the blocking probe until the output format is known. `control` orders
        // this against `shutdown`, which may be queued on another pool thread.
        let (shared_async, control, local) =
            (shared.clone(), decoder.control.clone(), file.is_some());
        decoder.pipeline.call_async(move |pipeline| {
            let shut = lock(&control);
            if *shut {
                return;
            }
            let playing = if local {
                pipeline.set_state(gst::State::Playing)
            } else {
                let paused = pipeline.set_state(gst::State::Paused);
                shared_async.lock().live = paused == Ok(gst::StateChangeSuccess::NoPreroll);
                paused.and_then(|_| pipeline.set_state(gst::State::Playing))
            };
            drop(shut);
            if playing.is_err() {
                // The element that failed has normally posted the reason on the bus already.
                let err = shared_async.lock().error.clone().unwrap_or_else(|| {
                    gst::error_msg!(
                        gst::ResourceError::OpenRead,
                        ("Could not open '{}'", shared_async.location)
                    )
                });
                shared_async.on_error(err);
                return;
            }
            gst::debug!(
                CAT,
                obj = pipeline,
                "Started decoding '{}'{}",
                shared_async.location,
                if shared_async.lock().live {
                    " (live source)"
                } else {
                    ""
                }
            );
        });
        Ok(decoder)
    }

    /// Starts a fed chain on the caller's thread, and feeds it until the stream shows its
    /// format (`feed_start`): a local file opens and decodes its first frames without waiting
    /// for a network or anyone else, so no other thread is needed before the first buffer.
    fn start_feeding(
        &self,
        feeding: &Feeding,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<(), gst::ErrorMessage> {
        let fail = |err: gst::ErrorMessage| {
            self.shared.on_error(err.clone());
            err
        };
        {
            let shut = lock(&self.control);
            if !*shut && self.pipeline.set_state(gst::State::Playing).is_err() {
                return Err(fail(self.shared.lock().error.clone().unwrap_or_else(
                    || {
                        gst::error_msg!(
                            gst::ResourceError::OpenRead,
                            ("Could not open '{}'", self.shared.location)
                        )
                    },
                )));
            }
        }
        let feeder = &feeding.feeder;
        feeder
            .activate(&feeding.caps, &self.shared.location)
            .map_err(|err| {
                fail(gst::error_msg!(
                    gst::CoreError::Failed,
                    ("Cannot read '{}': {}", self.shared.location, err)
                ))
            })?;
        feeding.plugger.plug(feeder.pad(), &feeding.caps, &[]);
        self.feed_start(cancelled);
        gst::debug!(
            CAT,
            obj = self.pipeline,
            "Started decoding '{}' (fed)",
            self.shared.location
        );
        Ok(())
    }

    /// Feeds a fed chain on the caller's thread until the stream shows its format, or will not,
    /// or `cancelled()`: at the start, and again when the element waits for the format after a
    /// flush cut that short (nobody else feeds a chain before its output starts). The decoded
    /// buffers are held (`Feeding::held`) until the output format is known; the end of the file
    /// is held too, unless the stream ended without showing a format. Nothing to do for a chain
    /// that is not fed.
    pub fn feed_start(&self, cancelled: &dyn Fn() -> bool) {
        let Some(feeding) = self.feeding.as_ref().filter(|f| !f.handed_over) else {
            return;
        };
        let (feeder, shared) = (&feeding.feeder, &self.shared);
        let fed = without_waiting(|| {
            feeder.feed_until(
                START_BLOCK,
                true,
                u64::MAX,
                &|| shared.settled() || cancelled(),
                &*feeding.on_fail,
            )
        });
        if fed == Fed::End && !shared.settled() {
            // Ended without a format: the end goes down, for the decoder to say what it found.
            without_waiting(|| feeder.feed_here(START_BLOCK, false, &*feeding.on_fail));
        }
    }

    /// Whether the source is live: it produces in real time and cannot be read ahead. Known
    /// once the chain shows its format.
    pub fn is_live(&self) -> bool {
        self.shared.lock().live
    }

    /// A local file is read by `filesrc ! decodebin`, anything else by `uridecodebin`: for a
    /// file they plug the same elements, but uridecodebin looks its source up among every URI
    /// handler of the registry first, which costs more than the rest of starting the chain.
    fn build(
        uri: &str,
        file: Option<&Path>,
        shared: &Arc<Shared>,
        output: Option<&gst_audio::AudioInfo>,
    ) -> Result<Decoder, glib::BoolError> {
        // Named after what it decodes, so its log lines (and its elements') say which file.
        let pipeline = gst::Pipeline::builder()
            .name(format!("bgaudiosrc-decoder:{}", shared.location))
            .build();
        // decodebin, or uridecodebin for anything but a local file, set up alike: they stop at
        // raw audio and leave other streams alone; their factory lists are worked out once per
        // process (`decodable_factories`).
        let setup = |bin: gst::Element| {
            bin.set_property("caps", gst::Caps::builder("audio/x-raw").build());
            // Streams that are not audio are neither decoded nor exposed.
            bin.set_property("expose-all-streams", false);
            bin.connect("autoplug-factories", false, |args| {
                let caps = args.get(2).and_then(|v| v.get::<gst::Caps>().ok());
                Some(decodable_factories(caps.as_ref()).to_value())
            });
            bin
        };
        // No dither: the cache is replayed many times, so a deterministic conversion (the same
        // samples on every run and in every instance) matters more than shaping the rounding noise
        // of float decoders once.
        let convert = gst::ElementFactory::make("audioconvert")
            .name(CONVERT)
            .property_from_str("dithering", "none")
            .build()?;
        let resample = new_resampler()?;
        // The appsink's caps are the output format, once known (no capsfilter: an element less
        // to start and to negotiate through).
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
            // No preroll: the chain reaches PLAYING at once, so the first decoded samples go
            // straight into the cache instead of waiting for the pipeline to finish going to
            // PAUSED (ASYNC_DONE) and then to PLAYING.
            .async_(false)
            .enable_last_sample(false)
            .build();

        pipeline.add_many([&convert, &resample, appsink.upcast_ref()])?;
        link_raw(&convert, &resample)?;
        link_raw(&resample, appsink.upcast_ref())?;

        // Hold decoded data back until the output format is known (see `start_output`); caps
        // and other events still pass, so the native format can be read off the pad.
        let convert_sink = pad_of(&convert, "sink")?;
        // A local file whose type a parser takes is fed to it (see `feeder`); any other gives
        // typefind the type found here, so it is not found twice.
        let (fed, found) = match file.and_then(|path| {
            let feeder = Feeder::open(path, &shared.location).ok()?;
            let caps = feeder.type_find(path)?;
            Some((feeder, caps))
        }) {
            Some((feeder, caps)) => {
                let to_parser = decodable_list(&caps)
                    .first()
                    .is_some_and(|first| autoplug::is_parser(first) && autoplug::is_linear(first));
                if to_parser {
                    (Some((feeder, caps)), None)
                } else {
                    (None, Some(caps))
                }
            }
            None => (None, None),
        };
        let held: Stash = Arc::new(Mutex::new(Some(Vec::new())));
        let block = if fed.is_some() {
            // The thread that feeds the start-up sets the output format next: held, not
            // blocked. What follows the first buffer in the stream (its end above all) is held
            // behind it, in order: a file too short to show its format before its end must not
            // end before its samples.
            let held = held.clone();
            convert_sink.add_probe(
                gst::PadProbeType::BUFFER
                    | gst::PadProbeType::BUFFER_LIST
                    | gst::PadProbeType::EVENT_DOWNSTREAM,
                move |_, info| {
                    let mut held = lock(&held);
                    let Some(stash) = held.as_mut() else {
                        return gst::PadProbeReturn::Ok;
                    };
                    match info.data.take() {
                        Some(gst::PadProbeData::Buffer(buffer)) => stash.push(Held::Buffer(buffer)),
                        Some(gst::PadProbeData::BufferList(list)) => stash.push(Held::List(list)),
                        Some(gst::PadProbeData::Event(event))
                            if !stash.is_empty() && event.is_serialized() =>
                        {
                            stash.push(Held::Event(event))
                        }
                        other => {
                            info.data = other;
                            return gst::PadProbeReturn::Ok;
                        }
                    }
                    gst::PadProbeReturn::Handled
                },
            )
        } else {
            convert_sink.add_probe(
                gst::PadProbeType::BLOCK
                    | gst::PadProbeType::BUFFER
                    | gst::PadProbeType::BUFFER_LIST,
                |_, _| gst::PadProbeReturn::Ok,
            )
        }
        .ok_or_else(|| glib::bool_error!("cannot block the decode chain"))?;

        // The stream's tags (title, artist, …), for the elements to send downstream; and a
        // format change half-way to channels without positions, which audioconvert cannot map
        // on its own.
        let weak_shared: Weak<Shared> = Arc::downgrade(shared);
        let (weak_convert, weak_filter) = (
            convert.downgrade(),
            appsink.upcast_ref::<gst::Element>().downgrade(),
        );
        let mapping = AtomicBool::new(false);
        convert_sink.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
            let Some(gst::PadProbeData::Event(event)) = &info.data else {
                return gst::PadProbeReturn::Ok;
            };
            match event.view() {
                gst::EventView::Tag(tag) => {
                    if let Some(shared) = weak_shared.upgrade() {
                        shared.on_tags(&tag.tag_owned());
                    }
                }
                gst::EventView::Caps(caps) => {
                    if let (Some(convert), Some(filter), Some(shared)) = (
                        weak_convert.upgrade(),
                        weak_filter.upgrade(),
                        weak_shared.upgrade(),
                    ) {
                        let mapped = map_unpositioned(
                            &convert,
                            &filter,
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

        // A raw audio pad, from whichever element decoded it, goes on to audioconvert.
        let weak_shared: Weak<Shared> = Arc::downgrade(shared);
        let convert_sink_weak = convert_sink.downgrade();
        let expose = Arc::new(move |pad: &gst::Pad| {
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
                duration: pad.query_duration::<gst::ClockTime>(),
            };
            // Checked as decodebin checks: the pad's caps against audioconvert's (a link's own
            // caps check queries both pads' caps, through the rest of the chain).
            let linked = if sink.query_accept_caps(&caps) {
                pad.link_full(&sink, gst::PadLinkCheck::empty())
            } else {
                Err(gst::PadLinkError::Noformat)
            };
            if let Err(err) = linked {
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
        let expose_cb = expose.clone();
        let decodebin = move |bin: gst::Element| {
            let expose = expose_cb.clone();
            bin.connect_pad_added(move |_, pad| expose(pad));
            setup(bin)
        };

        let closing = Arc::new(Mutex::new(false));
        let weak_flow = Arc::downgrade(shared);
        let on_fail: OnFail = Arc::new(move |failure| {
            if let Some(shared) = weak_flow.upgrade() {
                shared.on_feed_failure(failure);
            }
        });
        let mut feeding = None;
        match file {
            Some(path) => {
                // A local file: plugged here where the chain is a line (see `autoplug`).
                let plugger = Arc::new(Plugger {
                    pipeline: pipeline.downgrade(),
                    closing: closing.clone(),
                    shared: Arc::downgrade(shared),
                    expose: expose.clone(),
                    decodebin: Box::new(move || {
                        gst::ElementFactory::make("decodebin")
                            .build()
                            .map(&decodebin)
                    }),
                });
                if let Some((feeder, caps)) = fed {
                    feeding = Some(Feeding {
                        feeder,
                        caps,
                        plugger,
                        on_fail: on_fail.clone(),
                        held,
                        handed_over: false,
                    });
                } else {
                    let filesrc = gst::ElementFactory::make("filesrc")
                        .property("location", path.to_string_lossy().as_ref())
                        .build()?;
                    let typefind = gst::ElementFactory::make("typefind")
                        .property("force-caps", found)
                        .build()?;
                    pipeline.add_many([&filesrc, &typefind])?;
                    filesrc.link(&typefind)?;
                    push_only_to_plugged(&typefind)?;
                    typefind.connect("have-type", false, move |args| {
                        let typefind = args.first().and_then(|v| v.get::<gst::Element>().ok());
                        let caps = args.get(2).and_then(|v| v.get::<gst::Caps>().ok());
                        if let (Some(src), Some(caps)) =
                            (typefind.and_then(|t| t.static_pad("src")), caps)
                        {
                            plugger.plug(&src, &caps, &[]);
                        }
                        None
                    });
                }
            }
            None => {
                let source = decodebin(
                    gst::ElementFactory::make("uridecodebin")
                        .property("uri", uri)
                        .build()?,
                );
                pipeline.add(&source)?;
            }
        }

        let weak_shared = Arc::downgrade(shared);
        let weak_eos = Arc::downgrade(shared);
        let control = Arc::new(Mutex::new(false));
        let eos_control = control.clone();
        let eos_feeding = feeding
            .as_ref()
            .map(|f: &Feeding| (Arc::downgrade(&f.feeder), f.on_fail.clone()));
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
                .eos(move |sink| {
                    if let Some(shared) = weak_eos.upgrade() {
                        let pipeline = sink
                            .parent()
                            .and_then(|p| p.downcast::<gst::Element>().ok());
                        let feeding = eos_feeding.as_ref().and_then(|(feeder, on_fail)| {
                            feeder.upgrade().map(|feeder| (feeder, on_fail.clone()))
                        });
                        shared.on_eos(pipeline, &eos_control, feeding);
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
                gst::MessageView::Error(_) if !shared.hold(msg) => shared.on_bus_error(msg),
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
            appsink,
            shared: shared.clone(),
            block: Some((convert_sink, block)),
            control,
            closing,
            feeding,
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
        // Set again only when it changes, and then the chain told to negotiate again (as a
        // capsfilter does when its caps change; an appsink does not on its own). No buffer has
        // passed yet (the block below is still on), so none in the old format reaches the
        // cache: the appsink itself would not refuse one.
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

        let mut probe = self.shared.lock();
        probe.cache = Some(cache.clone());
        let (eos, error, tags) = (probe.eos, probe.error.clone(), probe.tags.take());
        drop(probe);
        if let Some(tags) = tags {
            cache.merge_tags(&tags);
        }
        let failed = error.is_some();
        if let Some(err) = error {
            cache.fail(err);
        } else if eos {
            // An empty stream: nothing will be decoded, the pass is over.
            let feeding = self
                .feeding
                .as_ref()
                .map(|f| (f.feeder.clone(), f.on_fail.clone()));
            self.shared
                .on_eos(Some(self.pipeline.clone().upcast()), &self.control, feeding);
        }

        let block = self.block.take();
        match self.feeding.as_mut() {
            Some(feeding) if !feeding.handed_over => {
                feeding.handed_over = true;
                let (feeder, on_fail) = (feeding.feeder.clone(), feeding.on_fail.clone());
                // The held buffers go on first, under the feeder's lock: nothing else is in the
                // chain meanwhile.
                let stream = feeder.pad().stream_lock();
                let held = lock(&feeding.held).take().unwrap_or_default();
                if let Some((pad, id)) = block {
                    pad.remove_probe(id);
                    without_waiting(|| {
                        for item in held {
                            match item.send(&pad) {
                                Ok(_) => (),
                                Err(gst::FlowError::Flushing) | Err(gst::FlowError::Eos) => break,
                                Err(err) => {
                                    on_fail(Failure::Flow(err));
                                    break;
                                }
                            }
                        }
                    });
                }
                drop(stream);
                if failed {
                    return Ok(());
                }
                // Then this thread, which is to read the first buffer, feeds until it is there;
                // the feeder's task feeds the rest.
                let fed = without_waiting(|| {
                    feeder.feed_until(
                        START_BLOCK,
                        false,
                        START_BUDGET,
                        &|| cache.has_lead(),
                        &*on_fail,
                    )
                });
                if fed == Fed::Block {
                    cache.set_feed(Some(feed_hook(&feeder, &cache, on_fail)));
                }
            }
            _ => {
                if let Some((pad, id)) = block {
                    pad.remove_probe(id);
                }
            }
        }
        Ok(())
    }

    /// The private pipeline, to query it.
    pub fn pipeline(&self) -> &gst::Pipeline {
        &self.pipeline
    }

    fn shutdown(&mut self) {
        // A writer waiting for room in a streaming cache must not hold the streaming thread.
        self.shared.abandon();
        let cache = self.shared.lock().cache.clone();
        if let Some(cache) = cache {
            cache.close();
        }
        // Going to NULL deactivates the pads, which also releases a blocked streaming thread.
        // On a pool thread, waited for a little: a source stuck inside a state change (a
        // connect with a long timeout) is left to finish going to NULL in the background
        // rather than hold the element's own state change.
        let (done, finished) = std::sync::mpsc::channel();
        let (control, closing) = (self.control.clone(), self.closing.clone());
        let feeder = self.feeding.as_ref().map(|f| f.feeder.clone());
        self.pipeline.call_async(move |pipeline| {
            let mut shut = lock(&control);
            *shut = true;
            // A push under way returns (the cache is closed), and the task ends. Let go of
            // here, not after the pipeline: the file is closed before `shutdown` returns.
            if let Some(feeder) = feeder {
                feeder.stop();
            }
            // Waits for a plugging under way, whose element the sweep below then finds; none
            // starts after this.
            *lock(&closing) = true;
            let _ = pipeline.set_state(gst::State::Null);
            // The elements plugged while it ran keep their own state (see `autoplug`).
            for element in pipeline.children() {
                if element.is_locked_state() {
                    let _ = element.set_state(gst::State::Null);
                }
            }
            drop(shut);
            let _ = done.send(());
        });
        if finished.recv_timeout(SHUTDOWN_WAIT).is_err() {
            gst::warning!(
                CAT,
                obj = self.pipeline,
                "'{}' is still stopping; it finishes in the background",
                self.shared.location
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
        self.shutdown();
    }
}
