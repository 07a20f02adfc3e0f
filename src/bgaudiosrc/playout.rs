// SPDX-License-Identifier: MIT OR Apache-2.0

//! Playout: what `create` does. Reads the decoded copy into buffers (shared without a copy, or
//! copied through the gain stage into S16 or F32), keeps the sample counter every timestamp
//! comes from, applies the volume ramps and fades, and in a live pipeline waits on the clock.
//! `imp.rs` holds the element's contract (properties, states, negotiation, queries); this is
//! the streaming thread's side of it.

use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;

use std::sync::atomic::Ordering;
use std::sync::MutexGuard;
use std::time::Instant;

use super::cache::{Read, ReadError, Reader, Wait};
use super::gain::{self, Envelope};
use super::imp::{BgAudioSrc, State, MAX_TRIM, VOLUME_RAMP};
use super::shape::Shape;
use super::{BgAudioSrcMode, CAT};

/// The settings `create` needs, copied out once per buffer without allocating.
#[derive(Debug, Clone, Copy)]
struct Playout {
    /// 0 when muted.
    volume: f64,
    trim: Option<f64>,
    loop_crossfade: gst::ClockTime,
    do_loop: bool,
    /// Mixing mode only.
    fade_in: Option<gst::ClockTime>,
    fade_out: gst::ClockTime,
    timeout: Option<gst::ClockTime>,
}

/// How `fill_copied` scales the samples it copies.
#[derive(Debug, Clone, Copy)]
enum Gain<'a> {
    Constant(f64),
    /// Per frame, with the output frame number of the first sample.
    Envelope(&'a Envelope, u64),
}

/// What a fill produced.
#[derive(Debug)]
enum Fill {
    /// A buffer of this many output frames, all silence (nothing was decoded in time) when
    /// the flag is set.
    Buffer(gst::Buffer, usize, bool),
    /// The end of the file (of its last pass): EOS.
    End,
}

impl BgAudioSrc {
    /// The next buffer: `create`.
    pub(super) fn produce(&self) -> Result<gst::Buffer, gst::FlowError> {
        let mut state = self.state();
        let State::Running(running) = &mut *state else {
            drop(state);
            if self.flushing.load(Ordering::SeqCst) {
                // `negotiate` was interrupted by a flush: nothing to play yet.
                return Err(gst::FlowError::Flushing);
            }
            gst::element_imp_error!(self, gst::CoreError::Negotiation, ("Have no caps yet"));
            return Err(gst::FlowError::NotNegotiated);
        };
        let entry = running.lease.entry().clone();
        let rate = running.info.rate() as u64;
        let info = running.info.clone();
        let (mut frames_per_buffer, sample_offset, stop, timestamp_offset) = (
            running.frames_per_buffer,
            running.sample_offset,
            running.stop,
            running.timestamp_offset,
        );
        drop(state);

        // Let a GstController on `volume` update it for this buffer. (Before the first buffer
        // of a live run the offset is not known yet; the controller sees the stream from 0.)
        let _ = self.obj().sync_values(
            timestamp_offset.unwrap_or(gst::ClockTime::ZERO) + frames_to_time(sample_offset, rate),
        );
        let settings = self.playout();

        let fade_out_pending = self.fade_out_pending.swap(false, Ordering::SeqCst);
        let mut state = self.state();
        let State::Running(running) = &mut *state else {
            return Err(gst::FlowError::Flushing);
        };
        let envelope = running.envelope.get_or_insert_with(|| {
            let fade_in = settings.fade_in.map_or(0, |t| time_to_frames(t, rate));
            Envelope::new(settings.volume, time_to_frames(VOLUME_RAMP, rate), fade_in)
        });
        if fade_out_pending {
            let fade_out = settings.fade_out;
            gst::info!(
                CAT,
                imp = self,
                "Fading out over {fade_out} from frame {sample_offset}, then EOS"
            );
            envelope.fade_out(sample_offset, time_to_frames(settings.fade_out, rate));
        }
        envelope.set_volume(settings.volume, sample_offset);
        let envelope = envelope.clone();
        drop(state);

        if let Some(stop) = stop {
            if sample_offset >= stop {
                // The end of a seek's segment: EOS, or SEGMENT_DONE for a SEGMENT seek (the base
                // class tells them apart). The reader stays for the next seek.
                gst::debug!(CAT, imp = self, "Segment stop at frame {}", stop);
                return Err(gst::FlowError::Eos);
            }
            frames_per_buffer = frames_per_buffer.min((stop - sample_offset) as usize);
        }
        if let Some(end) = envelope.end() {
            if sample_offset >= end {
                gst::debug!(CAT, imp = self, "Faded out, EOS");
                return Err(self.end_of_stream());
            }
            frames_per_buffer = frames_per_buffer.min((end - sample_offset) as usize);
        }

        // Live, once running: the decoder gets until the buffer is due (half a buffer after its
        // start, so it still leaves on time); a source that stalls gives silence instead of a
        // late buffer.
        let wait = Wait {
            deadline: timestamp_offset
                .filter(|_| self.obj().is_live())
                .and_then(|offset| {
                    let due = offset
                        + frames_to_time(sample_offset, rate)
                        + frames_to_time(frames_per_buffer as u64 / 2, rate);
                    self.instant_at(due)
                }),
            // A decoder that delivers nothing for `timeout` has stalled.
            stall: settings.timeout.map(std::time::Duration::from),
        };

        let mut reader_guard = self.reader();
        let reader = reader_guard.as_mut().ok_or(gst::FlowError::Flushing)?;
        reader.set_shape(Shape {
            trim: settings.trim.map(|db| {
                // dBFS to an S16 level.
                (32768.0 * 10f64.powf(db / 20.0)).clamp(0.0, 32767.0) as i16
            }),
            max_trim: time_to_frames(MAX_TRIM, rate),
            crossfade: time_to_frames(settings.loop_crossfade, rate),
            looping: settings.do_loop,
        });
        let gain = envelope.constant(sample_offset, sample_offset + frames_per_buffer as u64);
        let do_loop = settings.do_loop;
        let share =
            gain == Some(1.0) && info.format() == gst_audio::AUDIO_FORMAT_S16 && reader.can_share();
        let fill = if share {
            self.fill_shared(reader, frames_per_buffer, do_loop)?
        } else {
            let gain = gain.map_or(Gain::Envelope(&envelope, sample_offset), Gain::Constant);
            self.fill_copied(reader, frames_per_buffer, &info, do_loop, gain, wait)?
        };
        // Silent because of the gain (volume 0, mute, the end of a fade): flagged as
        // audiotestsrc does, so a mixer or sink can skip it. The samples are still read, to keep
        // the place in the file.
        let silent = gain == Some(0.0);
        let position = reader.position();
        let lost = reader.take_lost();
        drop(reader_guard);
        if lost > 0 {
            self.report_lost(lost, rate);
        }
        let Fill::Buffer(mut buffer, frames, gap) = fill else {
            gst::debug!(CAT, imp = self, "End of file at frame {}, EOS", position);
            return Err(self.end_of_stream());
        };
        // Read the clock only now that the first buffer is filled: the first pass may have
        // waited for the decoder, and the buffer must not be stamped in the past.
        // The first buffer of this run, whatever frame a seek made it start at.
        let first_buffer = timestamp_offset.is_none();
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
            if gap {
                buffer.set_flags(gst::BufferFlags::GAP | gst::BufferFlags::DROPPABLE);
            } else if silent {
                buffer.set_flags(gst::BufferFlags::GAP);
            }
        }
        if gap {
            gst::debug!(
                CAT,
                imp = self,
                "Nothing decoded in time for {pts}: silence"
            );
        }

        // The file's tags, and again if the decoder finds more or after a flush (see
        // `unlock_stop`): looked at once the samples are read, as the decoder delivers its tags
        // before the audio they come with.
        let tags = match &mut *self.state() {
            State::Running(running) => {
                running.sample_offset = sample_offset + frames as u64;
                running.timestamp_offset = Some(timestamp_offset);
                entry
                    .cache
                    .tags_since(running.tags_sent)
                    .map(|(generation, tags)| {
                        running.tags_sent = generation;
                        tags
                    })
            }
            _ => None,
        };
        if let Some(tags) = tags {
            gst::debug!(CAT, imp = self, "Tags {}", tags);
            // Queued by GstBaseSrc, which pushes it after the segment (a new one after a flushing
            // seek too) and before this buffer. Not `gst_element_send_event`: it takes the state
            // lock, which a state change holds while it stops this thread.
            self.parent_send_event(gst::event::Tag::new(tags));
        }

        if first_buffer {
            gst::debug!(CAT, imp = self, "First buffer out");
        }
        if self.obj().is_live() {
            self.wait_until(pts)?;
        }

        gst::log!(CAT, imp = self, "Produced {:?}", buffer);
        Ok(buffer)
    }

    /// Builds a buffer of up to `frames_per_buffer` frames whose memories point into the
    /// complete cache: nothing is copied. Wraps at the end when looping.
    fn fill_shared(
        &self,
        reader: &mut Reader,
        frames_per_buffer: usize,
        do_loop: bool,
    ) -> Result<Fill, gst::FlowError> {
        let mut buffer = gst::Buffer::new();
        let mut frames = 0usize;
        {
            let buffer = buffer.get_mut().ok_or(gst::FlowError::Error)?;
            while frames < frames_per_buffer {
                match reader.share_into(frames_per_buffer - frames, buffer) {
                    Some(Read::Frames(n)) => frames += n,
                    Some(Read::PassEnd) if do_loop && reader.next_pass() => {
                        self.log_loop(reader.position());
                    }
                    _ => break,
                }
            }
        }
        Ok(match frames {
            0 => Fill::End,
            frames => Fill::Buffer(buffer, frames, false),
        })
    }

    /// Builds a buffer of up to `frames_per_buffer` frames, applying the volume while copying
    /// out of the copy. Waits for the decoder during the first pass (or while streaming), as
    /// `wait` allows; what is not decoded by its deadline is silence.
    fn fill_copied(
        &self,
        reader: &mut Reader,
        frames_per_buffer: usize,
        info: &gst_audio::AudioInfo,
        do_loop: bool,
        gain: Gain,
        wait: Wait,
    ) -> Result<Fill, gst::FlowError> {
        let (channels, bpf) = (info.channels() as usize, info.bpf() as usize);
        // From the buffer pool the base class set up in its allocation query (sized by the
        // blocksize set in `set_caps`): buffers are reused instead of allocated every 20 ms. A
        // pool whose buffers are too small (a downstream that proposed its own) is passed over.
        let size = frames_per_buffer * bpf;
        let pooled = self
            .obj()
            .buffer_pool()
            .and_then(|pool| pool.acquire_buffer(None).ok())
            .filter(|buffer| buffer.maxsize() >= size && buffer.is_writable());
        let mut buffer = match pooled {
            Some(buffer) => buffer,
            None => gst::Buffer::with_size(size).map_err(|_| {
                gst::element_imp_error!(
                    self,
                    gst::ResourceError::NoSpaceLeft,
                    ("Cannot allocate a buffer of {} bytes", size)
                );
                gst::FlowError::Error
            })?,
        };
        let mut frames = 0usize;
        let mut late = false;
        {
            let buffer = buffer.get_mut().ok_or(gst::FlowError::Error)?;
            if buffer.size() != size {
                buffer.set_size(size);
            }
            let mut map = buffer.map_writable().map_err(|_| gst::FlowError::Error)?;
            let mut out = Samples::of(map.as_mut_slice(), info.format()).ok_or_else(|| {
                gst::element_imp_error!(
                    self,
                    gst::CoreError::Failed,
                    ("Output memory not aligned for {:?} samples", info.format())
                );
                gst::FlowError::Error
            })?;
            let mut written = 0usize;
            while frames < frames_per_buffer {
                let read = reader.read(
                    frames_per_buffer - frames,
                    wait,
                    || self.flushing.load(Ordering::SeqCst),
                    |src| {
                        out.write(written, src, gain, channels);
                        written += src.len();
                    },
                );
                match read {
                    Ok(Read::Frames(n)) => frames += n,
                    Ok(Read::PassEnd) if do_loop && reader.next_pass() => {
                        self.log_loop(reader.position());
                    }
                    Ok(Read::PassEnd) => break,
                    Ok(Read::NotYet) => {
                        // Live and the source stalled: the rest of the buffer is silence.
                        out.silence_from(written);
                        late = true;
                        break;
                    }
                    Err(ReadError::Cancelled) => return Err(gst::FlowError::Flushing),
                    Err(ReadError::Failed(err)) => {
                        drop(map);
                        self.post_error_message(err);
                        return Err(gst::FlowError::Error);
                    }
                    Err(ReadError::Stalled(waited)) => {
                        drop(map);
                        return Err(self.stalled(waited));
                    }
                    Err(ReadError::Ended(why)) => {
                        if frames == 0 {
                            gst::element_imp_warning!(self, gst::ResourceError::Seek, ("{}", why));
                        }
                        break;
                    }
                }
            }
        }
        if late {
            return Ok(Fill::Buffer(buffer, frames_per_buffer, frames == 0));
        }
        if frames == 0 {
            return Ok(Fill::End);
        }
        if frames < frames_per_buffer {
            if let Some(buffer) = buffer.get_mut() {
                buffer.set_size(frames * bpf);
            }
        }
        Ok(Fill::Buffer(buffer, frames, false))
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

    /// The moment the pipeline clock reaches `running_time`, on the monotonic clock that waits
    /// for the decoder use.
    fn instant_at(&self, running_time: gst::ClockTime) -> Option<Instant> {
        let obj = self.obj();
        let (clock, base_time) = obj.clock().zip(obj.base_time())?;
        let wait = (base_time + running_time).saturating_sub(clock.time());
        Some(Instant::now() + std::time::Duration::from_nanos(wait.nseconds()))
    }

    /// Waits on the pipeline clock until running time `running_time`, so a live source produces
    /// in real time. The buffer for `[t, t + duration)` leaves at `t`, a whole buffer ahead of the
    /// latency it reports. `unlock` cancels the wait.
    ///
    /// Why not GstBaseSrc's own wait (a live source's `times()`): its wait comes after `create`,
    /// but this element's `create` needs the clock itself, to give the decoder until the buffer
    /// is due and play silence (GAP) instead of a late buffer when a network source stalls. One
    /// clock wait in one place keeps the two consistent. Likewise `do-timestamp` is not used:
    /// every timestamp comes from the sample counter, so they tile without drift. Seeking does go
    /// through GstBaseSrc (`do_seek`, with its segment and SEGMENT_DONE handling).
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
            "Waited for {running_time}: {res:?}, jitter {jitter}"
        );
        self.clock_id().take();
        match res {
            Err(gst::ClockError::Unscheduled) => Err(gst::FlowError::Flushing),
            _ => Ok(()),
        }
    }

    pub(super) fn clock_id(&self) -> MutexGuard<'_, Option<gst::SingleShotClockId>> {
        self.clock_id.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The `fade-out` action signal: fade out from the next buffer on, then EOS.
    ///
    /// Only marks the request: the next `create` starts the fade at its own first frame, so a
    /// buffer being built while the signal comes is never skipped by the fade.
    pub(super) fn start_fade_out(&self) {
        if matches!(*self.state(), State::Stopped) {
            gst::warning!(
                CAT,
                imp = self,
                "Fade-out asked for while not running: ignored"
            );
            return;
        }
        self.fade_out_pending.store(true, Ordering::SeqCst);
        gst::info!(CAT, imp = self, "Fade-out asked for");
    }

    /// Lets go of this element's place in its decoded copy at EOS, so that a streaming window
    /// shared with others, or its own decoder's next pass, does not wait for a reader that will
    /// never read again. (`start` after a stop makes a new one.)
    pub(super) fn end_of_stream(&self) -> gst::FlowError {
        self.reader().take();
        gst::FlowError::Eos
    }

    /// The decoder delivered nothing for `waited` (over `timeout`) while this element waited:
    /// an ERROR naming the file, and its decode chain shut down so nothing spins on.
    fn stalled(&self, waited: std::time::Duration) -> gst::FlowError {
        let (entry, location, local) = match &*self.state() {
            State::Running(running) => (
                running.lease.entry().clone(),
                running.source.location.clone(),
                running.source.file.is_some(),
            ),
            _ => return gst::FlowError::Flushing,
        };
        let waited = waited.as_secs_f64();
        let text = format!(
            "'{location}' delivered no audio for {waited:.1} s (the 'timeout' property): its \
             decoder stalled"
        );
        let err = if local {
            gst::error_msg!(gst::StreamError::Decode, ("{}", text))
        } else {
            gst::error_msg!(gst::ResourceError::Read, ("{}", text))
        };
        gst::warning!(CAT, imp = self, "{}", text);
        entry.fail(err.clone());
        self.post_error_message(err);
        gst::FlowError::Error
    }

    /// A window moved this element on by `lost` frames: it had stalled, or fallen further
    /// behind the others sharing the window than the window holds.
    fn report_lost(&self, lost: u64, rate: u64) {
        let location = match &*self.state() {
            State::Running(running) => running.source.location.clone(),
            _ => return,
        };
        gst::element_imp_warning!(
            self,
            gst::StreamError::Failed,
            (
                "Fell behind the window shared over '{}' and lost {} frames ({:.3} s): it did not \
                 read for longer than 'timeout', or max-cache-size holds less than the elements \
                 sharing the window are apart",
                location,
                lost,
                lost as f64 / rate as f64
            )
        );
    }

    fn log_loop(&self, position: u64) {
        gst::debug!(
            CAT,
            imp = self,
            "End of a pass, looping (at frame {position})"
        );
    }

    fn playout(&self) -> Playout {
        let s = self.settings();
        Playout {
            volume: if s.mute { 0.0 } else { s.volume },
            trim: s.trim_silence.then_some(s.trim_threshold),
            loop_crossfade: s.loop_crossfade,
            do_loop: s.do_loop,
            fade_in: (s.mode == BgAudioSrcMode::Mixing).then_some(s.fade_in),
            fade_out: s.fade_out,
            timeout: s.timeout,
        }
    }
}

/// Running time of frame `frames` at `rate`, rounded down the same way for every buffer.
pub(super) fn frames_to_time(frames: u64, rate: u64) -> gst::ClockTime {
    gst::ClockTime::from_nseconds(
        frames
            .mul_div_floor(*gst::ClockTime::SECOND, rate)
            .unwrap_or(u64::MAX - 1),
    )
}

/// Whole frames in `time` at `rate`, rounded to nearest (so a seek in samples, which reaches the
/// element as a time rounded to the nanosecond, comes back to the same sample).
pub(super) fn time_to_frames(time: gst::ClockTime, rate: u64) -> u64 {
    time.nseconds()
        .mul_div_round(rate, *gst::ClockTime::SECOND)
        .unwrap_or(0)
}

/// A mapped output buffer as samples of its format: S16, or F32, made from the copy's S16 while
/// copying out (exactly `x / 32768` at gain 1).
enum Samples<'a> {
    S16(&'a mut [i16]),
    F32(&'a mut [f32]),
}

impl<'a> Samples<'a> {
    /// `None` if the memory is not aligned for the format.
    fn of(bytes: &'a mut [u8], format: gst_audio::AudioFormat) -> Option<Self> {
        // SAFETY: every bit pattern is a valid i16 and f32; align_to_mut only yields a middle
        // part that is correctly aligned, and we refuse memory where it is not the whole slice.
        match format {
            gst_audio::AUDIO_FORMAT_F32 => {
                let (head, samples, tail) = unsafe { bytes.align_to_mut::<f32>() };
                (head.is_empty() && tail.is_empty()).then_some(Samples::F32(samples))
            }
            _ => {
                let (head, samples, tail) = unsafe { bytes.align_to_mut::<i16>() };
                (head.is_empty() && tail.is_empty()).then_some(Samples::S16(samples))
            }
        }
    }

    /// Writes the cache's samples `src`, scaled by `gain`, from sample `at` on.
    fn write(&mut self, at: usize, src: &[i16], gain: Gain, channels: usize) {
        let skip = (at / channels) as u64;
        match self {
            Samples::S16(out) => {
                let dst = &mut out[at..at + src.len()];
                match gain {
                    Gain::Constant(1.0) => dst.copy_from_slice(src),
                    Gain::Constant(g) => gain::apply(src, dst, g),
                    Gain::Envelope(e, first) => {
                        gain::apply_envelope(src, dst, channels, first + skip, e, gain::apply)
                    }
                }
            }
            Samples::F32(out) => {
                let dst = &mut out[at..at + src.len()];
                match gain {
                    Gain::Constant(g) => gain::apply_f32(src, dst, g),
                    Gain::Envelope(e, first) => {
                        gain::apply_envelope(src, dst, channels, first + skip, e, gain::apply_f32)
                    }
                }
            }
        }
    }

    /// Silence from sample `at` to the end.
    fn silence_from(&mut self, at: usize) {
        match self {
            Samples::S16(out) => out[at..].fill(0),
            Samples::F32(out) => out[at..].fill(0.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
