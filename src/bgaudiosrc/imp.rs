// SPDX-License-Identifier: MIT OR Apache-2.0

//! The element's contract: properties, states, negotiation, seeking and queries. What `create`
//! does is in `playout`.
//!
//! Locks, outermost first; a lock is only taken while holding those before it:
//! 1. `settings`, 2. `state`, 3. `reader`, 4. `clock_id` (this element's own; `settings` and
//!    `state` are copied out and dropped before anything blocks, pushes or touches the decode
//!    chain; `reader` is held by the streaming thread while it reads, which may wait);
//! 5. the registry's one lock (`registry`, bookkeeping only), then an entry's `decoder`;
//! 6. a copy's `filling`, then its `memo` (`cache`);
//! 7. a decode chain's `control`, then its `Shared` state (`decoder`).
//!
//! Nothing under 1–4 is held while a decode chain runs its callbacks, which take 6 and 7.

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::base_src::CreateSuccess;
use gst_base::subclass::prelude::*;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::Instant;

use super::cache::{PcmCache, Reader};
use super::decoder::{self, Decoder, NativeFormat, WaitError};
use super::gain::{self, Envelope};
use super::playout::{frames_to_time, time_to_frames};
use super::registry::{self, CacheKey, FileId, Lease, Probe};
use super::{BgAudioSrcMode, CAT};

const DEFAULT_LOCATION: Option<String> = None;
const DEFAULT_VOLUME: f64 = 1.0;
const DEFAULT_MUTE: bool = false;
const DEFAULT_MODE: BgAudioSrcMode = BgAudioSrcMode::Playback;
const DEFAULT_LOOP: bool = false;
const DEFAULT_BUFFER_DURATION: gst::ClockTime = gst::ClockTime::from_mseconds(20);
const MIN_BUFFER_DURATION: gst::ClockTime = gst::ClockTime::from_mseconds(1);
const MAX_BUFFER_DURATION: gst::ClockTime = gst::ClockTime::from_seconds(1);
const DEFAULT_FADE_IN: gst::ClockTime = gst::ClockTime::from_mseconds(20);
const DEFAULT_FADE_OUT: gst::ClockTime = gst::ClockTime::from_mseconds(20);
const MAX_FADE: gst::ClockTime = gst::ClockTime::from_seconds(10);
/// How long a volume change takes: short enough to feel immediate, long enough that no change
/// makes an audible step (zipper noise).
pub(super) const VOLUME_RAMP: gst::ClockTime = gst::ClockTime::from_mseconds(10);
const DEFAULT_MAX_CACHE_SIZE: u64 = 64 * 1024 * 1024;
const DEFAULT_TIMEOUT: gst::ClockTime = gst::ClockTime::from_seconds(10);
const DEFAULT_TRIM_SILENCE: bool = false;
/// -35 dBFS, measured on 1 s tones looped: an MP3 encoder's delay decodes to pre-echo up to
/// about -37 dBFS before the music starts, and an AAC's priming samples to a 20 ms ramp; a trim
/// at -60 dBFS left a 21 ms quiet run (under 400) at each MP3 seam, at -40 dBFS 1.2 ms on the
/// AAC ramp, at -35 dBFS none over 1 ms on either.
const DEFAULT_TRIM_THRESHOLD: f64 = -35.0;
/// The most a trim leaves out at each end of the file; also how far the reader stays behind a
/// decoder still on its first pass, so it never plays what it would trim.
pub(super) const MAX_TRIM: gst::ClockTime = gst::ClockTime::from_mseconds(500);
const DEFAULT_LOOP_CROSSFADE: gst::ClockTime = gst::ClockTime::ZERO;
const MAX_LOOP_CROSSFADE: gst::ClockTime = gst::ClockTime::from_seconds(30);
const DEFAULT_START_POSITION: gst::ClockTime = gst::ClockTime::ZERO;
const DEFAULT_RANDOM_START: bool = false;
/// The output formats, the preferred first (the decoded copy's own).
const OUTPUT_FORMATS: [gst_audio::AudioFormat; 2] =
    [gst_audio::AUDIO_FORMAT_S16, gst_audio::AUDIO_FORMAT_F32];
const MAX_RATE: i32 = 768_000;
const MAX_CHANNELS: i32 = 64;

#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub(super) location: Option<String>,
    pub(super) volume: f64,
    pub(super) mute: bool,
    pub(super) mode: BgAudioSrcMode,
    pub(super) do_loop: bool,
    pub(super) buffer_duration: gst::ClockTime,
    pub(super) fade_in: gst::ClockTime,
    pub(super) fade_out: gst::ClockTime,
    pub(super) max_cache_size: u64,
    /// How long the source may take to show its audio format; `None` waits for ever.
    pub(super) timeout: Option<gst::ClockTime>,
    pub(super) trim_silence: bool,
    /// dBFS.
    pub(super) trim_threshold: f64,
    pub(super) loop_crossfade: gst::ClockTime,
    pub(super) start_position: gst::ClockTime,
    pub(super) random_start: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            location: DEFAULT_LOCATION,
            volume: DEFAULT_VOLUME,
            mute: DEFAULT_MUTE,
            mode: DEFAULT_MODE,
            do_loop: DEFAULT_LOOP,
            buffer_duration: DEFAULT_BUFFER_DURATION,
            fade_in: DEFAULT_FADE_IN,
            fade_out: DEFAULT_FADE_OUT,
            max_cache_size: DEFAULT_MAX_CACHE_SIZE,
            timeout: Some(DEFAULT_TIMEOUT),
            trim_silence: DEFAULT_TRIM_SILENCE,
            trim_threshold: DEFAULT_TRIM_THRESHOLD,
            loop_crossfade: DEFAULT_LOOP_CROSSFADE,
            start_position: DEFAULT_START_POSITION,
            random_start: DEFAULT_RANDOM_START,
        }
    }
}

/// What the element plays, as `start` found it.
#[derive(Debug, Clone)]
pub(super) struct Source {
    /// The URI to decode.
    uri: String,
    /// The location as the user gave it, for messages.
    pub(super) location: String,
    /// The file on disk, when the location is a local file: what decoded copies and probes are
    /// shared by.
    pub(super) file: Option<FileId>,
}

/// From `start` until the output format is set: learning the file's own format. `start` starts
/// the probe (or joins one) without waiting for it; the wait happens on the streaming thread, in
/// `negotiate` (or in `do_seek`, for a seek that must know whether the source can seek).
#[derive(Debug)]
pub(super) struct Starting {
    source: Source,
    /// When the source must have shown its format by (`timeout`).
    deadline: Option<Instant>,
    /// The decode chain whose format this element waits for: its own, or one it joined.
    waiting: Option<Arc<decoder::Shared>>,
    /// The decode chain this element started to learn the format; it fills the decoded copy if
    /// this element is the one to make it.
    decoder: Option<Decoder>,
    native: Option<NativeFormat>,
    /// A seek that came before the output format (start and stop, stream time): applied when
    /// the output starts.
    seek: Option<(gst::ClockTime, Option<gst::ClockTime>)>,
}

impl Starting {
    fn new(source: Source, deadline: Option<Instant>) -> Self {
        Starting {
            source,
            deadline,
            waiting: None,
            decoder: None,
            native: None,
            seek: None,
        }
    }
}

/// From the output format on: playing a decoded copy.
#[derive(Debug)]
pub(super) struct Running {
    pub(super) native: NativeFormat,
    /// The decoded copy, shared with every element playing the same file in the same format.
    pub(super) lease: Lease,
    /// Where the audio comes from, for messages.
    pub(super) source: Source,
    pub(super) info: gst_audio::AudioInfo,
    pub(super) frames_per_buffer: usize,
    /// Frames output so far: every timestamp and offset comes from this counter.
    pub(super) sample_offset: u64,
    /// The output frame the segment stops at (a seek's stop position).
    pub(super) stop: Option<u64>,
    /// The frame of the file the first pass starts at (`start-position`, `random-start`).
    pub(super) first_from: u64,
    /// The generation of the copy's tags last sent downstream (0: none yet).
    pub(super) tags_sent: u64,
    /// Gain per output frame: volume ramps and fades. Made at the first buffer.
    pub(super) envelope: Option<Envelope>,
    /// Running time of frame 0: zero in playback mode; in mixing mode the running time at which
    /// the element started, so that it joins a running mixer at once.
    pub(super) timestamp_offset: Option<gst::ClockTime>,
}

/// The element's phases: a stopped element has no source, a starting one no copy to play.
#[derive(Debug, Default)]
pub(super) enum State {
    #[default]
    Stopped,
    Starting(Box<Starting>),
    Running(Box<Running>),
}

impl State {
    fn native(&self) -> Option<NativeFormat> {
        match self {
            State::Stopped => None,
            State::Starting(starting) => starting.native,
            State::Running(running) => Some(running.native),
        }
    }
}

#[derive(Default)]
pub struct BgAudioSrc {
    pub(super) settings: Mutex<Settings>,
    pub(super) state: Mutex<State>,
    /// This element's place in its decoded copy. Used only by the streaming thread (and by
    /// `stop` once that thread is gone), apart from `state` so that reading, which may wait for
    /// the decoder, holds no lock that `unlock` or a query needs.
    pub(super) reader: Mutex<Option<Reader>>,
    /// Set by `unlock`: format, cache and clock waits return at once.
    pub(super) flushing: AtomicBool,
    /// The `fade-out` signal came; the next buffer starts the fade.
    pub(super) fade_out_pending: AtomicBool,
    /// The clock wait in progress in mixing mode, for `unlock` to cancel.
    pub(super) clock_id: Mutex<Option<gst::SingleShotClockId>>,
}

#[glib::object_subclass]
impl ObjectSubclass for BgAudioSrc {
    const NAME: &'static str = "GstBgAudioSrc";
    type Type = super::BgAudioSrc;
    type ParentType = gst_base::PushSrc;
}

impl ObjectImpl for BgAudioSrc {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("location")
                    .nick("Location")
                    .blurb("File path or URI of the audio to play (anything uridecodebin opens)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecDouble::builder("volume")
                    .nick("Volume")
                    .blurb("Linear volume factor, 1.0 = 100 %")
                    .minimum(0.0)
                    .maximum(gain::MAX_GAIN)
                    .default_value(DEFAULT_VOLUME)
                    .mutable_playing()
                    .controllable()
                    .build(),
                glib::ParamSpecBoolean::builder("mute")
                    .nick("Mute")
                    .blurb("Mute the output (ramped; silent buffers are flagged GAP)")
                    .default_value(DEFAULT_MUTE)
                    .mutable_playing()
                    .controllable()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("mode", DEFAULT_MODE)
                    .nick("Mode")
                    .blurb(
                        "Playback: the only audio, non-live; mixing: a live input of an audiomixer",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("loop")
                    .nick("Loop")
                    .blurb("Loop the file without a gap")
                    .default_value(DEFAULT_LOOP)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt64::builder("buffer-duration")
                    .nick("Buffer duration")
                    .blurb("Duration of each output buffer in nanoseconds")
                    .minimum(MIN_BUFFER_DURATION.nseconds())
                    .maximum(MAX_BUFFER_DURATION.nseconds())
                    .default_value(DEFAULT_BUFFER_DURATION.nseconds())
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("fade-in-duration")
                    .nick("Fade-in duration")
                    .blurb(
                        "Fade-in when the element starts in mixing mode, in nanoseconds (0 = none)",
                    )
                    .maximum(MAX_FADE.nseconds())
                    .default_value(DEFAULT_FADE_IN.nseconds())
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt64::builder("fade-out-duration")
                    .nick("Fade-out duration")
                    .blurb(
                        "Fade-out before EOS after the fade-out signal, in nanoseconds (0 = none)",
                    )
                    .maximum(MAX_FADE.nseconds())
                    .default_value(DEFAULT_FADE_OUT.nseconds())
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt64::builder("max-cache-size")
                    .nick("Maximum cache size")
                    .blurb(
                        "Most bytes of decoded audio kept in memory; a longer file or stream \
                         plays through a small window and loops by seeking its source",
                    )
                    .default_value(DEFAULT_MAX_CACHE_SIZE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("timeout")
                    .nick("Timeout")
                    .blurb(
                        "Nanoseconds the source may take to show its audio format, or to deliver \
                         more audio once it has, before an error (0 = wait for ever)",
                    )
                    .default_value(DEFAULT_TIMEOUT.nseconds())
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("trim-silence")
                    .nick("Trim silence")
                    .blurb(
                        "Leave out leading and trailing samples below trim-threshold (at most \
                         500 ms at each end) from every pass",
                    )
                    .default_value(DEFAULT_TRIM_SILENCE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecDouble::builder("trim-threshold")
                    .nick("Trim threshold")
                    .blurb("Level in dBFS under which trim-silence counts a sample as silent")
                    .minimum(-120.0)
                    .maximum(0.0)
                    .default_value(DEFAULT_TRIM_THRESHOLD)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("loop-crossfade")
                    .nick("Loop crossfade")
                    .blurb(
                        "Nanoseconds each loop seam overlaps the file's end with its start \
                         (equal-power; at most half the file; 0 = none)",
                    )
                    .maximum(MAX_LOOP_CROSSFADE.nseconds())
                    .default_value(DEFAULT_LOOP_CROSSFADE.nseconds())
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("start-position")
                    .nick("Start position")
                    .blurb("Nanoseconds into the file where the first pass starts")
                    .default_value(DEFAULT_START_POSITION.nseconds())
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("random-start")
                    .nick("Random start")
                    .blurb("Start the first pass at a random position in the file")
                    .default_value(DEFAULT_RANDOM_START)
                    .mutable_ready()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn signals() -> &'static [glib::subclass::Signal] {
        static SIGNALS: LazyLock<Vec<glib::subclass::Signal>> = LazyLock::new(|| {
            vec![
                /// Fades the output out over `fade-out-duration`, then ends the stream with EOS:
                /// the click-free way for an application to stop the element.
                glib::subclass::Signal::builder("fade-out")
                    .action()
                    .class_handler(|args| {
                        if let Ok(obj) = args[0].get::<super::BgAudioSrc>() {
                            obj.imp().start_fade_out();
                        }
                        None
                    })
                    .build(),
            ]
        });
        SIGNALS.as_ref()
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.set_format(gst::Format::Time);
        obj.set_live(false);
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        // What the running element was started with cannot change under it: refused, as
        // filesrc refuses a new location, and the property keeps reading the value in use.
        if pspec.flags().contains(gst::PARAM_FLAG_MUTABLE_READY) {
            let state = self.obj().current_state();
            if state > gst::State::Ready {
                let (name, property) = (self.obj().name(), pspec.name());
                glib::g_warning!(
                    "bgaudiosrc",
                    "{name}: changing the '{property}' property in the {state:?} state is not \
                     supported; set it in the NULL or READY state (it keeps its value in use)"
                );
                return;
            }
        }
        gst::info!(CAT, imp = self, "'{}' set to {:?}", pspec.name(), value);
        const CHECKED: &str = "type checked upstream";
        let ns = || gst::ClockTime::from_nseconds(value.get().expect(CHECKED));
        let mut settings = self.settings();
        match pspec.name() {
            "location" => settings.location = value.get().expect(CHECKED),
            "volume" => settings.volume = value.get().expect(CHECKED),
            "mute" => settings.mute = value.get().expect(CHECKED),
            "mode" => settings.mode = value.get().expect(CHECKED),
            "loop" => settings.do_loop = value.get().expect(CHECKED),
            "buffer-duration" => settings.buffer_duration = ns(),
            "fade-in-duration" => settings.fade_in = ns(),
            "fade-out-duration" => settings.fade_out = ns(),
            "max-cache-size" => settings.max_cache_size = value.get().expect(CHECKED),
            "timeout" => settings.timeout = Some(ns()).filter(|t| !t.is_zero()),
            "trim-silence" => settings.trim_silence = value.get().expect(CHECKED),
            "trim-threshold" => settings.trim_threshold = value.get().expect(CHECKED),
            "loop-crossfade" => settings.loop_crossfade = ns(),
            "start-position" => settings.start_position = ns(),
            "random-start" => settings.random_start = value.get().expect(CHECKED),
            _ => unimplemented!(),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let settings = self.settings();
        match pspec.name() {
            "location" => settings.location.to_value(),
            "volume" => settings.volume.to_value(),
            "mute" => settings.mute.to_value(),
            "mode" => settings.mode.to_value(),
            "loop" => settings.do_loop.to_value(),
            "buffer-duration" => settings.buffer_duration.nseconds().to_value(),
            "fade-in-duration" => settings.fade_in.nseconds().to_value(),
            "fade-out-duration" => settings.fade_out.nseconds().to_value(),
            "max-cache-size" => settings.max_cache_size.to_value(),
            "timeout" => settings.timeout.map_or(0, |t| t.nseconds()).to_value(),
            "trim-silence" => settings.trim_silence.to_value(),
            "trim-threshold" => settings.trim_threshold.to_value(),
            "loop-crossfade" => settings.loop_crossfade.nseconds().to_value(),
            "start-position" => settings.start_position.nseconds().to_value(),
            "random-start" => settings.random_start.to_value(),
            _ => unimplemented!(),
        }
    }
}

impl GstObjectImpl for BgAudioSrc {}

impl ElementImpl for BgAudioSrc {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Background audio source",
                "Source/Audio",
                "Plays a decoded audio file, looped without a gap, at a set volume",
                "gst-plugin-bgaudio developers",
            )
        });
        Some(&*ELEMENT_METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            // S16 is what the decoded copy holds; F32 is made from it at output. Rates and
            // channel counts are bounded to what audio hardware and formats use, so no
            // buffer size computed from them can overflow.
            let caps = gst_audio::AudioCapsBuilder::new_interleaved()
                .format_list(OUTPUT_FORMATS)
                .rate_range(1..=MAX_RATE)
                .channels_range(1..=MAX_CHANNELS)
                .build();
            vec![gst::PadTemplate::new(
                "src",
                gst::PadDirection::Src,
                gst::PadPresence::Always,
                &caps,
            )
            .expect("valid pad template")]
        });
        PAD_TEMPLATES.as_ref()
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        if transition == gst::StateChange::ReadyToPaused {
            let live = self.settings().mode == BgAudioSrcMode::Mixing;
            gst::debug!(CAT, imp = self, "Starting as a source with live={live}");
            self.obj().set_live(live);
        }
        self.parent_change_state(transition)
    }
}

impl BaseSrcImpl for BgAudioSrc {
    /// Checks what can be checked at once (the location, a local file's existence, kind and
    /// permissions), then returns: the file's format is learnt on the streaming thread, in
    /// `negotiate`, so no state change waits for a source, however slow.
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = self.settings().clone();
        let Some(location) = settings.location.filter(|l| !l.is_empty()) else {
            return Err(gst::error_msg!(
                gst::ResourceError::NotFound,
                ("No location set: set the 'location' property to a file path or URI")
            ));
        };
        let (uri, file) = location_to_uri(&location)?;
        if file.is_none() && !protocol_is_supported(&uri) {
            return Err(gst::error_msg!(
                gst::CoreError::MissingPlugin,
                ("No installed element reads '{location}': its protocol is not supported")
            ));
        }
        gst::debug!(CAT, imp = self, "Starting on {}", uri);
        let deadline = settings
            .timeout
            .map(|t| Instant::now() + std::time::Duration::from_nanos(t.nseconds()));
        let mut starting = Starting::new(
            Source {
                uri,
                location,
                file,
            },
            deadline,
        );
        self.flushing.store(false, Ordering::SeqCst);
        self.fade_out_pending.store(false, Ordering::SeqCst);
        self.probe(&mut starting)?;
        *self.state() = State::Starting(Box::new(starting));
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        // The reader first, so a streaming cache no longer keeps data for it; then the lease and
        // any decode chain, outside our locks.
        let reader = self.reader().take();
        drop(reader);
        let old = std::mem::take(&mut *self.state());
        drop(old);
        gst::info!(CAT, imp = self, "Stopped");
        Ok(())
    }

    /// Learns the file's own format first (waiting on the streaming thread, interruptibly and
    /// within `timeout`), so that `fixate` can prefer it, then negotiates as usual.
    fn negotiate(&self) -> Result<(), gst::LoggableError> {
        match self.wait_native() {
            Ok(_) => self.parent_negotiate(),
            Err(WaitError::Cancelled) => {
                // Flushing (a state change or a seek): negotiate again next time round; `create`
                // returns FLUSHING meanwhile, which pauses the task without an error.
                self.obj().src_pad().mark_reconfigure();
                Ok(())
            }
            Err(err) => {
                let err = match err {
                    WaitError::Failed(err) => err,
                    _ => {
                        let (location, timeout) = self.timeout_context();
                        gst::error_msg!(
                            gst::ResourceError::Read,
                            ("'{location}' showed no audio format within {timeout} (the \
                                 'timeout' property)")
                        )
                    }
                };
                self.post_error_message(err);
                Err(gst::loggable_error!(
                    CAT,
                    "The source showed no audio format"
                ))
            }
        }
    }

    fn caps(&self, filter: Option<&gst::Caps>) -> Option<gst::Caps> {
        // Once the output started, the cache holds samples in one format: offer only that one,
        // so a renegotiation keeps it wherever downstream still allows it.
        let current = match &*self.state() {
            State::Running(running) => running.info.to_caps().ok().map(|mut caps| {
                // Either output format: both are made from the same copy.
                let format = running.info.format();
                let formats = std::iter::once(format)
                    .chain(OUTPUT_FORMATS.into_iter().filter(|f| *f != format))
                    .map(|f| f.to_str().to_send_value());
                if let Some(s) = caps.make_mut().structure_mut(0) {
                    s.set("format", gst::List::from_values(formats));
                }
                caps
            }),
            _ => None,
        };
        let Some(current) = current else {
            return self.parent_caps(filter);
        };
        Some(match filter {
            Some(filter) => filter.intersect_with_mode(&current, gst::CapsIntersectMode::First),
            None => current,
        })
    }

    /// Keeps the file's own format where downstream allows it, whichever of downstream's
    /// structures allows it: the first structure that takes the file's rate and channel count,
    /// else its channel count, else its rate, else the first; within it the nearest rate and
    /// channel count, the file's channel layout, and S16 (the copy's format) over F32.
    fn fixate(&self, caps: gst::Caps) -> gst::Caps {
        let native = self.state().native();
        let Some(native) = native else {
            let mut caps = caps;
            caps.truncate();
            return self.parent_fixate(caps);
        };
        let (rate, channels) = (native.rate, native.channels);
        let pick = [(true, true), (false, true), (true, false)]
            .into_iter()
            .find_map(|(want_rate, want_channels)| {
                caps.iter().position(|s| {
                    (!want_rate || allows(s, "rate", rate))
                        && (!want_channels || allows(s, "channels", channels))
                })
            })
            .unwrap_or(0);
        let mut fixed = gst::Caps::new_empty();
        if let (Some(s), Some(features)) = (caps.structure(pick), caps.features(pick)) {
            fixed
                .make_mut()
                .append_structure_full(s.to_owned(), Some(features.to_owned()));
        }
        if let Some(s) = fixed.make_mut().structure_mut(0) {
            s.fixate_field_str("format", gst_audio::AUDIO_FORMAT_S16.to_str());
            s.fixate_field_nearest_int("rate", native.rate);
            s.fixate_field_nearest_int("channels", native.channels);
            let channels = s.get::<i32>("channels").unwrap_or(native.channels);
            let mask_fixed = s
                .value("channel-mask")
                .is_ok_and(|v| v.get::<gst::Bitmask>().is_ok());
            if !mask_fixed && (channels > 2 || s.has_field("channel-mask")) {
                let mask = match native.channel_mask {
                    Some(mask) if channels == native.channels && mask != 0 => mask,
                    _ => gst_audio::AudioChannelPosition::fallback_mask(channels as u32),
                };
                s.set("channel-mask", gst::Bitmask::new(mask));
            }
        }
        gst::debug!(CAT, imp = self, "Fixating to {}", fixed);
        self.parent_fixate(fixed)
    }

    fn set_caps(&self, caps: &gst::Caps) -> Result<(), gst::LoggableError> {
        let info = gst_audio::AudioInfo::from_caps(caps)
            .map_err(|_| gst::loggable_error!(CAT, "Invalid caps {}", caps))?;
        let settings = self.settings().clone();
        let frames_per_buffer = settings
            .buffer_duration
            .nseconds()
            .mul_div_round(info.rate() as u64, gst::ClockTime::SECOND.nseconds())
            .unwrap_or(1)
            .max(1) as usize;

        // The decoded copy holds S16 at the output's rate and layout.
        let copy_info = copy_format(&info)
            .map_err(|_| gst::loggable_error!(CAT, "No S16 format like {}", caps))?;

        let mut state = self.state();
        let starting = match &mut *state {
            State::Running(running) => {
                let current = &running.info;
                let same = current.rate() == info.rate()
                    && current.channels() == info.channels()
                    && current.positions() == info.positions();
                if same {
                    // The same copy serves the other sample format.
                    if current.format() != info.format() {
                        gst::info!(CAT, imp = self, "Output format now {}", caps);
                        let bpf = info.bpf();
                        running.info = info;
                        drop(state);
                        self.obj()
                            .set_blocksize((frames_per_buffer as u32).saturating_mul(bpf));
                    }
                    return Ok(());
                }
                let current = &running.info;
                return Err(gst::loggable_error!(
                    CAT,
                    "Cannot change to {} after the output started at {} Hz, {} channels",
                    caps,
                    current.rate(),
                    current.channels()
                ));
            }
            State::Starting(starting) if starting.native.is_some() => starting,
            _ => return Err(gst::loggable_error!(CAT, "Not started")),
        };
        let source = starting.source.clone();
        let seek = starting.seek.take();
        let native = starting.native.expect("checked above");
        let probe_decoder = starting.decoder.take();
        starting.waiting = None;
        drop(state);

        gst::debug!(CAT, imp = self, "Output caps {}", caps);
        // A source that streams (see `streams`) plays through a window from the start; so does
        // one whose copy in the output format is known to exceed the limit, unless a seek was
        // accepted meanwhile (a copy turns into a window itself if it grows past the limit).
        // Otherwise the copy is kept (and shared).
        let max_cache_size = settings.max_cache_size;
        let output_bytes = decoded_bytes(native.duration, copy_info.rate(), copy_info.bpf());
        let streaming = streams(&native, max_cache_size)
            || (seek.is_none() && output_bytes.is_some_and(|b| b > max_cache_size));
        if streaming {
            let (location, live) = (&source.location, native.live);
            gst::info!(
                CAT,
                imp = self,
                "'{location}' streams through a window (live: {live}, {output_bytes:?} bytes \
                 decoded, limit {max_cache_size})"
            );
        }
        let key = source
            .file
            .clone()
            .filter(|_| !streaming)
            .map(|file| CacheKey {
                file,
                max_cache_size,
                rate: info.rate(),
                channels: info.channels(),
                channel_mask: caps
                    .structure(0)
                    .and_then(|s| s.get::<gst::Bitmask>("channel-mask").ok())
                    .map_or(0, |m| *m),
            });
        let (lease, reader, new) = registry::obtain(key, || {
            let cache = if streaming {
                PcmCache::streaming(info.rate(), info.channels(), max_cache_size)
            } else {
                PcmCache::new(info.rate(), info.channels(), max_cache_size)
            };
            cache.set_label(&format!(
                "{} of '{}' at {} Hz, {} channels (made by {})",
                if streaming { "window" } else { "copy" },
                source.location,
                info.rate(),
                info.channels(),
                self.obj().name()
            ));
            cache
        });
        if new {
            // Outside every lock: a decode chain of our own (the one that probed, or a new one
            // for a format nobody decodes yet) starts filling the copy.
            let entry = lease.entry();
            let started = match probe_decoder {
                Some(decoder) => Ok(decoder),
                None => Decoder::start(
                    &source.uri,
                    source.file.is_some(),
                    &decoder::Shared::new(&source.location),
                    Some(&copy_info),
                ),
            }
            .and_then(|mut decoder| {
                decoder.start_output(&copy_info, entry.cache.clone())?;
                Ok(decoder)
            });
            match started {
                Ok(decoder) => entry.set_decoder(decoder),
                Err(err) => {
                    entry.cache.fail(err.clone());
                    self.post_error_message(err);
                    return Err(gst::loggable_error!(CAT, "Could not start decoding"));
                }
            }
        } else if let Some(mut decoder) = probe_decoder {
            // Another element's chain fills the copy: this one goes, without this (streaming)
            // thread waiting for it.
            decoder.shutdown(false);
        }
        gst::info!(CAT, imp = self, "Decoded copy made by this element: {new}");

        let bpf = info.bpf();
        let rate = info.rate() as u64;
        *self.reader() = Some(reader);
        *self.state() = State::Running(Box::new(Running {
            native,
            lease,
            source,
            info,
            frames_per_buffer,
            sample_offset: 0,
            stop: None,
            first_from: 0,
            tags_sent: 0,
            envelope: None,
            timestamp_offset: None,
        }));
        self.start_first_pass(&settings, rate);
        if let Some((start, stop)) = seek {
            let frame = |t| time_to_frames(t, rate);
            self.seek_to(frame(start), stop.map(frame));
        }
        self.obj()
            .set_blocksize((frames_per_buffer as u32).saturating_mul(bpf));
        Ok(())
    }

    fn query(&self, query: &mut gst::QueryRef) -> bool {
        match query.view_mut() {
            gst::QueryViewMut::Latency(q) if self.obj().is_live() => {
                // One buffer: a buffer's last frame is due a buffer's duration after its first.
                let configured = self.settings().buffer_duration;
                let latency = match &*self.state() {
                    State::Running(r) => {
                        frames_to_time(r.frames_per_buffer as u64, r.info.rate() as u64)
                    }
                    _ => configured,
                };
                gst::debug!(CAT, imp = self, "Live, latency {}", latency);
                q.set(true, latency, gst::ClockTime::NONE);
                return true;
            }
            gst::QueryViewMut::Duration(q) if q.format() == gst::Format::Time => {
                // None while looping: the stream does not end.
                if self.settings().do_loop {
                    q.set(gst::ClockTime::NONE);
                    return true;
                }
                if let Some(duration) = self.file_duration() {
                    q.set(duration);
                    return true;
                }
            }
            // The position in the file's stream, from the sample counter, in both modes (in
            // mixing mode the base class would answer the running time).
            gst::QueryViewMut::Position(q) => {
                let position = match &*self.state() {
                    State::Running(running) => running.info.convert_generic(
                        gst::format::Default::from_u64(running.sample_offset),
                        q.format(),
                    ),
                    _ => None,
                };
                if let Some(position) = position {
                    q.set(position);
                    return true;
                }
            }
            gst::QueryViewMut::Convert(q) => {
                let (src, dest) = q.get();
                let info = self.output_info();
                if let Some(converted) = info.and_then(|info| info.convert_generic(src, dest)) {
                    q.set(src, converted);
                    return true;
                }
            }
            gst::QueryViewMut::Seeking(q)
                if matches!(q.format(), gst::Format::Time | gst::Format::Default) =>
            {
                let format = q.format();
                let seekable = self.is_seekable();
                let do_loop = self.settings().do_loop;
                let end = if do_loop { None } else { self.file_duration() };
                let info = self.output_info();
                let end = match format {
                    gst::Format::Time => end.map(gst::GenericFormattedValue::from),
                    _ => end
                        .zip(info)
                        .and_then(|(end, info)| info.convert_generic(end, format)),
                };
                q.set(
                    seekable,
                    gst::GenericFormattedValue::new(format, 0),
                    end.unwrap_or_else(|| gst::GenericFormattedValue::new(format, -1)),
                );
                return true;
            }
            _ => (),
        }
        BaseSrcImplExt::parent_query(self, query)
    }

    /// In playback mode, sample-accurately anywhere in the decoded copy (or in the part the
    /// first pass has not reached yet); not in a window over a stream too long to keep, and not
    /// in mixing mode (live sources do not seek).
    fn is_seekable(&self) -> bool {
        if self.settings().mode == BgAudioSrcMode::Mixing {
            return false;
        }
        let max_cache_size = self.settings().max_cache_size;
        match &*self.state() {
            State::Running(running) => !running.lease.entry().cache.is_window(),
            // Refused before the first buffer as after it, once it is known to stream.
            State::Starting(starting) => !starting
                .native
                .is_some_and(|native| streams(&native, max_cache_size)),
            State::Stopped => true,
        }
    }

    /// A seek in TIME (GstBaseSrc converts DEFAULT and BYTES through the CONVERT query): the
    /// next buffer starts at the segment's start, its timestamps and stream time from there, as
    /// audiotestsrc does; a stop position ends the segment on that exact frame (EOS, or
    /// SEGMENT_DONE for a SEGMENT seek). With `loop=true` a position past the end wraps into the
    /// file. A seek after EOS plays again.
    fn do_seek(&self, segment: &mut gst::Segment) -> bool {
        let Some(segment) = segment.downcast_mut::<gst::format::Time>() else {
            return false;
        };
        let start = segment
            .position()
            .or(segment.start())
            .unwrap_or(gst::ClockTime::ZERO);
        let stop = segment.stop();
        let live = self.settings().mode == BgAudioSrcMode::Mixing;
        if segment.rate() < 0.0 || (live && (start > gst::ClockTime::ZERO || stop.is_some())) {
            gst::debug!(
                CAT,
                imp = self,
                "Refusing seek to {start} (rate {})",
                segment.rate()
            );
            return false;
        }
        // Stream time is the position in the file's stream.
        segment.set_time(start);
        if live {
            // The start-up seek GstBaseSrc always makes: nothing to do.
            return true;
        }
        let rate = match &*self.state() {
            State::Stopped => return true,
            State::Starting(_) => None,
            State::Running(running) => Some(running.info.rate() as u64),
        };
        let Some(rate) = rate else {
            return self.seek_while_starting(start, stop);
        };
        gst::debug!(CAT, imp = self, "Seek to {} (stop {:?})", start, stop);
        let frame = |t| time_to_frames(t, rate);
        self.seek_to(frame(start), stop.map(frame))
    }

    fn unlock(&self) -> Result<(), gst::ErrorMessage> {
        gst::debug!(CAT, imp = self, "Unlocking");
        self.flushing.store(true, Ordering::SeqCst);
        if let Some(id) = self.clock_id().take() {
            id.unschedule();
        }
        match &*self.state() {
            State::Starting(starting) => {
                if let Some(shared) = &starting.waiting {
                    shared.wake();
                }
            }
            State::Running(running) => running.lease.entry().cache.wake(),
            State::Stopped => (),
        }
        Ok(())
    }

    fn unlock_stop(&self) -> Result<(), gst::ErrorMessage> {
        gst::debug!(CAT, imp = self, "Unlock stop");
        self.flushing.store(false, Ordering::SeqCst);
        // GstBaseSrc drops the events it had queued when a flush ends: tags queued by the
        // last buffer may be among them, so all of them go again with the next one.
        if let State::Running(running) = &mut *self.state() {
            running.tags_sent = 0;
        }
        Ok(())
    }
}

impl PushSrcImpl for BgAudioSrc {
    fn create(
        &self,
        _buffer: Option<&mut gst::BufferRef>,
    ) -> Result<CreateSuccess, gst::FlowError> {
        self.produce().map(CreateSuccess::NewBuffer)
    }
}

impl BgAudioSrc {
    /// Starts learning the source's own format, without waiting: known at once for a file
    /// probed before in this process; else from a decode chain, one this element starts (it
    /// returns at once) or the one another element started on the same file.
    /// Stores what it learnt in `starting`; call it with no lock held.
    fn probe(&self, starting: &mut Starting) -> Result<(), gst::ErrorMessage> {
        let source = &starting.source;
        let probe = match &source.file {
            Some(file) => registry::probe(file, &source.location),
            None => Probe::Own(decoder::Shared::new(&source.location)),
        };
        match probe {
            Probe::Known(native) => {
                gst::info!(
                    CAT,
                    imp = self,
                    "'{}' decodes to {native:?} (known from an earlier probe)",
                    source.location
                );
                starting.native = Some(native);
            }
            Probe::Join(shared) => {
                gst::debug!(CAT, imp = self, "Waiting for another element's probe");
                starting.waiting = Some(shared);
            }
            Probe::Own(shared) => {
                // The chain is told the output format up front when downstream allows one
                // only, so it converts to it at once instead of negotiating twice.
                let output = self.fixed_output();
                starting.decoder = Some(Decoder::start(
                    &source.uri,
                    source.file.is_some(),
                    &shared,
                    output.as_ref(),
                )?);
                starting.waiting = Some(shared);
            }
        }
        Ok(())
    }

    /// Waits for the source's own format (see `probe`), interruptibly (`unlock`) and within
    /// `timeout`.
    fn wait_native(&self) -> Result<NativeFormat, WaitError> {
        loop {
            let (shared, deadline) = match &*self.state() {
                State::Starting(starting) => match (starting.native, &starting.waiting) {
                    (Some(native), _) => return Ok(native),
                    (None, Some(shared)) => (shared.clone(), starting.deadline),
                    (None, None) => return Err(WaitError::Abandoned),
                },
                state => return state.native().ok_or(WaitError::Cancelled),
            };
            let waited = shared.wait_native(deadline, || self.flushing.load(Ordering::SeqCst));
            let mut state = self.state();
            let State::Starting(starting) = &mut *state else {
                return Err(WaitError::Cancelled);
            };
            match waited {
                Ok(native) => {
                    if let Some(file) = &starting.source.file {
                        registry::remember(file, native);
                    }
                    gst::info!(
                        CAT,
                        imp = self,
                        "'{}' decodes to {native:?}",
                        starting.source.location
                    );
                    starting.native = Some(native);
                    return Ok(native);
                }
                // The element that probed stopped: probe again, maybe as the owner this time,
                // outside the lock.
                Err(WaitError::Abandoned) => {
                    let mut again = Starting::new(starting.source.clone(), starting.deadline);
                    drop(state);
                    self.probe(&mut again).map_err(WaitError::Failed)?;
                    if let State::Starting(starting) = &mut *self.state() {
                        starting.waiting = again.waiting.take();
                        starting.decoder = again.decoder.take();
                        starting.native = again.native;
                    }
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// A seek before the output format: applied when the output starts, or refused as it would
    /// be then, when the source turns out to stream through a window. Waits for the format for
    /// that (as `negotiate` would). The seek to 0 GstBaseSrc makes at every start is no seek:
    /// the first pass starts where `start-position` says.
    fn seek_while_starting(&self, start: gst::ClockTime, stop: Option<gst::ClockTime>) -> bool {
        let seek = (start > gst::ClockTime::ZERO || stop.is_some()).then_some((start, stop));
        if seek.is_some() {
            let native = match self.wait_native() {
                Ok(native) => native,
                Err(err) => {
                    gst::debug!(CAT, imp = self, "Seek before the format: {:?}", err);
                    return false;
                }
            };
            if streams(&native, self.settings().max_cache_size) {
                gst::debug!(CAT, imp = self, "Cannot seek in a window over the stream");
                return false;
            }
        }
        if let State::Starting(starting) = &mut *self.state() {
            starting.seek = seek;
        }
        true
    }

    /// The output format when downstream allows one rate and channel layout only, whatever the
    /// file: a decode chain told it from the start converts to it at once, instead of showing
    /// the file's own format first and negotiating again (a tenth of a start-up's CPU).
    fn fixed_output(&self) -> Option<gst_audio::AudioInfo> {
        let obj = self.obj();
        let pad = obj.src_pad();
        let peer = pad.peer_query_caps(Some(&pad.pad_template_caps()));
        if peer.is_any() {
            return None;
        }
        let mut fixed = None;
        for s in peer.iter() {
            let rate = s.get::<i32>("rate").ok()?;
            let channels = s.get::<i32>("channels").ok()?;
            let mask = match s.value("channel-mask") {
                Ok(v) => Some(*v.get::<gst::Bitmask>().ok()?),
                // Without a mask, more than two channels have no one layout.
                Err(_) if channels > 2 => return None,
                Err(_) => None,
            };
            match fixed {
                None => fixed = Some((rate, channels, mask)),
                Some(f) if f == (rate, channels, mask) => (),
                Some(_) => return None,
            }
        }
        let (rate, channels, mask) = fixed?;
        let mut caps = gst_audio::AudioCapsBuilder::new_interleaved()
            .format(gst_audio::AUDIO_FORMAT_S16)
            .rate(rate)
            .channels(channels);
        if let Some(mask) = mask {
            caps = caps.channel_mask(mask);
        }
        gst_audio::AudioInfo::from_caps(&caps.build()).ok()
    }

    /// The file's duration: exact once the copy is complete, else what the decode chain or the
    /// probe said.
    fn file_duration(&self) -> Option<gst::ClockTime> {
        // What to ask is copied out: the decode chain is queried with no lock held.
        let (entry, native) = match &*self.state() {
            State::Running(running) => (Some(running.lease.entry().clone()), Some(running.native)),
            State::Starting(starting) => (None, starting.native),
            State::Stopped => (None, None),
        };
        entry
            .and_then(|entry| {
                let cache = &entry.cache;
                cache
                    .complete_frames()
                    .and_then(|f| f.mul_div_floor(*gst::ClockTime::SECOND, cache.rate() as u64))
                    .map(gst::ClockTime::from_nseconds)
                    .or_else(|| entry.duration())
            })
            .or(native.and_then(|n| n.duration))
    }

    /// Puts the reader where the first pass starts (`start-position`, or a random place with
    /// `random-start`); the output still starts at 0. Later passes start at the file's start.
    fn start_first_pass(&self, settings: &Settings, rate: u64) {
        if !settings.random_start && settings.start_position == gst::ClockTime::ZERO {
            return;
        }
        let length = match &*self.state() {
            State::Running(running) => {
                let cache = &running.lease.entry().cache;
                cache.complete_frames().or_else(|| {
                    running
                        .native
                        .duration
                        .map(|d| time_to_frames(d, rate))
                        .filter(|f| *f > 0)
                })
            }
            _ => return,
        };
        let frame = if settings.random_start {
            // Not for cryptography: distinct openings for instances of one file.
            use std::hash::{BuildHasher, Hasher};
            let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
            hasher.write_u128(std::time::UNIX_EPOCH.elapsed().map_or(0, |d| d.as_nanos()));
            length.map_or(0, |length| hasher.finish() % length)
        } else {
            let frame = time_to_frames(settings.start_position, rate);
            match length {
                Some(length) if settings.do_loop && length > 0 => frame % length,
                _ => frame,
            }
        };
        let mut reader = self.reader();
        let moved = reader.as_mut().is_some_and(|r| r.seek_output(0, frame));
        drop(reader);
        if moved {
            if let State::Running(running) = &mut *self.state() {
                running.first_from = frame;
            }
        }
        // (Refused in a window over a stream: it plays from its start.)
        gst::info!(
            CAT,
            imp = self,
            "First pass from frame {frame}: placed {moved}"
        );
    }

    /// Moves playout to output frame `frame` (its timestamps follow from it) and the reader to
    /// what the output plays at that frame: from where the first pass started, through the
    /// trimmed bounds and seams of later passes when looping (see `Reader::seek_output`); the
    /// segment ends at `stop`. A reader let go at EOS is made again, so a seek after EOS plays
    /// again.
    fn seek_to(&self, frame: u64, stop: Option<u64>) -> bool {
        let (cache, first) = match &*self.state() {
            State::Running(running) => (running.lease.entry().cache.clone(), running.first_from),
            _ => return false,
        };
        let mut reader = self.reader();
        if reader.is_none() {
            *reader = cache.reader();
        }
        if !reader.as_mut().is_some_and(|r| r.seek_output(frame, first)) {
            gst::debug!(CAT, imp = self, "Cannot seek in a window over the stream");
            return false;
        }
        drop(reader);
        if let State::Running(running) = &mut *self.state() {
            // The gain goes on from where it was: a fade-out under way still ends in EOS.
            running.envelope = running
                .envelope
                .take()
                .map(|envelope| envelope.moved(running.sample_offset, frame));
            running.sample_offset = frame;
            running.stop = stop;
        }
        gst::debug!(
            CAT,
            imp = self,
            "Playing from output frame {frame} (first pass from frame {first}) to {stop:?}"
        );
        true
    }

    /// The location and timeout, for the message of a source that showed no format in time.
    fn timeout_context(&self) -> (String, String) {
        // The settings first, then the state (the lock order).
        let (configured, timeout) = {
            let settings = self.settings();
            (
                settings.location.clone().unwrap_or_default(),
                settings.timeout,
            )
        };
        let location = match &*self.state() {
            State::Starting(starting) => starting.source.location.clone(),
            _ => configured,
        };
        let timeout = timeout.map_or_else(
            || "ever".to_owned(),
            |t| format!("{} s", t.nseconds() as f64 / 1e9),
        );
        (location, timeout)
    }

    /// The output format, once running.
    fn output_info(&self) -> Option<gst_audio::AudioInfo> {
        match &*self.state() {
            State::Running(running) => Some(running.info.clone()),
            _ => None,
        }
    }

    pub(super) fn settings(&self) -> MutexGuard<'_, Settings> {
        self.settings.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn reader(&self) -> MutexGuard<'_, Option<Reader>> {
        self.reader.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether a source plays through a window: it is live, or it decodes to more than
/// `max_cache_size` at its own rate and channel count. Known from its format alone, so a seek
/// before the first buffer is refused as one after it.
fn streams(native: &NativeFormat, max_cache_size: u64) -> bool {
    native.live
        || decoded_bytes(
            native.duration,
            native.rate as u32,
            native.channels as u32 * 2,
        )
        .is_some_and(|bytes| bytes > max_cache_size)
}

/// The bytes of S16 that `duration` decodes to at `rate` with `bpf` bytes per frame.
fn decoded_bytes(duration: Option<gst::ClockTime>, rate: u32, bpf: u32) -> Option<u64> {
    duration?
        .nseconds()
        .mul_div_ceil(rate as u64 * bpf as u64, *gst::ClockTime::SECOND)
}

/// The format of the decoded copy behind output `info`: S16 at its rate and channel layout.
fn copy_format(info: &gst_audio::AudioInfo) -> Result<gst_audio::AudioInfo, glib::BoolError> {
    let builder =
        gst_audio::AudioInfo::builder(gst_audio::AUDIO_FORMAT_S16, info.rate(), info.channels())
            .flags(info.flags());
    match info.positions() {
        Some(positions) => builder.positions(positions).build(),
        None => builder.build(),
    }
}

/// Whether a caps structure allows `value` for `field` (a missing field allows anything).
fn allows(s: &gst::StructureRef, field: &str, value: i32) -> bool {
    // (gst_value_can_intersect only compares the types: intersect for real.)
    s.value(field)
        .map_or(true, |v| v.intersect(&value.to_send_value()).is_some())
}

/// Whether an installed element reads URIs of `uri`'s protocol.
fn protocol_is_supported(uri: &str) -> bool {
    let Some(protocol) = uri.split_once(':').map(|(p, _)| p) else {
        return false;
    };
    let Ok(protocol) = std::ffi::CString::new(protocol) else {
        return false;
    };
    // SAFETY: a valid NUL-terminated string; the function only reads the registry.
    unsafe {
        gst::ffi::gst_uri_protocol_is_supported(gst::ffi::GST_URI_SRC, protocol.as_ptr()) != 0
    }
}

/// Turns the `location` property into a URI for uridecodebin, with the file's identity when it
/// is a local file. Local files are checked here so that the usual mistakes get the same clear
/// errors as `filesrc` gives.
fn location_to_uri(location: &str) -> Result<(String, Option<FileId>), gst::ErrorMessage> {
    use gst::ResourceError::{NotFound, OpenRead};
    let path = if has_uri_scheme(location) {
        if !location.starts_with("file:") {
            return Ok((location.to_owned(), None));
        }
        glib::filename_from_uri(location)
            .map_err(|err| gst::error_msg!(NotFound, ("Invalid file URI '{location}': {err}")))?
            .0
    } else {
        std::path::PathBuf::from(location)
    };
    let metadata = std::fs::metadata(&path).map_err(|err| {
        let (code, why) = match err.kind() {
            std::io::ErrorKind::NotFound => (NotFound, "no such file".to_owned()),
            std::io::ErrorKind::PermissionDenied => (OpenRead, "permission denied".to_owned()),
            _ => (OpenRead, err.to_string()),
        };
        gst::error_msg!(
            code,
            ("Could not open file '{location}' for reading: {why}")
        )
    })?;
    if metadata.is_dir() {
        return Err(gst::error_msg!(
            OpenRead,
            ("'{location}' is a directory, not an audio file")
        ));
    }
    if metadata.len() == 0 {
        return Err(gst::error_msg!(
            gst::StreamError::TypeNotFound,
            ("'{location}' is empty: it holds no audio")
        ));
    }
    let absolute = std::path::absolute(&path)
        .map_err(|err| gst::error_msg!(OpenRead, ("Could not resolve '{location}': {err}")))?;
    let uri = glib::filename_to_uri(&absolute, None).map_err(|err| {
        gst::error_msg!(OpenRead, ("Could not turn '{location}' into a URI: {err}"))
    })?;
    let file = FileId {
        path: std::fs::canonicalize(&absolute).unwrap_or(absolute),
        size: metadata.len(),
        modified: metadata.modified().ok(),
    };
    Ok((uri.into(), Some(file)))
}

/// Whether `s` starts with a URI scheme (RFC 3986: a letter, then letters, digits, `+ - .`,
/// then `:`). One letter is not enough, so `C:\music.ogg` stays a path.
fn has_uri_scheme(s: &str) -> bool {
    let Some((scheme, _)) = s.split_once(':') else {
        return false;
    };
    scheme.len() > 1
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_schemes_and_paths() {
        assert!(has_uri_scheme("file:///tmp/a.ogg"));
        assert!(has_uri_scheme("https://example.org/a.mp3"));
        assert!(!has_uri_scheme("/tmp/a.ogg"));
        assert!(!has_uri_scheme("music.ogg"));
        assert!(!has_uri_scheme("C:\\music.ogg"));
        assert!(!has_uri_scheme("./a:b.ogg"));
    }
}
