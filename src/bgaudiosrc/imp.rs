// SPDX-License-Identifier: MIT OR Apache-2.0

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::base_src::CreateSuccess;
use gst_base::subclass::prelude::*;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

use super::cache::{PcmCache, ReadError};
use super::decoder::{Decoder, NativeFormat};
use super::gain::{self, Envelope};
use super::registry::{self, CacheKey, Entry, FileId};
use super::BgAudioSrcMode;

pub(crate) static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "bgaudiosrc",
        gst::DebugColorFlags::empty(),
        Some("Background audio source"),
    )
});

const DEFAULT_LOCATION: Option<String> = None;
const DEFAULT_VOLUME: f64 = 1.0;
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
const VOLUME_RAMP: gst::ClockTime = gst::ClockTime::from_mseconds(10);
const DEFAULT_MAX_CACHE_SIZE: u64 = 64 * 1024 * 1024;
/// The window a file too long to cache is streamed through.
const STREAM_WINDOW_BYTES: u64 = 256 * 1024;

#[derive(Debug, Clone)]
struct Settings {
    location: Option<String>,
    volume: f64,
    mode: BgAudioSrcMode,
    do_loop: bool,
    buffer_duration: gst::ClockTime,
    fade_in: gst::ClockTime,
    fade_out: gst::ClockTime,
    max_cache_size: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            location: DEFAULT_LOCATION,
            volume: DEFAULT_VOLUME,
            mode: DEFAULT_MODE,
            do_loop: DEFAULT_LOOP,
            buffer_duration: DEFAULT_BUFFER_DURATION,
            fade_in: DEFAULT_FADE_IN,
            fade_out: DEFAULT_FADE_OUT,
            max_cache_size: DEFAULT_MAX_CACHE_SIZE,
        }
    }
}

/// The settings `create` needs, copied out once per buffer without allocating.
#[derive(Debug, Clone, Copy)]
struct Playout {
    volume: f64,
    mode: BgAudioSrcMode,
    do_loop: bool,
    fade_in: gst::ClockTime,
    fade_out: gst::ClockTime,
}

/// What exists between `start` and `stop`.
#[derive(Debug, Default)]
struct State {
    decoder: Option<Decoder>,
    native: Option<NativeFormat>,
    /// The file on disk, when the location is a local file: part of the shared cache's key.
    file: Option<FileId>,
    /// The URI to decode and the location as the user gave it (for messages).
    uri: String,
    location: String,
    /// The decoded copy this element plays, shared with every element playing the same file
    /// in the same format.
    entry: Option<Arc<Entry>>,
    /// The entry's decode chain was shut down after the cache completed.
    decoder_released: bool,
    info: Option<gst_audio::AudioInfo>,
    frames_per_buffer: usize,
    /// Next frame to read from the file (the cache).
    position: u64,
    /// Frames output so far: every timestamp and offset comes from this counter.
    sample_offset: u64,
    /// Gain per output frame: volume ramps and fades. Made at the first buffer.
    envelope: Option<Envelope>,
    /// The `fade-out` signal came; the next buffer starts the fade.
    fade_out_pending: bool,
    /// Running time of frame 0: zero in playback mode; in mixing mode the running time at which
    /// the element started, so that it joins a running mixer at once.
    timestamp_offset: Option<gst::ClockTime>,
}

/// How `fill_copied` scales the samples it copies.
#[derive(Debug, Clone, Copy)]
enum Gain<'a> {
    Constant(f64),
    /// Per frame, with the output frame number of the first sample.
    Envelope(&'a Envelope, u64),
}

#[derive(Default)]
pub struct BgAudioSrc {
    settings: Mutex<Settings>,
    state: Mutex<State>,
    /// Set by `unlock`: cache and clock waits return at once.
    flushing: AtomicBool,
    /// The clock wait in progress in mixing mode, for `unlock` to cancel.
    clock_id: Mutex<Option<gst::SingleShotClockId>>,
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
                /// The file to play: a path or a URI (anything uridecodebin opens).
                glib::ParamSpecString::builder("location")
                    .nick("Location")
                    .blurb("File path or URI of the audio to play")
                    .mutable_ready()
                    .build(),
                /// Linear gain applied to the decoded S16 samples, with saturation.
                glib::ParamSpecDouble::builder("volume")
                    .nick("Volume")
                    .blurb("Linear volume factor, 1.0 = 100 %")
                    .minimum(0.0)
                    .maximum(gain::MAX_GAIN)
                    .default_value(DEFAULT_VOLUME)
                    .mutable_playing()
                    .controllable()
                    .build(),
                /// Playback (the only, non-live output) or mixing (a live audiomixer input).
                glib::ParamSpecEnum::builder_with_default("mode", DEFAULT_MODE)
                    .nick("Mode")
                    .blurb("Playback: the only audio, non-live; mixing: a live input of an audiomixer")
                    .mutable_ready()
                    .build(),
                /// Start again at the beginning of the file, without a gap, at its end.
                glib::ParamSpecBoolean::builder("loop")
                    .nick("Loop")
                    .blurb("Loop the file without a gap")
                    .default_value(DEFAULT_LOOP)
                    .mutable_playing()
                    .build(),
                /// Duration of each output buffer.
                glib::ParamSpecUInt64::builder("buffer-duration")
                    .nick("Buffer duration")
                    .blurb("Duration of each output buffer in nanoseconds")
                    .minimum(MIN_BUFFER_DURATION.nseconds())
                    .maximum(MAX_BUFFER_DURATION.nseconds())
                    .default_value(DEFAULT_BUFFER_DURATION.nseconds())
                    .mutable_ready()
                    .build(),
                /// Fade-in at the start in mixing mode, so joining a mix makes no click.
                glib::ParamSpecUInt64::builder("fade-in-duration")
                    .nick("Fade-in duration")
                    .blurb("Fade-in when the element starts in mixing mode, in nanoseconds (0 = none)")
                    .maximum(MAX_FADE.nseconds())
                    .default_value(DEFAULT_FADE_IN.nseconds())
                    .mutable_playing()
                    .build(),
                /// Fade-out length of the `fade-out` action signal.
                glib::ParamSpecUInt64::builder("fade-out-duration")
                    .nick("Fade-out duration")
                    .blurb("Fade-out before EOS after the fade-out signal, in nanoseconds (0 = none)")
                    .maximum(MAX_FADE.nseconds())
                    .default_value(DEFAULT_FADE_OUT.nseconds())
                    .mutable_playing()
                    .build(),
                /// Files that decode to more than this are not cached: they loop by seeking the
                /// decoder back to their start, through a small window, so memory stays flat.
                glib::ParamSpecUInt64::builder("max-cache-size")
                    .nick("Maximum cache size")
                    .blurb(
                        "Largest decoded size in bytes kept in memory; longer files loop by \
                         seeking the decoder instead",
                    )
                    .default_value(DEFAULT_MAX_CACHE_SIZE)
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
        let mut settings = self.settings();
        match pspec.name() {
            "location" => {
                if self.obj().current_state() > gst::State::Ready {
                    gst::warning!(
                        CAT,
                        imp = self,
                        "Changing the location while the element is running is not supported"
                    );
                    return;
                }
                let location = value
                    .get::<Option<String>>()
                    .expect("type checked upstream");
                gst::info!(CAT, imp = self, "Location set to {:?}", location);
                settings.location = location;
            }
            "volume" => {
                let volume = value.get().expect("type checked upstream");
                gst::debug!(CAT, imp = self, "Volume {} -> {}", settings.volume, volume);
                settings.volume = volume;
            }
            "mode" => {
                let mode = value.get().expect("type checked upstream");
                gst::info!(CAT, imp = self, "Mode set to {:?}", mode);
                settings.mode = mode;
            }
            "loop" => {
                let do_loop = value.get().expect("type checked upstream");
                gst::info!(CAT, imp = self, "Loop set to {}", do_loop);
                settings.do_loop = do_loop;
            }
            "buffer-duration" => {
                let ns: u64 = value.get().expect("type checked upstream");
                settings.buffer_duration = gst::ClockTime::from_nseconds(ns);
                gst::info!(
                    CAT,
                    imp = self,
                    "Buffer duration set to {}",
                    settings.buffer_duration
                );
            }
            "fade-in-duration" => {
                settings.fade_in =
                    gst::ClockTime::from_nseconds(value.get().expect("type checked upstream"));
                gst::info!(CAT, imp = self, "Fade-in set to {}", settings.fade_in);
            }
            "fade-out-duration" => {
                settings.fade_out =
                    gst::ClockTime::from_nseconds(value.get().expect("type checked upstream"));
                gst::info!(CAT, imp = self, "Fade-out set to {}", settings.fade_out);
            }
            "max-cache-size" => {
                settings.max_cache_size = value.get().expect("type checked upstream");
                gst::info!(
                    CAT,
                    imp = self,
                    "Max cache size {}",
                    settings.max_cache_size
                );
            }
            _ => unimplemented!(),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let settings = self.settings();
        match pspec.name() {
            "location" => settings.location.to_value(),
            "volume" => settings.volume.to_value(),
            "mode" => settings.mode.to_value(),
            "loop" => settings.do_loop.to_value(),
            "buffer-duration" => settings.buffer_duration.nseconds().to_value(),
            "fade-in-duration" => settings.fade_in.nseconds().to_value(),
            "fade-out-duration" => settings.fade_out.nseconds().to_value(),
            "max-cache-size" => settings.max_cache_size.to_value(),
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
            let caps = gst_audio::AudioCapsBuilder::new_interleaved()
                .format(gst_audio::AUDIO_FORMAT_S16)
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
            gst::debug!(
                CAT,
                imp = self,
                "Starting as a {} source",
                if live { "live" } else { "non-live" }
            );
            self.obj().set_live(live);
        }
        self.parent_change_state(transition)
    }
}

impl BaseSrcImpl for BgAudioSrc {
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = self.settings().clone();
        let Some(location) = settings.location.filter(|l| !l.is_empty()) else {
            return Err(gst::error_msg!(
                gst::ResourceError::NotFound,
                ("No location set: set the 'location' property to a file path or URI")
            ));
        };
        let (uri, file) = location_to_uri(&location)?;
        gst::debug!(CAT, imp = self, "Opening {}", uri);

        // A file probed before (by any element of the process) is not opened again: without a
        // decode chain of its own, the element shares the decoded copy, or opens one in
        // `set_caps` if it needs a format nobody decodes yet.
        let (decoder, native) = registry::probe(file.as_ref(), || Decoder::open(&uri, &location))?;
        let known = decoder.is_none();
        gst::info!(
            CAT,
            imp = self,
            "'{}' decodes to {} Hz, {} channels{}",
            location,
            native.rate,
            native.channels,
            if known {
                " (known from an earlier probe)"
            } else {
                ""
            }
        );
        *self.state() = State {
            decoder,
            native: Some(native),
            file,
            uri,
            location,
            ..State::default()
        };
        self.flushing.store(false, Ordering::SeqCst);
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        let old = std::mem::take(&mut *self.state());
        if let Some(entry) = &old.entry {
            entry.cache.wake();
        }
        // Shuts the private pipeline down, outside our lock.
        drop(old);
        gst::info!(CAT, imp = self, "Stopped");
        Ok(())
    }

    fn caps(&self, filter: Option<&gst::Caps>) -> Option<gst::Caps> {
        // Once the output started, the cache holds samples in one format: offer only that one,
        // so a renegotiation keeps it wherever downstream still allows it.
        let current = self
            .state()
            .info
            .as_ref()
            .and_then(|info| info.to_caps().ok());
        let Some(current) = current else {
            return self.parent_caps(filter);
        };
        Some(match filter {
            Some(filter) => filter.intersect_with_mode(&current, gst::CapsIntersectMode::First),
            None => current,
        })
    }

    fn fixate(&self, mut caps: gst::Caps) -> gst::Caps {
        let native = self.state().native;
        caps.truncate();
        if let Some(native) = native {
            let caps = caps.make_mut();
            if let Some(s) = caps.structure_mut(0) {
                s.fixate_field_nearest_int("rate", native.rate);
                s.fixate_field_nearest_int("channels", native.channels);
                let channels = s.get::<i32>("channels").unwrap_or(native.channels);
                let mask_fixed = s
                    .value("channel-mask")
                    .map(|v| v.get::<gst::Bitmask>().is_ok())
                    .unwrap_or(false);
                if !mask_fixed && (channels > 2 || s.has_field("channel-mask")) {
                    let mask = match native.channel_mask {
                        Some(mask) if channels == native.channels && mask != 0 => mask,
                        _ => gst_audio::AudioChannelPosition::fallback_mask(channels as u32),
                    };
                    s.set("channel-mask", gst::Bitmask::new(mask));
                }
            }
        }
        gst::debug!(CAT, imp = self, "Fixating to {}", caps);
        self.parent_fixate(caps)
    }

    fn set_caps(&self, caps: &gst::Caps) -> Result<(), gst::LoggableError> {
        let info = gst_audio::AudioInfo::from_caps(caps)
            .map_err(|_| gst::loggable_error!(CAT, "Invalid caps {}", caps))?;
        let buffer_duration = self.settings().buffer_duration;
        let frames_per_buffer = buffer_duration
            .nseconds()
            .mul_div_round(info.rate() as u64, gst::ClockTime::SECOND.nseconds())
            .unwrap_or(1)
            .max(1) as usize;

        let mut state = self.state();
        if let Some(current) = &state.info {
            let same = current.rate() == info.rate()
                && current.channels() == info.channels()
                && current.positions() == info.positions();
            if same {
                return Ok(());
            }
            return Err(gst::loggable_error!(
                CAT,
                "Cannot change to {} after the output started at {} Hz, {} channels",
                caps,
                current.rate(),
                current.channels()
            ));
        }
        let Some(native) = state.native else {
            return Err(gst::loggable_error!(CAT, "Not started"));
        };
        let decoder = state.decoder.take();
        let (file, uri, location) = (
            state.file.clone(),
            state.uri.clone(),
            state.location.clone(),
        );
        drop(state);

        gst::debug!(CAT, imp = self, "Output caps {}", caps);
        let key = file.map(|file| CacheKey {
            file,
            rate: info.rate(),
            channels: info.channels(),
            channel_mask: caps
                .structure(0)
                .and_then(|s| s.get::<gst::Bitmask>("channel-mask").ok())
                .map_or(0, |m| *m),
        });
        // A file that decodes to more than max-cache-size is streamed through a small window.
        let max_cache_size = self.settings().max_cache_size;
        let decoded_bytes = native.duration.and_then(|d| {
            d.nseconds().mul_div_ceil(
                info.rate() as u64 * info.bpf() as u64,
                *gst::ClockTime::SECOND,
            )
        });
        let bounded = decoded_bytes
            .filter(|bytes| *bytes > max_cache_size)
            .map(|_| STREAM_WINDOW_BYTES);
        if let Some(bytes) = decoded_bytes.filter(|_| bounded.is_some()) {
            gst::info!(
                CAT,
                imp = self,
                "'{}' decodes to {} bytes, over max-cache-size {}: streaming, looping by seeking",
                location,
                bytes,
                max_cache_size
            );
        }
        let obtained = registry::obtain(
            key,
            &info,
            bounded,
            || match decoder {
                Some(decoder) => Ok(decoder),
                None => Decoder::open(&uri, &location).map(|(decoder, _)| decoder),
            },
            |decoder, entry| decoder.start_output(&info, entry.cache.clone()),
        );
        let (entry, new) = match obtained {
            Ok(obtained) => obtained,
            Err(err) => {
                self.post_error_message(err);
                return Err(gst::loggable_error!(CAT, "Could not start decoding"));
            }
        };
        gst::info!(
            CAT,
            imp = self,
            "{} decoded copy",
            if new { "Made a new" } else { "Sharing a" }
        );

        let mut state = self.state();
        state.entry = Some(entry);
        let bpf = info.bpf();
        state.info = Some(info);
        state.frames_per_buffer = frames_per_buffer;
        drop(state);
        self.obj().set_blocksize(frames_per_buffer as u32 * bpf);
        Ok(())
    }

    fn query(&self, query: &mut gst::QueryRef) -> bool {
        if let gst::QueryViewMut::Latency(q) = query.view_mut() {
            if !self.obj().is_live() {
                return BaseSrcImplExt::parent_query(self, query);
            }
            // One buffer: a buffer's last frame is due a buffer's duration after its first.
            let state = self.state();
            let latency = match &state.info {
                Some(info) => frames_to_time(state.frames_per_buffer as u64, info.rate() as u64),
                None => self.settings().buffer_duration,
            };
            drop(state);
            gst::debug!(CAT, imp = self, "Live, latency {}", latency);
            q.set(true, latency, gst::ClockTime::NONE);
            return true;
        }
        if let gst::QueryViewMut::Duration(q) = query.view_mut() {
            if q.format() == gst::Format::Time {
                let do_loop = self.settings().do_loop;
                if do_loop {
                    q.set(gst::ClockTime::NONE);
                    return true;
                }
                let state = self.state();
                let cache = state.entry.as_ref().map(|e| &e.cache);
                let from_cache = cache.and_then(|c| {
                    c.complete_frames()
                        .and_then(|f| f.mul_div_floor(*gst::ClockTime::SECOND, c.rate() as u64))
                        .map(gst::ClockTime::from_nseconds)
                });
                let duration = from_cache
                    .or_else(|| state.entry.as_ref().and_then(|e| e.duration()))
                    .or_else(|| state.decoder.as_ref().and_then(|d| d.duration()));
                drop(state);
                if let Some(duration) = duration {
                    q.set(duration);
                    return true;
                }
            }
        }
        BaseSrcImplExt::parent_query(self, query)
    }

    fn is_seekable(&self) -> bool {
        false
    }

    fn unlock(&self) -> Result<(), gst::ErrorMessage> {
        gst::debug!(CAT, imp = self, "Unlocking");
        self.flushing.store(true, Ordering::SeqCst);
        if let Some(id) = self.clock_id().take() {
            id.unschedule();
        }
        if let Some(entry) = self.state().entry.clone() {
            entry.cache.wake();
        }
        Ok(())
    }

    fn unlock_stop(&self) -> Result<(), gst::ErrorMessage> {
        gst::debug!(CAT, imp = self, "Unlock stop");
        self.flushing.store(false, Ordering::SeqCst);
        Ok(())
    }
}

impl PushSrcImpl for BgAudioSrc {
    fn create(
        &self,
        _buffer: Option<&mut gst::BufferRef>,
    ) -> Result<CreateSuccess, gst::FlowError> {
        let mut state = self.state();
        let (Some(info), Some(entry)) = (state.info.clone(), state.entry.clone()) else {
            drop(state);
            gst::element_imp_error!(self, gst::CoreError::Negotiation, ("Have no caps yet"));
            return Err(gst::FlowError::NotNegotiated);
        };
        let cache = &entry.cache;
        let release_decoder = !state.decoder_released && cache.complete_frames().is_some();
        state.decoder_released |= release_decoder;
        let (mut frames_per_buffer, mut position, sample_offset) =
            (state.frames_per_buffer, state.position, state.sample_offset);
        let timestamp_offset = state.timestamp_offset;
        drop(state);
        if release_decoder {
            // The file is decoded: its private pipeline and threads are no longer needed.
            entry.release_decoder();
        }

        let rate = info.rate() as u64;
        // Let a GstController on `volume` update it for this buffer. (Before the first buffer
        // of a live run the offset is not known yet; the controller sees the stream from 0.)
        let _ = self.obj().sync_values(
            timestamp_offset.unwrap_or(gst::ClockTime::ZERO) + frames_to_time(sample_offset, rate),
        );
        let settings = self.playout();

        let mut state = self.state();
        let fade_out_pending = std::mem::take(&mut state.fade_out_pending);
        let envelope = state.envelope.get_or_insert_with(|| {
            let fade_in = if settings.mode == BgAudioSrcMode::Mixing {
                time_to_frames(settings.fade_in, rate)
            } else {
                0
            };
            Envelope::new(settings.volume, time_to_frames(VOLUME_RAMP, rate), fade_in)
        });
        if fade_out_pending {
            gst::info!(
                CAT,
                imp = self,
                "Fading out over {} from frame {}, then EOS",
                settings.fade_out,
                sample_offset
            );
            envelope.fade_out(sample_offset, time_to_frames(settings.fade_out, rate));
        }
        envelope.set_volume(settings.volume, sample_offset);
        let envelope = envelope.clone();
        drop(state);

        if let Some(end) = envelope.end() {
            if sample_offset >= end {
                gst::debug!(CAT, imp = self, "Faded out, EOS");
                return Err(gst::FlowError::Eos);
            }
            frames_per_buffer = frames_per_buffer.min((end - sample_offset) as usize);
        }

        let bpf = info.bpf() as usize;
        let gain = envelope.constant(sample_offset, sample_offset + frames_per_buffer as u64);
        let (mut buffer, frames) = match gain {
            Some(g) if g == 1.0 && cache.complete_frames().is_some() => {
                self.fill_shared(cache, &mut position, frames_per_buffer, settings.do_loop)?
            }
            Some(g) => self.fill_copied(
                &entry,
                &mut position,
                frames_per_buffer,
                bpf,
                settings.do_loop,
                Gain::Constant(g),
            )?,
            None => self.fill_copied(
                &entry,
                &mut position,
                frames_per_buffer,
                bpf,
                settings.do_loop,
                Gain::Envelope(&envelope, sample_offset),
            )?,
        };
        if frames == 0 {
            gst::debug!(CAT, imp = self, "End of file at frame {}, EOS", position);
            return Err(gst::FlowError::Eos);
        }
        // Read the clock only now that the first buffer is filled: the first pass may have
        // waited for the decoder, and the buffer must not be stamped in the past.
        let timestamp_offset = match timestamp_offset {
            Some(offset) => offset,
            None => self.first_running_time(),
        };
        let pts = timestamp_offset + frames_to_time(sample_offset, rate);

        {
            let buffer = buffer.get_mut().ok_or(gst::FlowError::Error)?;
            let end = sample_offset + frames as u64;
            buffer.set_pts(pts);
            buffer.set_duration(timestamp_offset + frames_to_time(end, rate) - pts);
            buffer.set_offset(sample_offset);
            buffer.set_offset_end(end);
        }

        let mut state = self.state();
        state.position = position;
        state.sample_offset = sample_offset + frames as u64;
        state.timestamp_offset = Some(timestamp_offset);
        drop(state);

        if self.obj().is_live() {
            self.wait_until(pts)?;
        }

        gst::log!(CAT, imp = self, "Produced {:?}", buffer);
        Ok(CreateSuccess::NewBuffer(buffer))
    }
}

impl BgAudioSrc {
    /// Builds a buffer of up to `frames_per_buffer` frames from `position` on whose memories
    /// point into the complete cache: nothing is copied. Wraps at the end when looping.
    fn fill_shared(
        &self,
        cache: &PcmCache,
        position: &mut u64,
        frames_per_buffer: usize,
        do_loop: bool,
    ) -> Result<(gst::Buffer, usize), gst::FlowError> {
        let mut buffer = gst::Buffer::new();
        let mut frames = 0usize;
        {
            let buffer = buffer.get_mut().ok_or(gst::FlowError::Error)?;
            while frames < frames_per_buffer {
                match cache.share_into(*position, frames_per_buffer - frames, buffer) {
                    Some(0) | None => {
                        if do_loop && *position > 0 {
                            self.log_loop(*position);
                            *position = 0;
                            continue;
                        }
                        break;
                    }
                    Some(n) => {
                        frames += n;
                        *position += n as u64;
                    }
                }
            }
        }
        Ok((buffer, frames))
    }

    /// Builds a buffer of up to `frames_per_buffer` frames from `position` on, applying the
    /// volume while copying out of the cache. Waits for the decoder during the first pass.
    fn fill_copied(
        &self,
        entry: &Entry,
        position: &mut u64,
        frames_per_buffer: usize,
        bpf: usize,
        do_loop: bool,
        gain: Gain,
    ) -> Result<(gst::Buffer, usize), gst::FlowError> {
        let cache = &entry.cache;
        let channels = bpf / 2;
        // From the buffer pool the base class set up in its allocation query (sized by the
        // blocksize set in `set_caps`): buffers are reused instead of allocated every 20 ms.
        let size = frames_per_buffer * bpf;
        let pooled = self
            .obj()
            .buffer_pool()
            .and_then(|pool| pool.acquire_buffer(None).ok());
        let mut buffer = match pooled {
            Some(buffer) => buffer,
            None => gst::Buffer::with_size(size).map_err(|_| gst::FlowError::Error)?,
        };
        let mut frames = 0usize;
        {
            let buffer = buffer.get_mut().ok_or(gst::FlowError::Error)?;
            if buffer.size() != size {
                if buffer.maxsize() < size {
                    return Err(gst::FlowError::Error);
                }
                buffer.set_size(size);
            }
            let mut map = buffer.map_writable().map_err(|_| gst::FlowError::Error)?;
            let out = as_samples_mut(map.as_mut_slice()).ok_or(gst::FlowError::Error)?;
            let mut written = 0usize;
            while frames < frames_per_buffer {
                let read = cache.read(
                    *position,
                    frames_per_buffer - frames,
                    || self.flushing.load(Ordering::SeqCst),
                    |src| {
                        let dst = &mut out[written..written + src.len()];
                        match gain {
                            Gain::Constant(g) if g == 1.0 => dst.copy_from_slice(src),
                            Gain::Constant(g) => gain::apply(src, dst, g),
                            Gain::Envelope(envelope, first) => gain::apply_envelope(
                                src,
                                dst,
                                channels,
                                first + (written / channels) as u64,
                                envelope,
                            ),
                        }
                        written += src.len();
                    },
                );
                match read {
                    Ok(0) => {
                        if do_loop && *position > 0 {
                            self.log_loop(*position);
                            if let Err(err) = self.next_pass(entry, position) {
                                self.post_error_message(err);
                                return Err(gst::FlowError::Error);
                            }
                            continue;
                        }
                        break;
                    }
                    Ok(n) => {
                        frames += n;
                        *position += n as u64;
                    }
                    Err(ReadError::Cancelled) => return Err(gst::FlowError::Flushing),
                    Err(ReadError::Failed(err)) => {
                        self.post_error_message(err);
                        return Err(gst::FlowError::Error);
                    }
                }
            }
        }
        if frames < frames_per_buffer {
            if let Some(buffer) = buffer.get_mut() {
                buffer.set_size(frames * bpf);
            }
        }
        Ok((buffer, frames))
    }

    /// The running time of frame 0: in a live pipeline, now, so a mixer that is already
    /// running plays the first buffer at once instead of dropping it as late.
    fn first_running_time(&self) -> gst::ClockTime {
        let obj = self.obj();
        if !obj.is_live() {
            return gst::ClockTime::ZERO;
        }
        let now = obj
            .clock()
            .zip(obj.base_time())
            .and_then(|(clock, base)| clock.time().checked_sub(base))
            .unwrap_or(gst::ClockTime::ZERO);
        gst::debug!(CAT, imp = self, "First buffer at running time {}", now);
        now
    }

    /// Waits on the pipeline clock until running time `running_time`, so a live source produces
    /// in real time. The buffer for `[t, t + duration)` leaves at `t`, a whole buffer ahead of the
    /// latency it reports. `unlock` cancels the wait.
    fn wait_until(&self, running_time: gst::ClockTime) -> Result<(), gst::FlowError> {
        let obj = self.obj();
        let Some((clock, base_time)) = obj.clock().zip(obj.base_time()) else {
            return Ok(());
        };
        let id = {
            let mut clock_id = self.clock_id();
            if self.flushing.load(Ordering::SeqCst) {
                return Err(gst::FlowError::Flushing);
            }
            let id = clock.new_single_shot_id(base_time + running_time);
            *clock_id = Some(id.clone());
            id
        };
        let (res, jitter) = id.wait();
        gst::log!(
            CAT,
            imp = self,
            "Waited for {}: {:?}, jitter {}",
            running_time,
            res,
            jitter
        );
        self.clock_id().take();
        match res {
            Err(gst::ClockError::Unscheduled) => Err(gst::FlowError::Flushing),
            _ => Ok(()),
        }
    }

    fn clock_id(&self) -> MutexGuard<'_, Option<gst::SingleShotClockId>> {
        self.clock_id.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The `fade-out` action signal: fade out from the next buffer on, then EOS.
    ///
    /// Only marks the request: the next `create` starts the fade at its own first frame, so a
    /// buffer being built while the signal comes is never skipped by the fade.
    fn start_fade_out(&self) {
        let mut state = self.state();
        // `native` is known from start to stop.
        if state.native.is_none() {
            gst::warning!(
                CAT,
                imp = self,
                "Fade-out asked for while not running: ignored"
            );
            return;
        }
        state.fade_out_pending = true;
        gst::info!(CAT, imp = self, "Fade-out asked for");
    }

    /// Starts the next loop: from the start of the complete cache, or, for a file too long to
    /// cache, by seeking the decoder back (the stream's positions then keep counting).
    fn next_pass(&self, entry: &Entry, position: &mut u64) -> Result<(), gst::ErrorMessage> {
        if entry.cache.is_bounded() {
            entry.rewind()
        } else {
            *position = 0;
            Ok(())
        }
    }

    fn log_loop(&self, frames: u64) {
        gst::debug!(
            CAT,
            imp = self,
            "End of file after {} frames, looping",
            frames
        );
    }

    fn playout(&self) -> Playout {
        let s = self.settings();
        Playout {
            volume: s.volume,
            mode: s.mode,
            do_loop: s.do_loop,
            fade_in: s.fade_in,
            fade_out: s.fade_out,
        }
    }

    fn settings(&self) -> MutexGuard<'_, Settings> {
        self.settings.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Running time of frame `frames` at `rate`, rounded down the same way for every buffer.
fn frames_to_time(frames: u64, rate: u64) -> gst::ClockTime {
    gst::ClockTime::from_nseconds(
        frames
            .mul_div_floor(*gst::ClockTime::SECOND, rate)
            .unwrap_or(u64::MAX - 1),
    )
}

/// Whole frames in `time` at `rate`, rounded to nearest.
fn time_to_frames(time: gst::ClockTime, rate: u64) -> u64 {
    time.nseconds()
        .mul_div_round(rate, *gst::ClockTime::SECOND)
        .unwrap_or(0)
}

/// The bytes of a mapped S16 buffer as samples; `None` if the memory is not 2-byte aligned.
fn as_samples_mut(bytes: &mut [u8]) -> Option<&mut [i16]> {
    // SAFETY: every bit pattern is a valid i16; align_to_mut only yields a middle part that is
    // correctly aligned, and we refuse buffers where it is not the whole slice.
    let (head, samples, tail) = unsafe { bytes.align_to_mut::<i16>() };
    (head.is_empty() && tail.is_empty()).then_some(samples)
}

/// Turns the `location` property into a URI for uridecodebin, with the file's identity when it
/// is a local file. Local files are checked here so that the usual mistakes get the same clear
/// errors as `filesrc` gives.
fn location_to_uri(location: &str) -> Result<(String, Option<FileId>), gst::ErrorMessage> {
    let path = if has_uri_scheme(location) {
        if !location.starts_with("file:") {
            return Ok((location.to_owned(), None));
        }
        match glib::filename_from_uri(location) {
            Ok((path, _)) => path,
            Err(err) => {
                return Err(gst::error_msg!(
                    gst::ResourceError::NotFound,
                    ("Invalid file URI '{}': {}", location, err)
                ))
            }
        }
    } else {
        std::path::PathBuf::from(location)
    };

    let metadata = std::fs::metadata(&path).map_err(|err| match err.kind() {
        std::io::ErrorKind::NotFound => gst::error_msg!(
            gst::ResourceError::NotFound,
            (
                "Could not open file '{}' for reading: no such file",
                location
            )
        ),
        std::io::ErrorKind::PermissionDenied => gst::error_msg!(
            gst::ResourceError::OpenRead,
            (
                "Could not open file '{}' for reading: permission denied",
                location
            )
        ),
        _ => gst::error_msg!(
            gst::ResourceError::OpenRead,
            ("Could not open file '{}' for reading: {}", location, err)
        ),
    })?;
    if metadata.is_dir() {
        return Err(gst::error_msg!(
            gst::ResourceError::OpenRead,
            ("'{}' is a directory, not an audio file", location)
        ));
    }
    if metadata.len() == 0 {
        return Err(gst::error_msg!(
            gst::StreamError::TypeNotFound,
            ("'{}' is empty: it holds no audio", location)
        ));
    }
    let absolute = std::path::absolute(&path).map_err(|err| {
        gst::error_msg!(
            gst::ResourceError::OpenRead,
            ("Could not resolve '{}': {}", location, err)
        )
    })?;
    let file = FileId {
        path: std::fs::canonicalize(&absolute).unwrap_or_else(|_| absolute.clone()),
        size: metadata.len(),
        modified: metadata.modified().ok(),
    };
    glib::filename_to_uri(&absolute, None)
        .map(|uri| (uri.to_string(), Some(file)))
        .map_err(|err| {
            gst::error_msg!(
                gst::ResourceError::OpenRead,
                ("Could not turn '{}' into a URI: {}", location, err)
            )
        })
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

    #[test]
    fn timestamps_from_the_counter_do_not_drift() {
        // 44100 Hz cannot be stamped exactly in ns; consecutive stamps must still tile.
        let rate = 44_100;
        let mut end_prev = frames_to_time(0, rate);
        for i in 0..10_000u64 {
            let (pts, end) = (
                frames_to_time(i * 882, rate),
                frames_to_time((i + 1) * 882, rate),
            );
            assert_eq!(pts, end_prev);
            end_prev = end;
        }
        assert_eq!(
            frames_to_time(44_100 * 3600, rate),
            gst::ClockTime::from_seconds(3600)
        );
    }
}
