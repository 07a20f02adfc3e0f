// SPDX-License-Identifier: MIT OR Apache-2.0

//! The decoded copy: the file as interleaved S16 at one rate and channel count, written by one
//! decoder and read by any number of elements, each through a `Reader` of its own.
//!
//! A copy ends one of two ways:
//! - **Complete**: the decoder reached the end of the file within `limit` bytes. The copy is
//!   frozen, and every later loop replays it without a lock and without decoding again; a
//!   reader at volume 1.0 hands out buffers that point into it (each sealed chunk is also a
//!   `gst::Memory` over the same samples).
//! - **A window** (see `window`): the decoded audio reached `limit` bytes first (or the copy was
//!   made a window from the start, for a file known to be too long or a live source).
//!
//! While the first pass fills the copy, the decoder is paced by the copy's own readers: it runs
//! a bounded lead (`DECODE_AHEAD_MIN` to `_MAX`) ahead of the furthest one (beyond what a trim
//! or a seam looks ahead), and waits when it is there, or when no element reads the copy.
//! Nothing else paces it: a copy never waits for another copy or another element's start-up.
//!
//! A reader waiting for frames while the decoder neither adds any nor waits for a reader has
//! found the decoder stalled once its stall limit passes (the element's `timeout`).
//!
//! Storage is a list of fixed-size chunks (`chunk_frames` frames each, the last one of a
//! complete copy sized exactly), so filling never reallocates.
//!
//! Locks: `filling`, then `memo` (never the other way), and neither is held while calling out.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use super::shape::{self, Place, Shape};
use super::window::{self, Room, Slot, Window};
use super::CAT;

/// Frames per chunk of a copy that may be kept: 16384 frames is 64 KiB of 48 kHz stereo.
pub const CHUNK_FRAMES: usize = 16_384;
/// Frames per chunk of a window from the start: finer, so the window it holds stays small.
pub const STREAM_CHUNK_FRAMES: usize = 4_096;
/// How far a copy's first pass decodes ahead of its furthest reader: as far as that reader has
/// read, between these bounds. A reader that has just started needs one buffer ahead, and a
/// small lead lets elements starting together share the CPU with each other rather than with
/// decoders filling their files; a reader that has played a while gets a lead that covers a
/// busy moment. The decoder goes on once the reader has read half.
pub const DECODE_AHEAD_MIN: Duration = Duration::from_millis(20);
pub const DECODE_AHEAD_MAX: Duration = Duration::from_millis(200);
/// How far a window's writer runs ahead of its furthest reader: enough to cover going back to
/// the start at the end of a pass.
const WINDOW_LEAD_BYTES: u64 = 256 * 1024;

/// One sealed run of samples, readable as `&[i16]` and shareable as a `gst::Memory`.
#[derive(Debug)]
struct Chunk {
    samples: Arc<[i16]>,
    memory: gst::Memory,
}

impl Chunk {
    fn new(samples: Vec<i16>) -> Self {
        let samples: Arc<[i16]> = samples.into();
        let memory = gst::Memory::from_slice(SampleBytes(samples.clone()));
        Chunk { samples, memory }
    }
}

/// Lets a `gst::Memory` borrow the samples of a chunk as bytes.
struct SampleBytes(Arc<[i16]>);

impl AsRef<[u8]> for SampleBytes {
    fn as_ref(&self) -> &[u8] {
        let samples: &[i16] = &self.0;
        // SAFETY: i16 has no padding and every byte pattern is a valid u8; the length in bytes is
        // exactly twice the number of samples and the lifetime is tied to `self`.
        unsafe {
            std::slice::from_raw_parts(
                samples.as_ptr().cast::<u8>(),
                std::mem::size_of_val(samples),
            )
        }
    }
}

/// What a read found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// This many frames were visited.
    Frames(usize),
    /// The reader is at the end of a pass over the file: `Reader::next_pass` goes on (loops).
    PassEnd,
    /// Nothing was decoded for the reader's position before the deadline.
    NotYet,
}

/// Why a read returned no samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// `wake()` was called while `cancelled()` is true: the reader is flushing.
    Cancelled,
    /// The decoder failed before it reached the requested position.
    Failed(gst::ErrorMessage),
    /// The stream ended for good: a pass was asked for that the source cannot give. Says why.
    Ended(String),
    /// The decoder added nothing for this long, and waited for no reader.
    Stalled(Duration),
}

/// How long a read may wait for frames not decoded yet.
#[derive(Debug, Clone, Copy, Default)]
pub struct Wait {
    /// Until then at most (`Read::NotYet`).
    pub deadline: Option<Instant>,
    /// `ReadError::Stalled` once the decoder has added nothing for this long.
    pub stall: Option<Duration>,
}

#[derive(Debug)]
struct Filling {
    /// Sealed chunks; the first one is chunk number `first_chunk` of the stream.
    chunks: VecDeque<Chunk>,
    first_chunk: u64,
    tail: Vec<i16>,
    /// Frames written since the start of the stream.
    frames: u64,
    failed: Option<gst::ErrorMessage>,
    /// Over the limit: a window, not a copy.
    window: Option<Window>,
    /// Registered readers' places, by reader id; `None` is a free slot.
    readers: Vec<Option<Slot>>,
    /// The writer waits for readers: they wake it when it may go on.
    writer_waiting: bool,
    /// Readers waiting for frames: the writer wakes them only when there are any.
    readers_waiting: usize,
    /// The decoder is shutting down: writes return at once.
    closed: bool,
    /// The most frames a reader stays behind the decoder (see `Shape::lookahead`): the decoder
    /// runs that much further ahead.
    lookahead: u64,
    /// When the decoder last added frames (or the copy was made): what a stall is counted from.
    progress: Instant,
    /// The stream's tags as the decoder found them, and how often they changed.
    tags: (u64, Option<gst::TagList>),
}

#[derive(Debug)]
struct Frozen {
    chunks: Vec<Chunk>,
    frames: u64,
}

/// A trim's threshold and its most frames at each end.
type TrimKey = (i16, u64);
/// A seam's bounds (head, tail) and crossfade length.
type SeamKey = (u64, u64, u64);

/// The loop bounds and mixed seams worked out for a complete copy, once per key: the file is
/// scanned once per threshold and a seam mixed once, not once per element.
#[derive(Debug, Default)]
struct Memo {
    bounds: Vec<(TrimKey, (u64, u64))>,
    seams: Vec<(SeamKey, Arc<[i16]>)>,
}

/// Decoded S16 audio, filled once by a decoder and read by any number of readers.
#[derive(Debug)]
pub struct PcmCache {
    rate: u32,
    channels: usize,
    chunk_frames: usize,
    /// The most bytes of decoded audio held at once (`max-cache-size`).
    limit: u64,
    filling: Mutex<Filling>,
    cond: Condvar,
    frozen: OnceLock<Frozen>,
    /// The tags' generation, read without the lock by every reader at every buffer.
    tags_generation: AtomicU64,
    memo: Mutex<Memo>,
    /// What the copy is of, for log lines (a copy is shared: no one element logs for it).
    label: OnceLock<gst::glib::GString>,
}

impl PcmCache {
    /// A copy that keeps the whole file if it decodes to at most `limit` bytes, and turns into
    /// a window over the stream when it does not.
    pub fn new(rate: u32, channels: u32, limit: u64) -> Self {
        PcmCache {
            rate,
            channels: channels.max(1) as usize,
            chunk_frames: CHUNK_FRAMES,
            limit,
            filling: Mutex::new(Filling {
                chunks: VecDeque::new(),
                first_chunk: 0,
                tail: Vec::new(),
                frames: 0,
                failed: None,
                window: None,
                readers: Vec::new(),
                writer_waiting: false,
                readers_waiting: 0,
                closed: false,
                lookahead: 0,
                progress: Instant::now(),
                tags: (0, None),
            }),
            cond: Condvar::new(),
            frozen: OnceLock::new(),
            tags_generation: AtomicU64::new(0),
            memo: Mutex::new(Memo::default()),
            label: OnceLock::new(),
        }
    }

    /// A window over the stream from the start: for a file known to decode to more than
    /// `limit`, or a live source.
    pub fn streaming(rate: u32, channels: u32, limit: u64) -> Self {
        let cache = PcmCache {
            chunk_frames: STREAM_CHUNK_FRAMES,
            ..PcmCache::new(rate, channels, limit)
        };
        cache.lock().window = Some(Window::default());
        cache
    }

    /// Names the copy in log lines: what it is a copy of.
    pub fn set_label(&self, label: &str) {
        let _ = self.label.set(label.into());
    }

    /// What the copy is of, for log lines.
    pub fn label(&self) -> &gst::glib::GStr {
        self.label
            .get()
            .map_or(gst::glib::gstr!("decoded copy"), |l| l.as_gstr())
    }

    pub fn rate(&self) -> u32 {
        self.rate
    }

    fn bpf(&self) -> u64 {
        self.channels as u64 * 2
    }

    fn chunk_samples(&self) -> usize {
        self.chunk_frames * self.channels
    }

    fn lock(&self) -> MutexGuard<'_, Filling> {
        // A reader or writer that panicked cannot leave `Filling` half-updated in a way that
        // matters more than losing the copy, so carry on with the data.
        self.filling.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn memo(&self) -> MutexGuard<'_, Memo> {
        self.memo.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The total number of frames once the copy is complete.
    pub fn complete_frames(&self) -> Option<u64> {
        self.frozen.get().map(|f| f.frames)
    }

    /// The decoder's failure, if it failed.
    pub fn failed(&self) -> Option<gst::ErrorMessage> {
        if self.frozen.get().is_some() {
            return None;
        }
        self.lock().failed.clone()
    }

    /// Whether the first pass is still filling a copy (not a window, not failed, not closed):
    /// one its decoder can go on filling for a later reader.
    pub fn is_filling(&self) -> bool {
        if self.frozen.get().is_some() {
            return false;
        }
        let filling = self.lock();
        filling.window.is_none() && filling.failed.is_none() && !filling.closed
    }

    /// Adds tags the decoder found (later values replace earlier ones).
    pub fn merge_tags(&self, tags: &gst::TagList) {
        let mut filling = self.lock();
        let held = &mut filling.tags;
        let merged = match &held.1 {
            Some(old) => old.merge(tags, gst::TagMergeMode::Replace),
            None => tags.clone(),
        };
        *held = (held.0 + 1, Some(merged));
        self.tags_generation.store(held.0, Ordering::Release);
    }

    /// The tags, if they changed since `generation` (0 before any), with the new generation.
    pub fn tags_since(&self, generation: u64) -> Option<(u64, gst::TagList)> {
        if self.tags_generation.load(Ordering::Acquire) == generation {
            return None;
        }
        let filling = self.lock();
        match &filling.tags {
            (g, Some(tags)) if *g != generation => Some((*g, tags.clone())),
            _ => None,
        }
    }

    /// Whether the copy is a window over the stream: what it held is let go, so readers cannot
    /// go back.
    pub fn is_window(&self) -> bool {
        self.frozen.get().is_none() && self.lock().window.is_some()
    }

    /// Bytes of decoded audio held now.
    pub fn byte_size(&self) -> u64 {
        if let Some(frozen) = self.frozen.get() {
            return frozen.frames * self.bpf();
        }
        let filling = self.lock();
        Self::held_bytes(&filling, self.chunk_samples())
    }

    fn held_bytes(filling: &Filling, chunk_samples: usize) -> u64 {
        (filling.chunks.len() * chunk_samples + filling.tail.len()) as u64 * 2
    }

    fn frames_in(&self, duration: Duration) -> u64 {
        (duration.as_nanos() * self.rate as u128 / 1_000_000_000) as u64
    }

    /// Whether a copy's first pass is far enough ahead of its furthest reader (see
    /// `DECODE_AHEAD_MIN`), beyond the readers' look-ahead; `half` asks for half that lead. With
    /// no reader it waits (for one that joins later).
    fn paced(&self, filling: &Filling, half: bool) -> bool {
        let furthest = filling.readers.iter().flatten().map(|s| s.pos).max();
        furthest.is_none_or(|furthest| {
            let ahead = furthest.clamp(
                self.frames_in(DECODE_AHEAD_MIN),
                self.frames_in(DECODE_AHEAD_MAX),
            ) >> u8::from(half);
            filling.frames >= furthest + filling.lookahead + ahead
        })
    }

    /// What the writer may do now (see `window::room` for a window).
    fn room(&self, filling: &mut Filling) -> Room {
        if filling.closed {
            return Room::Write;
        }
        if filling.window.is_none() {
            return if self.paced(filling, false) {
                Room::Wait(None)
            } else {
                Room::Write
            };
        }
        // A window's limit and lead, in frames. The lead stays below the limit, so one reader
        // alone never waits for itself.
        let limit = (self.limit / self.bpf()).max(2);
        let lead = (WINDOW_LEAD_BYTES / self.bpf()).min(limit / 2).max(1);
        let now = Instant::now();
        window::room(filling.frames, &filling.readers, limit, lead, now)
    }

    /// Whether a waiting writer may go on now that a reader moved: for a copy, once the
    /// furthest reader has read half the decoder's lead (so it does not wake at every buffer).
    fn writer_may_go_on(&self, filling: &Filling) -> bool {
        filling.writer_waiting && (filling.window.is_some() || !self.paced(filling, true))
    }

    /// A window: drops the chunks every reader has passed, and the ends of passes every reader
    /// has crossed.
    fn drop_passed(&self, filling: &mut Filling) {
        let Some(slowest) = window::held_from(&filling.readers) else {
            return;
        };
        let min_pass = filling.readers.iter().flatten().map(|s| s.pass).min();
        let Some(window) = filling.window.as_mut() else {
            return;
        };
        if let Some(pass) = min_pass {
            window.forget_before(pass);
        }
        let passed = (slowest / self.chunk_frames as u64).saturating_sub(filling.first_chunk);
        let passed = (passed as usize).min(filling.chunks.len());
        if passed > 0 {
            filling.chunks.drain(..passed);
            filling.first_chunk += passed as u64;
        }
    }

    /// Appends native-endian interleaved S16 bytes (whole frames). Called by the decoder; it
    /// waits while the copy is paced or the window full (see `room`). Returns false once the
    /// copy takes no more (complete or closed): the decoder stops rather than decode for nothing.
    pub fn push_bytes(&self, bytes: &[u8]) -> bool {
        if self.frozen.get().is_some() {
            return false;
        }
        let chunk_samples = self.chunk_samples();
        let mut filling = self.lock();
        let mut samples = bytes
            .chunks_exact(2)
            .map(|b| i16::from_ne_bytes([b[0], b[1]]));
        loop {
            loop {
                match self.room(&mut filling) {
                    Room::Write => break,
                    Room::Overtake(to) => {
                        window::overtake(&mut filling.readers, to);
                        self.drop_passed(&mut filling);
                    }
                    Room::Wait(until) => {
                        filling.writer_waiting = true;
                        filling = super::wait(&self.cond, filling, until);
                    }
                }
            }
            if filling.closed {
                filling.writer_waiting = false;
                return false;
            }
            if filling.tail.capacity() == 0 {
                filling.tail = Vec::with_capacity(chunk_samples);
            }
            let room = chunk_samples - filling.tail.len();
            let before = filling.tail.len();
            filling.tail.extend(samples.by_ref().take(room));
            let added = filling.tail.len() - before;
            filling.frames += (added / self.channels) as u64;
            filling.progress = Instant::now();
            filling.writer_waiting = false;
            if filling.tail.len() == chunk_samples {
                let full = std::mem::take(&mut filling.tail);
                filling.chunks.push_back(Chunk::new(full));
            }
            if filling.window.is_none() && Self::held_bytes(&filling, chunk_samples) > self.limit {
                filling.window = Some(Window::default());
                let (limit, frames) = (self.limit, filling.frames);
                gst::info!(
                    CAT,
                    id = self.label(),
                    "Decoded audio reached max-cache-size ({limit} bytes) at frame {frames}: \
                     streaming through a window from now on"
                );
                self.drop_passed(&mut filling);
            }
            if filling.readers_waiting > 0 {
                self.cond.notify_all();
            }
            if samples.len() == 0 {
                return true;
            }
        }
    }

    /// The decoder reached the end of the file. A copy that kept it all is complete from now
    /// on; a window marks the end of this pass. Returns whether the decoder should start the
    /// next pass (a window).
    pub fn end_pass(&self) -> bool {
        let mut filling = self.lock();
        if filling.failed.is_some() {
            return false;
        }
        let frames = filling.frames;
        if let Some(window) = filling.window.as_mut() {
            let another = window.end_pass(frames);
            gst::debug!(
                CAT,
                id = self.label(),
                "End of a pass at stream frame {frames}"
            );
            drop(filling);
            self.cond.notify_all();
            return another;
        }
        let mut chunks: Vec<Chunk> = std::mem::take(&mut filling.chunks).into();
        let tail = std::mem::take(&mut filling.tail);
        if !tail.is_empty() {
            // Sized exactly: the last chunk holds only what was decoded.
            chunks.push(Chunk::new(tail));
        }
        let _ = self.frozen.set(Frozen { chunks, frames });
        drop(filling);
        let (rate, channels, bytes) = (self.rate, self.channels, frames * self.bpf());
        gst::info!(
            CAT,
            id = self.label(),
            "Copy complete: {frames} frames at {rate} Hz, {channels} channels, {bytes} bytes"
        );
        self.cond.notify_all();
        false
    }

    /// A window: no pass follows the last one (the source cannot go back to its start); `why`
    /// is what a reader that wanted to loop reports.
    pub fn end_stream(&self, why: String) {
        let mut filling = self.lock();
        if let Some(window) = filling.window.as_mut() {
            window.ended.get_or_insert(why);
        }
        drop(filling);
        self.cond.notify_all();
    }

    /// Shuts writes off (a waiting writer returns): the decoder is going away.
    pub fn close(&self) {
        self.lock().closed = true;
        self.cond.notify_all();
    }

    /// Records a decoder failure; readers get it once they have read everything before it.
    pub fn fail(&self, err: gst::ErrorMessage) {
        if self.frozen.get().is_some() {
            return;
        }
        self.lock().failed.get_or_insert(err);
        self.cond.notify_all();
    }

    /// Wakes every reader waiting in `read`, so it can check its `cancelled` condition.
    pub fn wake(&self) {
        let _guard = self.lock();
        self.cond.notify_all();
    }

    /// A reader at the start of the stream, or `None` if the copy is a window already holding
    /// data (a window has no start to give to a reader that comes late).
    pub fn reader(self: &Arc<Self>) -> Option<Reader> {
        let id = if self.frozen.get().is_some() {
            None
        } else {
            let mut filling = self.lock();
            if filling.window.is_some() && filling.frames > 0 {
                return None;
            }
            let free = filling.readers.iter().position(Option::is_none);
            let id = free.unwrap_or_else(|| {
                filling.readers.push(None);
                filling.readers.len() - 1
            });
            filling.readers[id] = Some(Slot::new(Instant::now()));
            Some(id)
        };
        Some(Reader {
            cache: self.clone(),
            id,
            pass: 0,
            lost: 0,
            at: Playhead::default(),
        })
    }

    fn unregister(&self, id: usize) {
        let mut filling = self.lock();
        if let Some(slot) = filling.readers.get_mut(id) {
            *slot = None;
        }
        self.drop_passed(&mut filling);
        drop(filling);
        self.cond.notify_all();
    }

    /// Visits `n` frames of the complete copy from frame `pos` (all within it).
    fn read_frozen(&self, frozen: &Frozen, pos: u64, n: usize, visit: &mut impl FnMut(&[i16])) {
        self.read_chunks(frozen.chunks.iter(), &[], 0, pos, n, visit);
    }

    /// The frames a pass of the complete copy plays for a trim at `threshold` (see
    /// `shape::trim_bounds`), worked out once per threshold.
    fn bounds(&self, frozen: &Frozen, threshold: i16, max_trim: u64) -> (u64, u64) {
        let key = (threshold, max_trim);
        if let Some((_, bounds)) = self.memo().bounds.iter().find(|(k, _)| *k == key) {
            return *bounds;
        }
        let bounds = shape::trim_bounds(frozen.frames, max_trim, |frame| {
            let chunk = &frozen.chunks[(frame / self.chunk_frames as u64) as usize];
            let at = (frame % self.chunk_frames as u64) as usize * self.channels;
            shape::is_loud(&chunk.samples[at..at + self.channels], threshold)
        });
        self.memo().bounds.push((key, bounds));
        bounds
    }

    /// The mixed frames of a seam (see `shape::mix_seam`), made once per copy and key.
    fn seam(&self, frozen: &Frozen, key: SeamKey) -> Arc<[i16]> {
        if let Some((_, seam)) = self.memo().seams.iter().find(|(k, _)| *k == key) {
            return seam.clone();
        }
        let (head, tail, length) = key;
        let mut outgoing = Vec::with_capacity(length as usize * self.channels);
        let mut incoming = Vec::with_capacity(length as usize * self.channels);
        self.read_frozen(
            frozen,
            tail - length,
            length as usize,
            &mut |s: &[i16]| outgoing.extend_from_slice(s),
        );
        self.read_frozen(frozen, head, length as usize, &mut |s: &[i16]| {
            incoming.extend_from_slice(s)
        });
        let seam: Arc<[i16]> = shape::mix_seam(&outgoing, &incoming, self.channels).into();
        self.memo().seams.push((key, seam.clone()));
        seam
    }

    /// The first frame before `to` (decoded, in a copy still filling) with a sample above
    /// `threshold`.
    fn first_loud_filling(&self, filling: &Filling, threshold: i16, to: u64) -> Option<u64> {
        let mut frame = None;
        let mut seen = 0u64;
        let (chunks, tail) = (filling.chunks.iter(), &filling.tail);
        let n = to.min(filling.frames) as usize;
        self.read_chunks(
            chunks,
            tail,
            filling.first_chunk,
            0,
            n,
            &mut |samples: &[i16]| {
                if frame.is_none() {
                    if let Some(i) = samples
                        .chunks_exact(self.channels)
                        .position(|f| shape::is_loud(f, threshold))
                    {
                        frame = Some(seen + i as u64);
                    }
                }
                seen += (samples.len() / self.channels) as u64;
            },
        );
        frame
    }

    /// Visits `frames` frames from stream frame `pos`, all of them held.
    fn read_chunks<'a>(
        &self,
        chunks: impl Iterator<Item = &'a Chunk>,
        tail: &[i16],
        first_chunk: u64,
        pos: u64,
        frames: usize,
        visit: &mut impl FnMut(&[i16]),
    ) {
        debug_assert!(
            pos / self.chunk_frames as u64 >= first_chunk,
            "read before the window"
        );
        let skip = (pos / self.chunk_frames as u64).saturating_sub(first_chunk) as usize;
        let mut offset = (pos % self.chunk_frames as u64) as usize * self.channels;
        let mut left = frames * self.channels;
        let mut chunks = chunks.skip(skip);
        while left > 0 {
            let samples: &[i16] = match chunks.next() {
                Some(c) => &c.samples,
                None => tail,
            };
            let n = (samples.len() - offset).min(left);
            visit(&samples[offset..offset + n]);
            left -= n;
            offset = 0;
        }
    }
}

/// One reader's place in a copy: its position (a stream frame) and pass. Registered with the
/// copy while it fills, so the decoder runs ahead of it and a window keeps what it has not read
/// yet; dropping it lets go of that.
#[derive(Debug)]
pub struct Reader {
    cache: Arc<PcmCache>,
    /// Slot in the copy's reader table; `None` for a reader of a complete copy.
    id: Option<usize>,
    pass: u64,
    /// Frames a window moved this reader on by, not taken yet (`take_lost`).
    lost: u64,
    at: Playhead,
}

/// Where a reader is in a copy, and how it plays its passes: apart from the `Arc` of the copy,
/// so a read borrows the two separately (no reference count touched per buffer).
#[derive(Debug, Default)]
struct Playhead {
    pos: u64,
    /// Frames read since the start of this pass.
    in_pass: u64,
    shape: Shape,
    /// The trimmed bounds of a complete copy, for the shape's threshold (looked up once).
    bounds: Option<(TrimKey, (u64, u64))>,
    /// In a crossfade at a seam: how many of its frames were read.
    seam: Option<u64>,
    /// The mixed frames of a seam, as the copy made them for these bounds and length.
    seam_mix: Option<(SeamKey, Arc<[i16]>)>,
    /// A seek not placed yet: the output frame, and the frame of the file the first pass
    /// starts at. Placed at the next read, when the bounds of the passes can be known.
    pending: Option<(u64, u64)>,
}

impl Reader {
    /// Sets how the passes are played (see `Shape`); takes effect at once.
    pub fn set_shape(&mut self, shape: Shape) {
        self.at.shape = shape;
    }

    /// Whether the next frames can be shared without a copy (`share_into`): the copy is
    /// complete, nothing to shape, no seam.
    pub fn can_share(&self) -> bool {
        self.cache.frozen.get().is_some() && self.at.shape.is_plain() && self.at.seam.is_none()
    }

    /// The frame this reader reads next: in the file when the copy is complete, in the stream
    /// (counting across passes) in a window.
    pub fn position(&self) -> u64 {
        self.at.pos
    }

    /// The frames a window moved this reader on by since the last call (it had stalled or
    /// fallen further behind than the window holds).
    pub fn take_lost(&mut self) -> u64 {
        std::mem::take(&mut self.lost)
    }

    /// Goes on past the end of a pass: back to the start of a complete copy, or into the next
    /// pass of a window. Returns false, and stays, if the pass held no audio: looping it would
    /// never produce a frame.
    pub fn next_pass(&mut self) -> bool {
        if self.at.in_pass == 0 {
            return false;
        }
        self.at.in_pass = 0;
        if self.cache.frozen.get().is_some() {
            if self.at.shape.looping && self.at.shape.crossfade > 0 {
                // The seam: the end of this pass mixed into the start of the next one.
                self.at.seam = Some(0);
            } else {
                // (Moved past a trimmed head by the next read.)
                self.at.pos = 0;
            }
        } else {
            self.pass += 1;
        }
        true
    }

    /// Moves to what the output plays at its frame `frame`, when the first pass starts at frame
    /// `first` of the file and each later pass at the head (see `shape::place`). Placed at the
    /// next read (in a copy still filling, once its head is known: past its end the position
    /// reads as the end of the pass). Returns false, and stays, in a window.
    pub fn seek_output(&mut self, frame: u64, first: u64) -> bool {
        if self.cache.is_window() {
            return false;
        }
        self.pass = 0;
        self.at.seam = None;
        self.at.pending = Some((frame, first));
        true
    }

    /// Calls `visit` with the samples of up to `max_frames` frames from the reader's position
    /// on, in as few slices as the chunks allow, and moves the position past them.
    ///
    /// While the frames are not decoded yet it waits, as `wait` allows. `cancelled` is checked
    /// before every wait; `PcmCache::wake()` interrupts a wait.
    pub fn read(
        &mut self,
        max_frames: usize,
        wait: Wait,
        cancelled: impl Fn() -> bool,
        mut visit: impl FnMut(&[i16]),
    ) -> Result<Read, ReadError> {
        if let Some(frozen) = self.cache.frozen.get() {
            return Ok(self
                .at
                .read_shaped(&self.cache, frozen, max_frames, &mut visit));
        }
        // (Its own reference while the copy fills: the reader moves under its lock.)
        let cache = self.cache.clone();
        let mut filling = cache.lock();
        loop {
            if cache.frozen.get().is_some() {
                drop(filling);
                return self.read(max_frames, wait, cancelled, visit);
            }
            if let Some(read) = self.read_filling(&mut filling, max_frames, &mut visit) {
                return Ok(read);
            }
            if let Some(err) = &filling.failed {
                return Err(ReadError::Failed(err.clone()));
            }
            if let Some(why) = filling.window.as_ref().and_then(|w| w.ended.as_ref()) {
                if self.at.pos >= filling.frames {
                    return Err(ReadError::Ended(why.clone()));
                }
            }
            if cancelled() {
                return Err(ReadError::Cancelled);
            }
            let now = Instant::now();
            // A decoder that waits for a reader is not stalled, however long it waits.
            let stall = wait
                .stall
                .filter(|_| !filling.writer_waiting)
                .map(|stall| filling.progress + stall);
            if stall.is_some_and(|at| at <= now) {
                return Err(ReadError::Stalled(now - filling.progress));
            }
            if filling.writer_waiting {
                // The writer may be waiting to overtake a reader this one waits behind.
                cache.cond.notify_all();
            }
            let until = wait.deadline.into_iter().chain(stall).min();
            if wait.deadline.is_some_and(|d| d <= now) {
                return Ok(Read::NotYet);
            }
            filling.readers_waiting += 1;
            filling = super::wait(&cache.cond, filling, until);
            filling.readers_waiting -= 1;
        }
    }

    /// One look at a copy still filling (or a window): reads what it can and returns what it
    /// read, or `None` when the frames are not decoded yet.
    fn read_filling(
        &mut self,
        filling: &mut Filling,
        max_frames: usize,
        visit: &mut impl FnMut(&[i16]),
    ) -> Option<Read> {
        let cache = &*self.cache;
        let id = self.id.unwrap_or(usize::MAX);
        if filling.window.is_none() {
            filling.lookahead = filling.lookahead.max(self.at.shape.lookahead());
        }
        // Moved on by the writer of a window (see `window::overtake`)?
        if let Some(slot) = filling.readers.get_mut(id).and_then(Option::as_mut) {
            if slot.lost > 0 {
                self.lost += std::mem::take(&mut slot.lost);
                self.at.pos = slot.pos;
                self.pass = filling.window.as_ref().map_or(0, |w| w.pass_of(slot.pos));
                // Not an empty pass: it loops on from there.
                self.at.in_pass = self.at.in_pass.max(1);
                let pos = slot.pos;
                gst::warning!(
                    CAT,
                    id = cache.label(),
                    "A reader that fell behind the window is moved on to stream frame {pos}"
                );
            }
        }
        let placed = self.at.place_filling(cache, filling);
        self.register(filling, id);
        cache.drop_passed(filling);
        let pass_end = filling.window.as_ref().and_then(|w| w.pass_end(self.pass));
        // At or past it: a seek may have put the reader beyond a pass end it never read.
        if pass_end.is_some_and(|end| self.at.pos >= end) {
            return Some(Read::PassEnd);
        }
        let mut end = pass_end.unwrap_or(filling.frames);
        if !placed {
            // Waits for the head to be decoded.
            end = 0;
        } else if filling.window.is_none() {
            // Not past what a trim or a seam may still take from the end.
            end = end.saturating_sub(self.at.shape.lookahead());
            if let Some(threshold) = self.at.shape.trim {
                // Once, before the pass's first frame: past a trimmed head.
                if self.at.in_pass == 0 && self.at.pos < self.at.shape.max_trim && end > self.at.pos
                {
                    let head = cache
                        .first_loud_filling(filling, threshold, self.at.shape.max_trim)
                        .unwrap_or(self.at.shape.max_trim);
                    self.at.pos = self.at.pos.max(head);
                }
            }
        }
        if end <= self.at.pos {
            return None;
        }
        let n = (max_frames as u64).min(end - self.at.pos) as usize;
        let (chunks, tail) = (filling.chunks.iter(), &filling.tail);
        cache.read_chunks(chunks, tail, filling.first_chunk, self.at.pos, n, visit);
        self.at.pos += n as u64;
        self.at.in_pass += n as u64;
        self.register(filling, id);
        Some(Read::Frames(n))
    }

    /// Tells the copy where this reader is (for a seek not placed yet, the frame it waits for,
    /// so the decoder runs ahead of that), and wakes a writer that may go on now.
    fn register(&self, filling: &mut Filling, id: usize) {
        if let Some(slot) = filling.readers.get_mut(id).and_then(Option::as_mut) {
            slot.pos = self
                .at
                .pending
                .map_or(self.at.pos, |(frame, first)| first + frame);
            slot.pass = self.pass;
            slot.last_read = Instant::now();
        }
        if self.cache.writer_may_go_on(filling) {
            self.cache.cond.notify_all();
        }
    }

    /// Appends to `buffer` memories that share a complete copy's samples for up to
    /// `max_frames` frames from the reader's position, without copying, and moves the position
    /// past them. `None` while the copy is not complete; `PassEnd` at its end.
    pub fn share_into(&mut self, max_frames: usize, buffer: &mut gst::BufferRef) -> Option<Read> {
        let cache = &*self.cache;
        let frozen = cache.frozen.get()?;
        self.at.place_frozen(cache, frozen);
        if self.at.pos >= frozen.frames {
            return Some(Read::PassEnd);
        }
        let frames = (max_frames as u64).min(frozen.frames - self.at.pos) as usize;
        let bpf = cache.channels * 2;
        let mut chunk = (self.at.pos / cache.chunk_frames as u64) as usize;
        let mut offset = (self.at.pos % cache.chunk_frames as u64) as usize;
        let mut left = frames;
        while left > 0 {
            let mem = &frozen.chunks[chunk].memory;
            let in_chunk = (mem.size() / bpf - offset).min(left);
            buffer.append_memory(mem.share(offset * bpf..(offset + in_chunk) * bpf));
            left -= in_chunk;
            chunk += 1;
            offset = 0;
        }
        self.at.pos += frames as u64;
        self.at.in_pass += frames as u64;
        Some(Read::Frames(frames))
    }
}

impl Playhead {
    /// The frames a pass plays, `head..tail`, for this shape (looked up once per threshold).
    fn bounds(&mut self, cache: &PcmCache, frozen: &Frozen) -> (u64, u64) {
        match self.shape.trim {
            Some(threshold) => {
                let key = (threshold, self.shape.max_trim);
                match self.bounds {
                    Some((k, bounds)) if k == key => bounds,
                    _ => {
                        let bounds = cache.bounds(frozen, threshold, self.shape.max_trim);
                        self.bounds = Some((key, bounds));
                        bounds
                    }
                }
            }
            None => (0, frozen.frames),
        }
    }

    fn go_to(&mut self, place: Place) {
        self.pos = place.pos;
        self.in_pass = place.in_pass;
        self.seam = place.seam;
    }

    /// Places a pending seek (see `Reader::seek_output`) in a complete copy.
    fn place_frozen(&mut self, cache: &PcmCache, frozen: &Frozen) {
        let Some((frame, first)) = self.pending.take() else {
            return;
        };
        let (head, tail) = self.bounds(cache, frozen);
        let crossfade = self.shape.crossfade_for(head, tail);
        let place = shape::place(frame, first, head, tail, crossfade, self.shape.looping);
        self.go_to(place);
    }

    /// Places a pending seek in a copy still filling, once the frame it lands on is decoded
    /// (past the head, which needs the first `max_trim` frames when trimming). Until then it
    /// returns false and the reader waits: for those frames, or for the copy to complete, when
    /// `place_frozen` places it (wrapped into the loop if it is past the end).
    fn place_filling(&mut self, cache: &PcmCache, filling: &Filling) -> bool {
        let Some((frame, first)) = self.pending else {
            return true;
        };
        // A window plays the stream as it is; a copy that failed places it as it can.
        let window = filling.window.is_some();
        let waits = !window && filling.failed.is_none();
        let head = match self.shape.trim {
            Some(threshold) if !window => {
                let max_trim = self.shape.max_trim;
                if waits && filling.frames < max_trim {
                    return false;
                }
                cache
                    .first_loud_filling(filling, threshold, max_trim.min(filling.frames))
                    .unwrap_or(max_trim)
            }
            _ => 0,
        };
        // Not within what a trim or a seam may still take from the end: where the first pass
        // ends is not known before the copy is complete (`place_frozen` places it then).
        let pos = head.max(first) + frame;
        if waits && pos + self.shape.lookahead() >= filling.frames {
            return false;
        }
        self.pending = None;
        self.go_to(Place {
            pos,
            in_pass: frame,
            seam: None,
        });
        true
    }

    /// Reads a complete copy as the shape says: within the trimmed bounds, and through the
    /// crossfade at a seam.
    fn read_shaped(
        &mut self,
        cache: &PcmCache,
        frozen: &Frozen,
        max_frames: usize,
        visit: &mut impl FnMut(&[i16]),
    ) -> Read {
        self.place_frozen(cache, frozen);
        let (head, tail) = self.bounds(cache, frozen);
        let crossfade = self.shape.crossfade_for(head, tail);
        if let Some(done) = self.seam {
            if done < crossfade {
                let key = (head, tail, crossfade);
                return self.read_seam(cache, frozen, key, done, max_frames, visit);
            }
            self.seam = None;
            self.pos = head + crossfade;
        }
        self.pos = self.pos.max(head);
        let end = tail - crossfade;
        if self.pos >= end {
            return Read::PassEnd;
        }
        if max_frames == 0 {
            return Read::PassEnd;
        }
        let n = (max_frames as u64).min(end - self.pos) as usize;
        cache.read_frozen(frozen, self.pos, n, visit);
        self.pos += n as u64;
        self.in_pass += n as u64;
        Read::Frames(n)
    }

    /// Reads on in a seam, `done` of its frames read already.
    fn read_seam(
        &mut self,
        cache: &PcmCache,
        frozen: &Frozen,
        key: SeamKey,
        done: u64,
        max_frames: usize,
        visit: &mut impl FnMut(&[i16]),
    ) -> Read {
        let (head, _, crossfade) = key;
        let n = (max_frames as u64).min(crossfade - done);
        let seam = match &self.seam_mix {
            Some((k, seam)) if *k == key => seam.clone(),
            _ => {
                let seam = cache.seam(frozen, key);
                self.seam_mix = Some((key, seam.clone()));
                seam
            }
        };
        let channels = cache.channels;
        visit(&seam[done as usize * channels..(done + n) as usize * channels]);
        self.in_pass += n;
        if done + n == crossfade {
            self.seam = None;
            self.pos = head + crossfade;
        } else {
            self.seam = Some(done + n);
        }
        Read::Frames(n as usize)
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.cache.unregister(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// `frames` frames of a ramp (sample i of the stream is i % 30000) from frame `start` on.
    fn ramp(frames: usize, channels: usize, start: usize) -> Vec<u8> {
        (start * channels..(start + frames) * channels)
            .flat_map(|i| ((i % 30000) as i16).to_ne_bytes())
            .collect()
    }

    fn expect(from: usize, frames: usize, channels: usize) -> Vec<i16> {
        (from * channels..(from + frames) * channels)
            .map(|i| (i % 30000) as i16)
            .collect()
    }

    fn collect(reader: &mut Reader, n: usize) -> (Read, Vec<i16>) {
        let mut out = Vec::new();
        let read = reader
            .read(n, Wait::default(), || false, |s| out.extend_from_slice(s))
            .unwrap();
        (read, out)
    }

    fn soon() -> Wait {
        Wait {
            deadline: Some(Instant::now() + Duration::from_millis(10)),
            stall: None,
        }
    }

    /// Writes `total` frames of the mono ramp from `from` on, 1000 at a time, on a thread.
    fn writer(cache: &Arc<PcmCache>, from: usize, total: usize) -> std::thread::JoinHandle<()> {
        let cache = cache.clone();
        std::thread::spawn(move || {
            for start in (from..total).step_by(1000) {
                cache.push_bytes(&ramp(1000.min(total - start), 1, start));
            }
        })
    }

    #[test]
    fn reads_across_chunks_while_filling_and_after_completion() {
        gst::init().unwrap();
        let cache = Arc::new(PcmCache::new(48000, 2, u64::MAX));
        let mut reader = cache.reader().unwrap();
        let total = CHUNK_FRAMES * 2 + 100;
        let writing = {
            let cache = cache.clone();
            std::thread::spawn(move || {
                cache.push_bytes(&ramp(CHUNK_FRAMES + 10, 2, 0));
                cache.push_bytes(&ramp(total - CHUNK_FRAMES - 10, 2, CHUNK_FRAMES + 10));
            })
        };
        let mut got = Vec::new();
        while got.len() < total * 2 {
            let (read, s) = collect(&mut reader, total - got.len() / 2);
            assert!(matches!(read, Read::Frames(_)));
            got.extend(s);
        }
        writing.join().unwrap();
        assert_eq!(got, expect(0, total, 2));
        assert_eq!(cache.complete_frames(), None);

        assert!(!cache.end_pass(), "a complete copy needs no second pass");
        assert_eq!(cache.complete_frames(), Some(total as u64));
        assert_eq!(cache.byte_size(), total as u64 * 4);
        assert_eq!(collect(&mut reader, 1000).0, Read::PassEnd);
        // Looping starts again at frame 0.
        assert!(reader.next_pass());
        assert_eq!(collect(&mut reader, 10).1, expect(0, 10, 2));
    }

    /// The first pass is paced by the copy's own furthest reader: the decoder stays a bounded
    /// lead ahead of it, and waits while no element reads the copy.
    #[test]
    fn a_first_pass_decodes_a_bounded_lead_ahead_of_its_furthest_reader() {
        gst::init().unwrap();
        let cache = Arc::new(PcmCache::new(8000, 1, u64::MAX));
        let ahead = cache.frames_in(DECODE_AHEAD_MAX);
        let mut reader = cache.reader().unwrap();
        let writing = writer(&cache, 0, 40_000);
        let mut got = 0usize;
        while got < 20_000 {
            let (read, s) = collect(&mut reader, 700);
            assert!(matches!(read, Read::Frames(_)));
            assert_eq!(s, expect(got, s.len(), 1));
            got += s.len();
            // At most the lead and one write ahead.
            let held = cache.byte_size() / 2;
            assert!(held <= got as u64 + ahead + 1000, "{held} decoded at {got}");
        }
        // No reader: the decoder waits for one.
        drop(reader);
        std::thread::sleep(Duration::from_millis(50));
        let held = cache.byte_size() / 2;
        assert!(held < 22_000 + ahead, "{held}");
        assert!(!writing.is_finished());
        cache.close();
        writing.join().unwrap();
    }

    #[test]
    fn shared_memories_hold_the_same_samples() {
        gst::init().unwrap();
        let cache = Arc::new(PcmCache::new(8000, 1, u64::MAX));
        let mut reader = cache.reader().unwrap();
        let mut buffer = gst::Buffer::new();
        assert_eq!(reader.share_into(10, buffer.get_mut().unwrap()), None);
        let writing = writer(&cache, 0, CHUNK_FRAMES + 20);
        let pos = CHUNK_FRAMES - 4;
        let mut got = 0;
        while got < pos {
            got += collect(&mut reader, pos - got).1.len();
        }
        writing.join().unwrap();
        cache.end_pass();
        assert_eq!(
            reader.share_into(10, buffer.get_mut().unwrap()),
            Some(Read::Frames(10))
        );
        assert_eq!(buffer.n_memory(), 2);
        let map = buffer.map_readable().unwrap();
        let got: Vec<i16> = map
            .chunks_exact(2)
            .map(|b| i16::from_ne_bytes([b[0], b[1]]))
            .collect();
        assert_eq!(got, expect(pos, 10, 1));
    }

    #[test]
    fn writes_are_refused_once_the_copy_is_complete_or_closed() {
        gst::init().unwrap();
        // (A copy with no reader holds its writer back: one reader lets it write.)
        let complete = Arc::new(PcmCache::new(8000, 1, u64::MAX));
        let _reader = complete.reader().unwrap();
        assert!(complete.push_bytes(&ramp(10, 1, 0)));
        complete.end_pass();
        assert!(!complete.push_bytes(&ramp(10, 1, 10)));
        assert_eq!(complete.complete_frames(), Some(10));
        let closed = PcmCache::new(8000, 1, u64::MAX);
        closed.close();
        assert!(!closed.push_bytes(&ramp(10, 1, 0)));
        assert_eq!(closed.byte_size(), 0);
    }

    #[test]
    fn failure_reaches_readers_after_the_decoded_part() {
        gst::init().unwrap();
        let cache = Arc::new(PcmCache::new(8000, 1, u64::MAX));
        let mut reader = cache.reader().unwrap();
        cache.push_bytes(&ramp(10, 1, 0));
        cache.fail(gst::error_msg!(gst::StreamError::Decode, ("broken")));
        assert_eq!(collect(&mut reader, 20).0, Read::Frames(10));
        assert!(matches!(
            reader.read(20, Wait::default(), || false, |_| ()),
            Err(ReadError::Failed(_))
        ));
    }

    #[test]
    fn a_waiting_reader_is_woken_by_data_by_cancel_and_by_its_deadline() {
        gst::init().unwrap();
        let cache = Arc::new(PcmCache::new(8000, 1, u64::MAX));
        let mut reader = cache.reader().unwrap();
        let reader = std::thread::spawn(move || {
            let mut n = 0;
            let read = reader.read(5, Wait::default(), || false, |s| n += s.len());
            (reader, read, n)
        });
        std::thread::sleep(Duration::from_millis(20));
        cache.push_bytes(&ramp(5, 1, 0));
        let (mut reader, read, n) = reader.join().unwrap();
        assert_eq!((read, n), (Ok(Read::Frames(5)), 5));

        // Nothing more is decoded: a deadline ends the wait with nothing read.
        assert_eq!(reader.read(5, soon(), || false, |_| ()), Ok(Read::NotYet));
        assert_eq!(reader.position(), 5);

        let cancel = Arc::new(AtomicBool::new(false));
        let flag = cancel.clone();
        let waiting = std::thread::spawn(move || {
            reader.read(5, Wait::default(), || flag.load(Ordering::SeqCst), |_| ())
        });
        std::thread::sleep(Duration::from_millis(20));
        cancel.store(true, Ordering::SeqCst);
        cache.wake();
        assert_eq!(waiting.join().unwrap(), Err(ReadError::Cancelled));
    }

    /// A decoder that adds nothing while a reader waits is stalled once the reader's stall
    /// limit passes, with or without a deadline on each read; one that waits for a reader is
    /// not, however long it waits.
    #[test]
    fn a_decoder_that_adds_nothing_is_found_stalled() {
        gst::init().unwrap();
        let stall = Duration::from_millis(60);
        let cache = Arc::new(PcmCache::new(8000, 1, u64::MAX));
        let mut reader = cache.reader().unwrap();
        cache.push_bytes(&ramp(10, 1, 0));
        assert_eq!(collect(&mut reader, 10).0, Read::Frames(10));
        let started = Instant::now();
        let waited = reader.read(
            10,
            Wait {
                deadline: None,
                stall: Some(stall),
            },
            || false,
            |_| (),
        );
        assert!(
            matches!(waited, Err(ReadError::Stalled(d)) if d >= stall),
            "{waited:?}"
        );
        assert!(started.elapsed() >= stall - Duration::from_millis(15));
        // With deadlines (live): NotYet until the stall limit, then Stalled.
        let live = || Wait {
            deadline: Some(Instant::now() + Duration::from_millis(5)),
            stall: Some(stall),
        };
        cache.push_bytes(&ramp(10, 1, 10));
        assert_eq!(collect(&mut reader, 10).0, Read::Frames(10));
        assert_eq!(reader.read(10, live(), || false, |_| ()), Ok(Read::NotYet));
        std::thread::sleep(stall);
        assert!(matches!(
            reader.read(10, live(), || false, |_| ()),
            Err(ReadError::Stalled(_))
        ));
    }

    #[test]
    fn a_seek_waits_for_its_frame_and_lands_past_a_trimmed_head() {
        gst::init().unwrap();
        let cache = Arc::new(PcmCache::new(8000, 1, u64::MAX));
        let mut reader = cache.reader().unwrap();
        reader.set_shape(Shape {
            trim: Some(0),
            max_trim: 100,
            crossfade: 0,
            looping: true,
        });
        // 50 silent frames: the head is not known before 100 frames are decoded.
        cache.push_bytes(&[0u8; 100]);
        assert!(reader.seek_output(200, 0));
        assert_eq!(reader.read(5, soon(), || false, |_| ()), Ok(Read::NotYet));
        // Then a ramp from 1: frame 50 + k holds k + 1. The decoder runs ahead of the seek.
        let writing = {
            let cache = cache.clone();
            std::thread::spawn(move || cache.push_bytes(&ramp(1000, 1, 1)))
        };
        assert_eq!(
            collect(&mut reader, 5),
            (Read::Frames(5), expect(201, 5, 1))
        );

        // Past what is decoded: it waits, and once the copy is complete (1000 frames from the
        // head) it wraps into the loop.
        assert!(reader.seek_output(5_003, 0));
        writing.join().unwrap();
        assert_eq!(reader.read(5, soon(), || false, |_| ()), Ok(Read::NotYet));
        assert!(!cache.end_pass());
        assert_eq!(collect(&mut reader, 5), (Read::Frames(5), expect(4, 5, 1)));
    }

    #[test]
    fn a_seek_into_the_last_seam_of_a_filling_copy_waits_for_its_end() {
        gst::init().unwrap();
        let cache = Arc::new(PcmCache::new(8000, 1, u64::MAX));
        let shape = Shape {
            trim: None,
            max_trim: 0,
            crossfade: 100,
            looping: true,
        };
        let mut reader = cache.reader().unwrap();
        reader.set_shape(shape);
        // Output frame 950 is 50 frames into the first seam (the first pass ends at 900), but
        // where that pass ends is not known while the copy may still grow.
        assert!(reader.seek_output(950, 0));
        let writing = {
            let cache = cache.clone();
            std::thread::spawn(move || cache.push_bytes(&ramp(1000, 1, 1)))
        };
        writing.join().unwrap();
        assert_eq!(reader.read(5, soon(), || false, |_| ()), Ok(Read::NotYet));
        assert!(!cache.end_pass());
        let (read, seeked) = collect(&mut reader, 5);
        assert_eq!(read, Read::Frames(5));

        // What a reader playing from the start plays there.
        let mut played = cache.reader().unwrap();
        played.set_shape(shape);
        let mut all = Vec::new();
        while all.len() < 955 {
            let (read, s) = collect(&mut played, 955 - all.len());
            match read {
                Read::Frames(_) => all.extend(s),
                _ => assert!(played.next_pass()),
            }
        }
        assert_eq!(seeked, all[950..955]);
    }

    #[test]
    fn a_copy_over_its_limit_becomes_a_bounded_window() {
        gst::init().unwrap();
        // Mono 8 kHz: a chunk is 32 KiB. The limit is three chunks.
        let limit = 3 * CHUNK_FRAMES as u64 * 2;
        let cache = Arc::new(PcmCache::new(8000, 1, limit));
        let mut reader = cache.reader().unwrap();
        let total = CHUNK_FRAMES * 40;
        let writing = writer(&cache, 0, total);
        let mut got = 0usize;
        let mut most_held = 0u64;
        while got < total {
            let (read, s) = collect(&mut reader, 700);
            assert!(matches!(read, Read::Frames(_)), "{read:?} at {got}");
            assert_eq!(s, expect(got, s.len(), 1), "at frame {got}");
            got += s.len();
            most_held = most_held.max(cache.byte_size());
        }
        writing.join().unwrap();
        // It streams: the next pass is asked for, and memory stayed near the limit, far below
        // the 1.3 MB the file decodes to.
        assert!(cache.end_pass());
        assert_eq!(cache.complete_frames(), None);
        assert!(
            most_held <= limit + 2 * CHUNK_FRAMES as u64 * 2,
            "held {most_held}"
        );
        // A late reader cannot start a stream whose start is gone.
        assert!(cache.reader().is_none());
    }

    #[test]
    fn a_stream_continues_across_passes_and_ends_when_it_cannot_loop() {
        gst::init().unwrap();
        let cache = Arc::new(PcmCache::streaming(8000, 1, 1 << 20));
        let mut reader = cache.reader().unwrap();
        // Two passes of 300 frames, decoded ahead of the reader.
        cache.push_bytes(&ramp(300, 1, 0));
        assert!(cache.end_pass());
        cache.push_bytes(&ramp(300, 1, 0));
        assert!(cache.end_pass());

        assert_eq!(
            collect(&mut reader, 1000),
            (Read::Frames(300), expect(0, 300, 1))
        );
        assert_eq!(collect(&mut reader, 1000).0, Read::PassEnd);
        assert!(reader.next_pass());
        assert_eq!(
            collect(&mut reader, 1000),
            (Read::Frames(300), expect(0, 300, 1))
        );
        assert_eq!(collect(&mut reader, 1000).0, Read::PassEnd);
        // The source could not seek back for a third pass.
        cache.end_stream("cannot loop".to_owned());
        assert!(reader.next_pass());
        assert_eq!(
            reader.read(10, Wait::default(), || false, |_| ()),
            Err(ReadError::Ended("cannot loop".to_owned()))
        );
    }

    /// Readers `offsets` frames behind the first, reading in turn from one thread (the first
    /// 700 frames at a time, each other one up to its offset behind it) while the writer fills
    /// a window of `limit` bytes (mono 8 kHz): every reader gets every frame.
    fn readers_in_turn(limit: u64, offsets: &[usize], total: usize) {
        gst::init().unwrap();
        let cache = Arc::new(PcmCache::streaming(8000, 1, limit));
        let mut readers: Vec<(Reader, usize)> = offsets
            .iter()
            .map(|_| (cache.reader().unwrap(), 0))
            .collect();
        let writing = writer(&cache, 0, total);
        while readers.iter().any(|(_, got)| *got < total) {
            let first = readers[0].1;
            for (i, ((reader, got), offset)) in readers.iter_mut().zip(offsets).enumerate() {
                let target = match i {
                    0 => (first + 700).min(total),
                    _ if first == total => total,
                    _ => first.saturating_sub(*offset),
                };
                while *got < target {
                    let (read, s) = collect(reader, target - *got);
                    assert!(matches!(read, Read::Frames(_)), "{read:?} at {got}");
                    assert_eq!(s, expect(*got, s.len(), 1), "reader {i} at frame {got}");
                    *got += s.len();
                    assert_eq!(reader.take_lost(), 0, "reader {i} lost frames");
                }
            }
        }
        cache.close();
        writing.join().unwrap();
    }

    #[test]
    fn readers_a_few_hundred_frames_apart_lose_nothing_across_chunk_boundaries() {
        for limit in [64 * 1024, 2_000_000] {
            readers_in_turn(limit, &[0, 300], STREAM_CHUNK_FRAMES * 30);
            readers_in_turn(limit, &[0, 300, 700], STREAM_CHUNK_FRAMES * 30);
        }
    }

    #[test]
    fn a_reader_900000_frames_behind_within_a_2_mb_window_loses_nothing() {
        gst::init().unwrap();
        // 2 MB of mono: 1,000,000 frames.
        let cache = Arc::new(PcmCache::streaming(8000, 1, 2_000_000));
        let mut ahead = cache.reader().unwrap();
        let mut behind = cache.reader().unwrap();
        let total = 1_100_000;
        let writing = writer(&cache, 0, total);
        let (mut a, mut b) = (0usize, 0usize);
        while b < total - 1_000 {
            if a < total && a < b + 900_000 {
                let (_, s) = collect(&mut ahead, 7_000);
                assert_eq!(s, expect(a, s.len(), 1), "ahead at {a}");
                a += s.len();
            } else {
                let (_, s) = collect(&mut behind, 7_000);
                assert_eq!(s, expect(b, s.len(), 1), "behind at {b}");
                b += s.len();
            }
            assert_eq!(ahead.take_lost() + behind.take_lost(), 0);
        }
        writing.join().unwrap();
    }

    #[test]
    fn a_reader_that_stops_reading_is_moved_on_and_told_how_much_it_lost() {
        gst::init().unwrap();
        // Mono 8 kHz, a window of 40,000 frames.
        let cache = Arc::new(PcmCache::streaming(8000, 1, 80_000));
        let mut active = cache.reader().unwrap();
        let mut paused = cache.reader().unwrap();
        let total = STREAM_CHUNK_FRAMES * 40;
        let writing = writer(&cache, 0, 1000);
        writing.join().unwrap();
        assert_eq!(collect(&mut paused, 100).0, Read::Frames(100));
        let writing = writer(&cache, 1000, total);
        // The active reader gets through it all while the other one reads nothing: it waits
        // for the paused one only until that one counts as stalled.
        let mut got = 0usize;
        while got < total {
            let (read, s) = collect(&mut active, 700);
            assert!(matches!(read, Read::Frames(_)), "{read:?} at frame {got}");
            assert_eq!(s, expect(got, s.len(), 1), "at frame {got}");
            got += s.len();
            assert!(cache.byte_size() <= 80_000 + 2 * STREAM_CHUNK_FRAMES as u64 * 2);
        }
        writing.join().unwrap();
        assert_eq!(active.take_lost(), 0);
        // The paused one goes on from where it was moved to, told how far.
        let (read, samples) = collect(&mut paused, 10);
        assert_eq!(read, Read::Frames(10));
        let lost = paused.take_lost();
        assert!(lost > STREAM_CHUNK_FRAMES as u64 * 20, "lost {lost}");
        assert_eq!(paused.position(), 100 + lost + 10);
        assert_eq!(samples, expect(100 + lost as usize, 10, 1));
    }

    #[test]
    fn an_empty_pass_is_not_looped() {
        gst::init().unwrap();
        let cache = Arc::new(PcmCache::streaming(8000, 1, 1 << 20));
        let mut reader = cache.reader().unwrap();
        assert!(!cache.end_pass(), "no second pass of an empty stream");
        assert_eq!(collect(&mut reader, 10).0, Read::PassEnd);
        assert!(!reader.next_pass());
    }
}
