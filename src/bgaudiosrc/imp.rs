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
use super::gain;
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

#[derive(Debug, Clone)]
struct Settings {
    location: Option<String>,
    volume: f64,
    mode: BgAudioSrcMode,
    do_loop: bool,
    buffer_duration: gst::ClockTime,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            location: DEFAULT_LOCATION,
            volume: DEFAULT_VOLUME,
            mode: DEFAULT_MODE,
            do_loop: DEFAULT_LOOP,
            buffer_duration: DEFAULT_BUFFER_DURATION,
        }
    }
}

/// What exists between `start` and `stop`.
#[derive(Debug, Default)]
struct State {
    decoder: Option<Decoder>,
    native: Option<NativeFormat>,
    cache: Option<Arc<PcmCache>>,
    info: Option<gst_audio::AudioInfo>,
    frames_per_buffer: usize,
    /// Next frame to read from the file (the cache).
    position: u64,
    /// Frames output so far: every timestamp and offset comes from this counter.
    sample_offset: u64,
}

#[derive(Default)]
pub struct BgAudioSrc {
    settings: Mutex<Settings>,
    state: Mutex<State>,
    flushing: AtomicBool,
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
            ]
        });
        PROPERTIES.as_ref()
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
        let uri = location_to_uri(&location)?;
        gst::debug!(CAT, imp = self, "Opening {}", uri);

        let (decoder, native) = Decoder::open(&uri, &location)?;
        gst::info!(
            CAT,
            imp = self,
            "'{}' decodes to {} Hz, {} channels",
            location,
            native.rate,
            native.channels
        );
        *self.state() = State {
            decoder: Some(decoder),
            native: Some(native),
            ..State::default()
        };
        self.flushing.store(false, Ordering::SeqCst);
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        let old = std::mem::take(&mut *self.state());
        if let Some(cache) = &old.cache {
            cache.wake();
        }
        // Shuts the private pipeline down, outside our lock.
        drop(old);
        gst::info!(CAT, imp = self, "Stopped");
        Ok(())
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
        if let Some(cache) = &state.cache {
            if cache.rate() == info.rate() && cache.channels() == info.channels() {
                state.info = Some(info);
                return Ok(());
            }
            return Err(gst::loggable_error!(
                CAT,
                "Cannot change to {} after the output started at {} Hz, {} channels",
                caps,
                cache.rate(),
                cache.channels()
            ));
        }
        let Some(mut decoder) = state.decoder.take() else {
            return Err(gst::loggable_error!(CAT, "Not started"));
        };
        drop(state);

        gst::debug!(CAT, imp = self, "Output caps {}", caps);
        let cache = Arc::new(PcmCache::new(info.rate(), info.channels()));
        let started = decoder.start_output(&info, cache.clone());

        let mut state = self.state();
        state.decoder = Some(decoder);
        if let Err(err) = started {
            drop(state);
            self.post_error_message(err);
            return Err(gst::loggable_error!(CAT, "Could not start decoding"));
        }
        state.cache = Some(cache);
        state.info = Some(info);
        state.frames_per_buffer = frames_per_buffer;
        Ok(())
    }

    fn query(&self, query: &mut gst::QueryRef) -> bool {
        if let gst::QueryViewMut::Duration(q) = query.view_mut() {
            if q.format() == gst::Format::Time {
                let do_loop = self.settings().do_loop;
                if do_loop {
                    q.set(gst::ClockTime::NONE);
                    return true;
                }
                let state = self.state();
                let from_cache = state.cache.as_ref().and_then(|c| {
                    c.complete_frames()
                        .and_then(|f| f.mul_div_floor(*gst::ClockTime::SECOND, c.rate() as u64))
                        .map(gst::ClockTime::from_nseconds)
                });
                let duration =
                    from_cache.or_else(|| state.decoder.as_ref().and_then(|d| d.duration()));
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
        if let Some(cache) = self.state().cache.clone() {
            cache.wake();
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
        let state = self.state();
        let (Some(info), Some(cache)) = (state.info.clone(), state.cache.clone()) else {
            drop(state);
            gst::element_imp_error!(self, gst::CoreError::Negotiation, ("Have no caps yet"));
            return Err(gst::FlowError::NotNegotiated);
        };
        let (frames_per_buffer, mut position, sample_offset) =
            (state.frames_per_buffer, state.position, state.sample_offset);
        drop(state);

        let rate = info.rate() as u64;
        let pts = frames_to_time(sample_offset, rate);
        // Let a GstController on `volume` update it for this buffer.
        let _ = self.obj().sync_values(pts);
        let settings = self.settings().clone();

        let bpf = info.bpf() as usize;
        let volume = settings.volume;
        let (mut buffer, frames) = if volume == 1.0 && cache.complete_frames().is_some() {
            self.fill_shared(&cache, &mut position, frames_per_buffer, settings.do_loop)?
        } else {
            self.fill_copied(&cache, &mut position, frames_per_buffer, bpf, &settings)?
        };
        if frames == 0 {
            gst::debug!(CAT, imp = self, "End of file at frame {}, EOS", position);
            return Err(gst::FlowError::Eos);
        }

        {
            let buffer = buffer.get_mut().ok_or(gst::FlowError::Error)?;
            let end = sample_offset + frames as u64;
            buffer.set_pts(pts);
            buffer.set_duration(frames_to_time(end, rate) - pts);
            buffer.set_offset(sample_offset);
            buffer.set_offset_end(end);
        }

        let mut state = self.state();
        state.position = position;
        state.sample_offset = sample_offset + frames as u64;
        drop(state);

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
        cache: &PcmCache,
        position: &mut u64,
        frames_per_buffer: usize,
        bpf: usize,
        settings: &Settings,
    ) -> Result<(gst::Buffer, usize), gst::FlowError> {
        let mut buffer =
            gst::Buffer::with_size(frames_per_buffer * bpf).map_err(|_| gst::FlowError::Error)?;
        let mut frames = 0usize;
        {
            let buffer = buffer.get_mut().ok_or(gst::FlowError::Error)?;
            let mut map = buffer.map_writable().map_err(|_| gst::FlowError::Error)?;
            let out = as_samples_mut(map.as_mut_slice()).ok_or(gst::FlowError::Error)?;
            let mut written = 0usize;
            let volume = settings.volume;
            while frames < frames_per_buffer {
                let read = cache.read(
                    *position,
                    frames_per_buffer - frames,
                    || self.flushing.load(Ordering::SeqCst),
                    |src| {
                        let dst = &mut out[written..written + src.len()];
                        if volume == 1.0 {
                            dst.copy_from_slice(src);
                        } else {
                            gain::apply(src, dst, volume);
                        }
                        written += src.len();
                    },
                );
                match read {
                    Ok(0) => {
                        if settings.do_loop && *position > 0 {
                            self.log_loop(*position);
                            *position = 0;
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

    fn log_loop(&self, frames: u64) {
        gst::debug!(
            CAT,
            imp = self,
            "End of file after {} frames, looping",
            frames
        );
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

/// The bytes of a mapped S16 buffer as samples; `None` if the memory is not 2-byte aligned.
fn as_samples_mut(bytes: &mut [u8]) -> Option<&mut [i16]> {
    // SAFETY: every bit pattern is a valid i16; align_to_mut only yields a middle part that is
    // correctly aligned, and we refuse buffers where it is not the whole slice.
    let (head, samples, tail) = unsafe { bytes.align_to_mut::<i16>() };
    (head.is_empty() && tail.is_empty()).then_some(samples)
}

/// Turns the `location` property into a URI for uridecodebin. Local files are checked here so
/// that the usual mistakes get the same clear errors as `filesrc` gives.
fn location_to_uri(location: &str) -> Result<String, gst::ErrorMessage> {
    let path = if has_uri_scheme(location) {
        if !location.starts_with("file:") {
            return Ok(location.to_owned());
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
    glib::filename_to_uri(&absolute, None)
        .map(|uri| uri.to_string())
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
