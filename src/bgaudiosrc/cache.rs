// SPDX-License-Identifier: MIT OR Apache-2.0

//! The PCM cache: the decoded file as interleaved S16 at one rate and channel count.
//!
//! One decoder writes, any number of readers read, each through a `Reader` of its own. The first
//! buffer flows while the first pass is still decoding.
//!
//! A cache ends one of two ways:
//! - **Complete**: the decoder reached the end of the file within `limit` bytes. The cache is
//!   frozen, and every later loop replays it without a lock and without decoding again.
//! - **Streaming**: the decoded audio reached `limit` bytes first (or the cache was made
//!   streaming from the start, for a file known to be too long or a live source). From then on it
//!   is a window: chunks every reader has passed are dropped, and the writer waits while it is
//!   a window ahead of the furthest reader or while the cache holds `limit` bytes, so memory stays
//!   bounded whatever the duration is, known, unknown or wrong. Positions keep counting across
//!   passes: the decoder marks the end of each pass (`end_pass`) and starts the next one while
//!   the readers are still a window behind, so a seam costs the readers nothing.
//!
//! Storage is a list of fixed-size chunks (`chunk_frames` frames each, the last one of a complete
//! cache sized exactly), so filling never reallocates. Each sealed chunk is also wrapped in a
//! `gst::Memory` sharing the same samples, so a reader of a complete cache can hand out buffers
//! that point into it instead of copying.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use super::{startup, CAT};

/// Frames per chunk of a cache that may be kept: 16384 frames is 64 KiB of 48 kHz stereo.
pub const CHUNK_FRAMES: usize = 16_384;
/// Frames per chunk of a cache that streams from the start: finer, so the window it holds stays
/// small.
pub const STREAM_CHUNK_FRAMES: usize = 4_096;
/// How far the decoder runs ahead of the furthest reader in streaming mode.
const STREAM_WINDOW_BYTES: u64 = 256 * 1024;
/// How often a writer that gives way to start-ups looks whether they are over. Readers wake it
/// sooner as they move; the lead it keeps (`startup::DECODE_LEAD`) covers the wait.
const STARTUP_POLL: Duration = Duration::from_millis(20);

thread_local! {
    /// This thread writes without waiting (`without_waiting`).
    static UNWAITED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with this thread's writes to any cache never waiting, for a window or for start-ups:
/// an element's streaming thread feeding its own start-up (`feeder`) is the reader it would
/// wait for. It writes a block's worth at a time, so a window holds at most that much more.
pub fn without_waiting<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            UNWAITED.with(|u| u.set(self.0));
        }
    }
    let _reset = Reset(UNWAITED.with(|u| u.replace(true)));
    f()
}

/// Feeds the decoder one step on the calling reader's thread (see `PcmCache::set_feed`):
/// returns whether it added anything, or will (then the reader looks again instead of waiting).
pub type FeedHook = Arc<dyn Fn() -> bool + Send + Sync>;

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
}

#[derive(Debug, Default)]
enum Status {
    #[default]
    Filling,
    Failed(gst::ErrorMessage),
}

#[derive(Debug, Default)]
struct Filling {
    /// Sealed chunks; the first one is chunk number `first_chunk` of the stream.
    chunks: VecDeque<Chunk>,
    first_chunk: u64,
    tail: Vec<i16>,
    /// Frames written since the start of the stream.
    frames: u64,
    status: Status,
    /// Over the limit: a window, not a copy.
    streaming: bool,
    /// Streaming: the stream positions at which passes ended, from pass `first_pass` on.
    pass_ends: VecDeque<u64>,
    first_pass: u64,
    /// Streaming: where the last pass ended (0 before the first).
    last_pass_end: u64,
    /// Streaming: no pass follows the last one; why (for the reader that wanted to loop).
    ended: Option<String>,
    /// Registered readers' (position, pass), by reader id; `None` is a free slot.
    readers: Vec<Option<(u64, u64)>>,
    /// The writer waits for room: readers wake it when they move.
    writer_waiting: bool,
    /// The decoder is shutting down: writes return at once.
    closed: bool,
    /// The most frames a reader stays behind the decoder (see `Shape`): a decoder giving way
    /// to start-ups keeps that much more lead, or such a reader would wait for it.
    lookahead: u64,
}

impl Filling {
    fn furthest_reader(&self) -> Option<u64> {
        self.readers.iter().flatten().map(|(pos, _)| *pos).max()
    }

    fn slowest_reader(&self) -> Option<(u64, u64)> {
        self.readers.iter().flatten().copied().min()
    }
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
    /// The stream's tags as the decoder found them, and how often they changed.
    tags: Mutex<(u64, Option<gst::TagList>)>,
    /// That count, read without the lock by every reader at every buffer.
    tags_generation: AtomicU64,
    /// The loop bounds found for each trim threshold asked for (see `Shape`): the file is
    /// scanned once per threshold, not once per element.
    bounds: Mutex<Vec<(TrimKey, (u64, u64))>>,
    /// The mixed seams made for each (bounds, crossfade) asked for: made once per copy, then
    /// read like the rest of it.
    seams: Mutex<Vec<(SeamKey, Arc<[i16]>)>>,
    /// What the copy is of, for log lines (a copy is shared: no one element logs for it).
    label: OnceLock<gst::glib::GString>,
    /// Called by a reader about to wait for frames not decoded yet (see `set_feed`).
    feed: Mutex<FeedSlot>,
}

/// The feed hook's place (no `Debug` of its own).
#[derive(Default)]
struct FeedSlot(Option<FeedHook>);

impl std::fmt::Debug for FeedSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "FeedSlot(set)"
        } else {
            "FeedSlot(none)"
        })
    }
}

impl PcmCache {
    /// A cache that keeps the whole file if it decodes to at most `limit` bytes, and turns into
    /// a window over the stream when it does not.
    pub fn new(rate: u32, channels: u32, limit: u64) -> Self {
        PcmCache {
            rate,
            channels: channels.max(1) as usize,
            chunk_frames: CHUNK_FRAMES,
            limit,
            filling: Mutex::new(Filling::default()),
            cond: Condvar::new(),
            frozen: OnceLock::new(),
            tags: Mutex::new((0, None)),
            tags_generation: AtomicU64::new(0),
            bounds: Mutex::new(Vec::new()),
            seams: Mutex::new(Vec::new()),
            label: OnceLock::new(),
            feed: Mutex::new(FeedSlot(None)),
        }
    }

    /// A window over the stream from the start: for a file known to decode to more than
    /// `limit`, or a live source.
    pub fn streaming(rate: u32, channels: u32, limit: u64) -> Self {
        let cache = PcmCache {
            chunk_frames: STREAM_CHUNK_FRAMES,
            ..PcmCache::new(rate, channels, limit)
        };
        cache.lock().streaming = true;
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
        // matters more than losing the cache, so carry on with the data.
        self.filling.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The total number of frames once the cache is complete.
    pub fn complete_frames(&self) -> Option<u64> {
        self.frozen.get().map(|f| f.frames)
    }

    /// The decoder's failure, if it failed.
    pub fn failed(&self) -> Option<gst::ErrorMessage> {
        if self.frozen.get().is_some() {
            return None;
        }
        match &self.lock().status {
            Status::Failed(err) => Some(err.clone()),
            Status::Filling => None,
        }
    }

    /// Adds tags the decoder found (later values replace earlier ones).
    pub fn merge_tags(&self, tags: &gst::TagList) {
        let mut held = self.tags.lock().unwrap_or_else(|e| e.into_inner());
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
        let held = self.tags.lock().unwrap_or_else(|e| e.into_inner());
        match &held.1 {
            Some(tags) if held.0 != generation => Some((held.0, tags.clone())),
            _ => None,
        }
    }

    /// Whether the cache is a window over the stream (it streams from the start, or the file
    /// turned out longer than the limit): what it held is let go, so readers cannot go back.
    pub fn is_window(&self) -> bool {
        self.frozen.get().is_none() && self.lock().streaming
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

    /// Whether the writer must wait before adding to the window: it is a window ahead of the
    /// furthest reader, or the cache holds its limit. The bound never falls below two chunks, so
    /// a reader inside the first held chunk can always finish it and let it go.
    fn window_full(&self, filling: &Filling) -> bool {
        if !filling.streaming || filling.closed {
            return false;
        }
        let limit = self.window_limit();
        if Self::held_bytes(filling, self.chunk_samples()) >= limit {
            return true;
        }
        let window = (STREAM_WINDOW_BYTES.min(limit) / self.bpf()).max(self.chunk_frames as u64);
        let first_held = filling.first_chunk * self.chunk_frames as u64;
        let furthest = filling.furthest_reader().unwrap_or(first_held);
        filling.frames >= furthest + window
    }

    /// The most a window holds: the limit, but never less than two chunks.
    fn window_limit(&self) -> u64 {
        self.limit.max(2 * self.chunk_samples() as u64 * 2)
    }

    /// A window at its limit does not wait for a reader that has fallen that far behind the
    /// others (an element paused, or left in a pipeline that stopped pulling): once the furthest
    /// reader has passed the oldest chunk, it goes, and a reader still in it skips ahead when
    /// it reads next. Without this, one such reader would starve every other.
    fn overtake(&self, filling: &mut Filling) {
        if !filling.streaming {
            return;
        }
        let Some(furthest) = filling.furthest_reader() else {
            return;
        };
        let chunk_frames = self.chunk_frames as u64;
        while Self::held_bytes(filling, self.chunk_samples()) >= self.window_limit()
            && !filling.chunks.is_empty()
            && furthest >= (filling.first_chunk + 1) * chunk_frames
        {
            filling.chunks.pop_front();
            filling.first_chunk += 1;
        }
    }

    /// Whether the writer gives way to elements that are starting (`startup`): it is
    /// `DECODE_LEAD` ahead of its furthest reader while some element waits for its first buffer.
    fn yields_to_startup(&self, filling: &Filling) -> bool {
        // A window is paced by its readers already; only filling a copy gives way.
        if filling.closed || filling.streaming || !startup::decoders_yield() {
            return false;
        }
        let lead = startup::DECODE_LEAD.as_nanos() as u64 * self.rate as u64 / 1_000_000_000
            + filling.lookahead;
        let furthest = filling.furthest_reader().unwrap_or(0);
        filling.frames >= furthest + lead
    }

    /// Lets readers that run out of decoded frames feed the decoder themselves, on their own
    /// thread, instead of waiting for it (`None`: they wait). A decode chain does this while
    /// start-ups are under way, so it needs no thread of its own yet (see `feeder`). Readers
    /// waiting already look again.
    pub fn set_feed(&self, feed: Option<FeedHook>) {
        self.feed.lock().unwrap_or_else(|e| e.into_inner()).0 = feed;
        // Under the lock a reader looks at the hook with: none misses it.
        let _filling = self.lock();
        self.cond.notify_all();
    }

    fn feed_hook(&self) -> Option<FeedHook> {
        self.feed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone()
    }

    /// Whether the decoder is `DECODE_LEAD` ahead of the furthest reader (as far as a writer
    /// giving way to start-ups goes), or will add nothing more.
    pub fn has_lead(&self) -> bool {
        if self.frozen.get().is_some() {
            return true;
        }
        let filling = self.lock();
        if filling.closed || !matches!(filling.status, Status::Filling) {
            return true;
        }
        let lead = startup::DECODE_LEAD.as_nanos() as u64 * self.rate as u64 / 1_000_000_000
            + filling.lookahead;
        let furthest = filling.furthest_reader().unwrap_or(0);
        filling.frames >= furthest + lead
    }

    /// Streaming: drops the chunks every reader has passed, and pass ends every reader has
    /// crossed.
    fn drop_passed(&self, filling: &mut Filling) {
        if !filling.streaming {
            return;
        }
        let Some((slowest, slowest_pass)) = filling.slowest_reader() else {
            return;
        };
        let passed = (slowest / self.chunk_frames as u64).saturating_sub(filling.first_chunk);
        let passed = (passed as usize).min(filling.chunks.len());
        if passed > 0 {
            filling.chunks.drain(..passed);
            filling.first_chunk += passed as u64;
        }
        let min_pass = filling
            .readers
            .iter()
            .flatten()
            .map(|(_, pass)| *pass)
            .min()
            .unwrap_or(slowest_pass);
        while filling.first_pass < min_pass && !filling.pass_ends.is_empty() {
            filling.pass_ends.pop_front();
            filling.first_pass += 1;
        }
    }

    /// Appends native-endian interleaved S16 bytes (whole frames). Called by the decoder; in
    /// streaming mode it waits while the window is full.
    pub fn push_bytes(&self, bytes: &[u8]) {
        if self.frozen.get().is_some() {
            return;
        }
        let chunk_samples = self.chunk_samples();
        let mut filling = self.lock();
        let mut samples = bytes
            .chunks_exact(2)
            .map(|b| i16::from_ne_bytes([b[0], b[1]]));
        let unwaited = UNWAITED.with(|u| u.get());
        loop {
            loop {
                self.overtake(&mut filling);
                if unwaited {
                    break;
                }
                if self.window_full(&filling) {
                    filling.writer_waiting = true;
                    filling = self.cond.wait(filling).unwrap_or_else(|e| e.into_inner());
                } else if self.yields_to_startup(&filling) {
                    // Woken when a reader moves; start-up ending is looked for now and then
                    // (the lead covers the time until then).
                    filling.writer_waiting = true;
                    filling = self
                        .cond
                        .wait_timeout(filling, STARTUP_POLL)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                } else {
                    break;
                }
            }
            filling.writer_waiting = false;
            if filling.closed {
                return;
            }
            if filling.tail.capacity() == 0 {
                filling.tail = Vec::with_capacity(chunk_samples);
            }
            let room = chunk_samples - filling.tail.len();
            let before = filling.tail.len();
            filling.tail.extend(samples.by_ref().take(room));
            let added = filling.tail.len() - before;
            filling.frames += (added / self.channels) as u64;
            if filling.tail.len() == chunk_samples {
                let full = std::mem::take(&mut filling.tail);
                filling.chunks.push_back(Chunk::new(full));
            }
            if !filling.streaming && Self::held_bytes(&filling, chunk_samples) > self.limit {
                filling.streaming = true;
                gst::info!(
                    CAT,
                    id = self.label(),
                    "Decoded audio reached max-cache-size ({} bytes) at frame {}: streaming \
                     through a window from now on",
                    self.limit,
                    filling.frames
                );
                self.drop_passed(&mut filling);
            }
            // Visible to readers at once: in streaming mode the writer may wait for them next.
            self.cond.notify_all();
            if samples.len() == 0 {
                break;
            }
        }
    }

    /// The decoder reached the end of the file. A cache that kept it all is complete from now
    /// on; a streaming one marks the end of this pass. Returns whether the decoder should start
    /// the next pass (streaming).
    pub fn end_pass(&self) -> bool {
        let mut filling = self.lock();
        if let Status::Failed(_) = filling.status {
            return false;
        }
        if filling.streaming {
            let frames = filling.frames;
            let another = frames > filling.last_pass_end;
            if filling.pass_ends.back() != Some(&frames) {
                filling.pass_ends.push_back(frames);
            }
            filling.last_pass_end = frames;
            gst::debug!(
                CAT,
                id = self.label(),
                "End of a pass at stream frame {}",
                frames
            );
            if !another && filling.ended.is_none() {
                // A pass with no audio: another one would be as empty.
                filling.ended = Some("the stream holds no more audio".to_owned());
            }
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
        let frames = filling.frames;
        let _ = self.frozen.set(Frozen { chunks, frames });
        drop(filling);
        gst::info!(
            CAT,
            id = self.label(),
            "Cache complete: {} frames at {} Hz, {} channels, {} bytes",
            frames,
            self.rate,
            self.channels,
            frames * self.bpf()
        );
        self.cond.notify_all();
        false
    }

    /// Streaming: no pass follows the last one (the source cannot go back to its start); `why`
    /// is what a reader that wanted to loop reports.
    pub fn end_stream(&self, why: String) {
        let mut filling = self.lock();
        if filling.ended.is_none() {
            filling.ended = Some(why);
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
        let mut filling = self.lock();
        if let Status::Filling = filling.status {
            filling.status = Status::Failed(err);
        }
        drop(filling);
        self.cond.notify_all();
    }

    /// Wakes every reader waiting in `read`, so it can check its `cancelled` condition.
    pub fn wake(&self) {
        let _guard = self.lock();
        self.cond.notify_all();
    }

    /// A reader at the start of the stream, or `None` if the cache is a window already holding
    /// data (a window has no start to give to a reader that comes late, and may have moved on
    /// to later passes).
    pub fn reader(self: &Arc<Self>) -> Option<Reader> {
        let id = if self.frozen.get().is_some() {
            None
        } else {
            let mut filling = self.lock();
            if filling.streaming && filling.frames > 0 {
                return None;
            }
            let id = match filling.readers.iter().position(Option::is_none) {
                Some(free) => free,
                None => {
                    filling.readers.push(None);
                    filling.readers.len() - 1
                }
            };
            filling.readers[id] = Some((0, 0));
            Some(id)
        };
        Some(Reader {
            cache: self.clone(),
            id,
            pass: 0,
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

    fn read_frozen(
        &self,
        frozen: &Frozen,
        pos: u64,
        max_frames: usize,
        visit: &mut impl FnMut(&[i16]),
    ) -> Read {
        match self.read_chunks(
            frozen.chunks.iter(),
            &[],
            0,
            frozen.frames,
            pos,
            max_frames,
            visit,
        ) {
            0 => Read::PassEnd,
            n => Read::Frames(n),
        }
    }

    /// The frames a pass plays, `head..tail`, when leading and trailing frames whose samples are
    /// all at most `threshold` are left out, at most `max_trim` at each end. A copy that is
    /// silent throughout keeps all its frames.
    fn bounds(&self, frozen: &Frozen, threshold: i16, max_trim: u64) -> (u64, u64) {
        let key = (threshold, max_trim);
        let mut known = self.bounds.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, bounds)) = known.iter().find(|(k, _)| *k == key) {
            return *bounds;
        }
        let frames = frozen.frames;
        let loud = |frame: u64| {
            let chunk = &frozen.chunks[(frame / self.chunk_frames as u64) as usize];
            let at = (frame % self.chunk_frames as u64) as usize * self.channels;
            chunk.samples[at..at + self.channels]
                .iter()
                .any(|s| s.unsigned_abs() > threshold.unsigned_abs())
        };
        let first = (0..frames.min(max_trim)).find(|f| loud(*f));
        let last = (frames.saturating_sub(max_trim)..frames)
            .rev()
            .find(|f| loud(*f));
        let bounds = match (first, last) {
            // Silent at both ends: trim only if something in between is not.
            (None, None) if !(0..frames).any(loud) => (0, frames),
            (head, tail) => (
                head.unwrap_or(max_trim.min(frames)),
                tail.map_or(frames.saturating_sub(max_trim), |t| t + 1),
            ),
        };
        let bounds = if bounds.1 > bounds.0 {
            bounds
        } else {
            (0, frames)
        };
        known.push((key, bounds));
        bounds
    }

    /// The crossfade of a seam: the last `length` frames before `tail` fading out (cosine) over
    /// the first `length` frames from `head` fading in (sine). Equal-power curves, so the level
    /// holds across uncorrelated material; rounded, and saturated where correlated material adds
    /// up above full scale. Made once per copy and key.
    fn seam(&self, frozen: &Frozen, key: SeamKey) -> Arc<[i16]> {
        let mut seams = self.seams.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, seam)) = seams.iter().find(|(k, _)| *k == key) {
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
        let mut mixed = Vec::with_capacity(outgoing.len());
        for (i, (a, b)) in outgoing
            .chunks_exact(self.channels)
            .zip(incoming.chunks_exact(self.channels))
            .enumerate()
        {
            let angle = (i as f64 + 0.5) / length as f64 * std::f64::consts::FRAC_PI_2;
            let (fade_in, fade_out) = angle.sin_cos();
            mixed.extend(a.iter().zip(b).map(|(a, b)| {
                (*a as f64 * fade_out + *b as f64 * fade_in)
                    .round()
                    .clamp(-32768.0, 32767.0) as i16
            }));
        }
        let seam: Arc<[i16]> = mixed.into();
        seams.push((key, seam.clone()));
        seam
    }

    /// The first frame of `from..to` (decoded, in a copy still filling) with a sample above
    /// `threshold`.
    fn first_loud_filling(&self, filling: &Filling, threshold: i16, to: u64) -> Option<u64> {
        let mut frame = None;
        let mut seen = 0u64;
        self.read_chunks(
            filling.chunks.iter(),
            &filling.tail,
            filling.first_chunk,
            to,
            0,
            to as usize,
            &mut |samples: &[i16]| {
                if frame.is_none() {
                    if let Some(i) = samples
                        .iter()
                        .position(|s| s.unsigned_abs() > threshold.unsigned_abs())
                    {
                        frame = Some(seen + (i / self.channels) as u64);
                    }
                }
                seen += (samples.len() / self.channels) as u64;
            },
        );
        frame
    }

    /// Visits up to `max_frames` frames from stream frame `pos`, which must be held, and below
    /// `end`. Returns the number of frames visited.
    #[allow(clippy::too_many_arguments)]
    fn read_chunks<'a>(
        &self,
        chunks: impl Iterator<Item = &'a Chunk>,
        tail: &[i16],
        first_chunk: u64,
        end: u64,
        pos: u64,
        max_frames: usize,
        visit: &mut impl FnMut(&[i16]),
    ) -> usize {
        if pos >= end {
            return 0;
        }
        let frames = (max_frames as u64).min(end - pos) as usize;
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
        frames
    }
}

/// One reader's place in a cache: its position (a stream frame) and pass. Registered with the
/// cache, so a streaming cache keeps what the reader has not read yet, and lets go of it when
/// the reader is dropped.
#[derive(Debug)]
pub struct Reader {
    cache: Arc<PcmCache>,
    /// Slot in the cache's reader table; `None` for a reader of a complete cache.
    id: Option<usize>,
    pass: u64,
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

/// How a reader plays the passes of a copy that is kept whole (a window over a stream plays
/// the stream as it is):
/// - `trim`: leading and trailing frames whose samples are all at most this level are left out
///   of every pass, at most `max_trim` frames at each end. While the copy is still filling, the
///   reader stays `max_trim` frames behind the decoder, so it never plays what it would trim.
/// - `crossfade`: with `looping`, each seam overlaps the last `crossfade` frames of the pass
///   with its first ones (equal-power), at most half the pass; the loop period is the pass's
///   length less the crossfade. The reader stays that far behind a filling decoder too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shape {
    pub trim: Option<i16>,
    pub max_trim: u64,
    pub crossfade: u64,
    pub looping: bool,
}

impl Shape {
    /// How far behind a filling decoder the reader stays.
    fn lookahead(&self) -> u64 {
        let trim = if self.trim.is_some() {
            self.max_trim
        } else {
            0
        };
        let crossfade = if self.looping { self.crossfade } else { 0 };
        trim + crossfade
    }

    /// Nothing to shape: buffers can share the copy's memory.
    pub fn is_plain(&self) -> bool {
        self.trim.is_none() && (self.crossfade == 0 || !self.looping)
    }
}

impl Reader {
    /// Sets how the passes are played (see `Shape`); takes effect at once.
    pub fn set_shape(&mut self, shape: Shape) {
        self.at.shape = shape;
    }

    /// Whether the next frames can be shared without a copy: nothing to shape, no seam.
    pub fn can_share(&self) -> bool {
        self.at.shape.is_plain() && self.at.seam.is_none()
    }
    pub fn cache(&self) -> &Arc<PcmCache> {
        &self.cache
    }

    /// The frame this reader reads next: in the file when the cache is complete, in the stream
    /// (counting across passes) when it streams.
    pub fn position(&self) -> u64 {
        self.at.pos
    }

    /// Goes on past the end of a pass: back to the start of a complete cache, or into the next
    /// pass of a streaming one. Returns false, and stays, if the pass held no audio: looping
    /// it would never produce a frame.
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
    /// `first` of the file and each later pass at the head: through the shape's trimmed bounds
    /// and seams, wrapped into the loop period when looping. Placed at the next read (in a copy
    /// still filling, once its head is known: past its end the position reads as the end of
    /// the pass). Returns false, and stays, in a window.
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
    /// While the frames are not decoded yet it waits, until `deadline` if one is given.
    /// `cancelled` is checked before every wait; `PcmCache::wake()` interrupts a wait.
    pub fn read(
        &mut self,
        max_frames: usize,
        deadline: Option<Instant>,
        cancelled: impl Fn() -> bool,
        mut visit: impl FnMut(&[i16]),
    ) -> Result<Read, ReadError> {
        let cache = &*self.cache;
        if let Some(frozen) = cache.frozen.get() {
            return Ok(self.at.read_shaped(cache, frozen, max_frames, &mut visit));
        }
        let id = self.id.unwrap_or(usize::MAX);
        let mut filling = cache.lock();
        // Whether to call the feed hook before waiting (see `PcmCache::set_feed`).
        let mut may_feed = true;
        loop {
            if cache.frozen.get().is_some() {
                drop(filling);
                return self.read(max_frames, deadline, cancelled, visit);
            }
            if !filling.streaming {
                // Before placing a seek too: the decoder must not give way (see
                // `yields_to_startup`) short of what the reader waits for.
                filling.lookahead = filling.lookahead.max(self.at.shape.lookahead());
            }
            let placed = self.at.place_filling(cache, &filling);
            if let Some(slot) = filling.readers.get_mut(id) {
                // A seek not placed yet: the decoder must not give way (see
                // `yields_to_startup`) before the frames it waits for.
                let wanted = self
                    .at
                    .pending
                    .map_or(self.at.pos, |(frame, first)| first + frame);
                *slot = Some((wanted, self.pass));
            }
            cache.drop_passed(&mut filling);
            if filling.writer_waiting {
                cache.cond.notify_all();
            }
            let pass_end = if filling.streaming {
                (self.pass.checked_sub(filling.first_pass))
                    .and_then(|i| filling.pass_ends.get(i as usize).copied())
            } else {
                None
            };
            // At or past it: a seek may have put the reader beyond a pass end it never read.
            if pass_end.is_some_and(|end| self.at.pos >= end) {
                return Ok(Read::PassEnd);
            }
            let held_from = filling.first_chunk * cache.chunk_frames as u64;
            if self.at.pos < held_from {
                // Overtaken (see `overtake`): go on from the oldest frame held, in the pass
                // that holds it.
                gst::warning!(
                    CAT,
                    id = cache.label(),
                    "A reader fell {} frames behind a full window: skipping ahead",
                    held_from - self.at.pos
                );
                self.at.pos = held_from;
                self.pass = filling.first_pass
                    + filling
                        .pass_ends
                        .iter()
                        .take_while(|end| **end <= held_from)
                        .count() as u64;
                self.at.in_pass = 1;
                continue;
            }
            let mut end = pass_end.unwrap_or(filling.frames);
            if !placed {
                // Waits for the head to be decoded.
                end = 0;
            } else if !filling.streaming {
                // Not past what a trim or a seam may still take from the end.
                end = end.saturating_sub(self.at.shape.lookahead());
                if let Some(threshold) = self.at.shape.trim {
                    // Once, before the pass's first frame: past a trimmed head.
                    if self.at.in_pass == 0
                        && self.at.pos < self.at.shape.max_trim
                        && end > self.at.pos
                    {
                        let head = cache
                            .first_loud_filling(&filling, threshold, self.at.shape.max_trim)
                            .unwrap_or(self.at.shape.max_trim);
                        self.at.pos = self.at.pos.max(head);
                    }
                }
            }
            if end > self.at.pos {
                let n = cache.read_chunks(
                    filling.chunks.iter(),
                    &filling.tail,
                    filling.first_chunk,
                    end,
                    self.at.pos,
                    max_frames,
                    &mut visit,
                );
                self.at.pos += n as u64;
                self.at.in_pass += n as u64;
                if let Some(slot) = filling.readers.get_mut(id) {
                    *slot = Some((self.at.pos, self.pass));
                }
                return Ok(Read::Frames(n));
            }
            if let Status::Failed(ref err) = filling.status {
                return Err(ReadError::Failed(err.clone()));
            }
            if let Some(why) = &filling.ended {
                if self.at.pos >= filling.frames {
                    return Err(ReadError::Ended(why.clone()));
                }
            }
            if cancelled() {
                return Err(ReadError::Cancelled);
            }
            if may_feed {
                if let Some(feed) = cache.feed_hook() {
                    // Outside the lock: feeding writes here. Then everything is looked at again
                    // before waiting: the decoder may have moved meanwhile, and told nobody.
                    drop(filling);
                    may_feed = feed();
                    filling = cache.lock();
                    continue;
                }
            }
            may_feed = true;
            filling = match deadline {
                None => cache.cond.wait(filling).unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Ok(Read::NotYet);
                    }
                    cache
                        .cond
                        .wait_timeout(filling, deadline - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }

    /// Appends to `buffer` memories that share a complete cache's samples for up to
    /// `max_frames` frames from the reader's position, without copying, and moves the position
    /// past them. `None` while the cache is not complete; `PassEnd` at its end.
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
    /// Reads a complete copy as the shape says: within the trimmed bounds, and through the
    /// crossfade at a seam.
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

    /// The frames a seam overlaps, for passes playing `head..tail`.
    fn crossfade(&self, head: u64, tail: u64) -> u64 {
        if self.shape.looping {
            self.shape.crossfade.min((tail - head) / 2)
        } else {
            0
        }
    }

    /// Places a pending seek (see `Reader::seek_output`) in a complete copy. The first pass
    /// plays from the later of `first` and the head to the end of the pass (the tail, less the
    /// crossfade when looping); each later pass is a seam then the rest of the pass, a period
    /// of the pass's length less the crossfade.
    fn place_frozen(&mut self, cache: &PcmCache, frozen: &Frozen) {
        let Some((frame, first)) = self.pending.take() else {
            return;
        };
        let (head, tail) = self.bounds(cache, frozen);
        let crossfade = self.crossfade(head, tail);
        let end = tail - crossfade;
        let from = head.max(first);
        let first_pass = end.saturating_sub(from);
        self.seam = None;
        if frame < first_pass {
            self.pos = from + frame;
            self.in_pass = frame;
            return;
        }
        let period = end - head;
        if !self.shape.looping || period == 0 {
            // Past the end: the pass ends (and loops, from a complete pass, when looping).
            self.pos = end;
            self.in_pass = frame.max(1);
            return;
        }
        let into = (frame - first_pass) % period;
        if into < crossfade {
            self.seam = Some(into);
            self.pos = end;
        } else {
            self.pos = head + into;
        }
        self.in_pass = into;
    }

    /// Places a pending seek in a copy still filling, once the frame it lands on is decoded
    /// (past the head, which needs the first `max_trim` frames when trimming). Until then it
    /// returns false and the reader waits: for those frames, or for the copy to complete, when
    /// `place_frozen` places it (wrapped into the loop if it is past the end).
    fn place_filling(&mut self, cache: &PcmCache, filling: &Filling) -> bool {
        let Some((frame, first)) = self.pending else {
            return true;
        };
        // A window plays the stream as it is; a copy that ended or failed places it as it can.
        let waits = !filling.streaming
            && filling.ended.is_none()
            && matches!(filling.status, Status::Filling);
        let head = match self.shape.trim {
            Some(threshold) if !filling.streaming => {
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
        self.seam = None;
        self.pos = pos;
        self.in_pass = frame;
        true
    }

    fn read_shaped(
        &mut self,
        cache: &PcmCache,
        frozen: &Frozen,
        max_frames: usize,
        visit: &mut impl FnMut(&[i16]),
    ) -> Read {
        self.place_frozen(cache, frozen);
        let (head, tail) = self.bounds(cache, frozen);
        let crossfade = self.crossfade(head, tail);
        if let Some(done) = self.seam {
            if done >= crossfade {
                self.seam = None;
                self.pos = head + crossfade;
            } else {
                let n = (max_frames as u64).min(crossfade - done);
                let key = (head, tail, crossfade);
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
                return Read::Frames(n as usize);
            }
        }
        self.pos = self.pos.max(head);
        let end = tail - crossfade;
        if self.pos >= end {
            return Read::PassEnd;
        }
        let n = (max_frames as u64).min(end - self.pos) as usize;
        let read = cache.read_frozen(frozen, self.pos, n, visit);
        if let Read::Frames(n) = read {
            self.pos += n as u64;
            self.in_pass += n as u64;
        }
        read
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
            .read(n, None, || false, |s| out.extend_from_slice(s))
            .unwrap();
        (read, out)
    }

    #[test]
    fn reads_across_chunks_while_filling_and_after_completion() {
        gst::init().unwrap();
        let cache = Arc::new(PcmCache::new(48000, 2, u64::MAX));
        let mut reader = cache.reader().unwrap();
        let total = CHUNK_FRAMES * 2 + 100;
        cache.push_bytes(&ramp(CHUNK_FRAMES + 10, 2, 0));
        cache.push_bytes(&ramp(total - CHUNK_FRAMES - 10, 2, CHUNK_FRAMES + 10));

        let mut got = Vec::new();
        while got.len() < (CHUNK_FRAMES + 50) * 2 {
            let (read, s) = collect(&mut reader, CHUNK_FRAMES + 50 - got.len() / 2);
            assert!(matches!(read, Read::Frames(_)));
            got.extend(s);
        }
        assert_eq!(got, expect(0, CHUNK_FRAMES + 50, 2));
        assert_eq!(cache.complete_frames(), None);

        assert!(!cache.end_pass(), "a complete cache needs no second pass");
        assert_eq!(cache.complete_frames(), Some(total as u64));
        assert_eq!(cache.byte_size(), total as u64 * 4);
        let mut rest = Vec::new();
        loop {
            match collect(&mut reader, 1000) {
                (Read::Frames(_), s) => rest.extend(s),
                (read, _) => {
                    assert_eq!(read, Read::PassEnd);
                    break;
                }
            }
        }
        assert_eq!(
            rest,
            expect(CHUNK_FRAMES + 50, total - CHUNK_FRAMES - 50, 2)
        );
        // Looping starts again at frame 0.
        assert!(reader.next_pass());
        assert_eq!(collect(&mut reader, 10).1, expect(0, 10, 2));
    }

    #[test]
    fn shared_memories_hold_the_same_samples() {
        gst::init().unwrap();
        let cache = Arc::new(PcmCache::new(8000, 1, u64::MAX));
        let mut reader = cache.reader().unwrap();
        let mut buffer = gst::Buffer::new();
        assert_eq!(reader.share_into(10, buffer.get_mut().unwrap()), None);
        cache.push_bytes(&ramp(CHUNK_FRAMES + 20, 1, 0));
        cache.end_pass();
        let pos = CHUNK_FRAMES - 4;
        collect(&mut reader, pos);
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
    fn failure_reaches_readers_after_the_decoded_part() {
        gst::init().unwrap();
        let cache = Arc::new(PcmCache::new(8000, 1, u64::MAX));
        let mut reader = cache.reader().unwrap();
        cache.push_bytes(&ramp(10, 1, 0));
        cache.fail(gst::error_msg!(gst::StreamError::Decode, ("broken")));
        assert_eq!(collect(&mut reader, 20).0, Read::Frames(10));
        assert!(matches!(
            reader.read(20, None, || false, |_| ()),
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
            let read = reader.read(5, None, || false, |s| n += s.len());
            (reader, read, n)
        });
        std::thread::sleep(Duration::from_millis(20));
        cache.push_bytes(&ramp(5, 1, 0));
        let (mut reader, read, n) = reader.join().unwrap();
        assert_eq!((read, n), (Ok(Read::Frames(5)), 5));

        // Nothing more is decoded: a deadline ends the wait with nothing read.
        let deadline = Instant::now() + Duration::from_millis(10);
        assert_eq!(
            reader.read(5, Some(deadline), || false, |_| ()),
            Ok(Read::NotYet)
        );
        assert_eq!(reader.position(), 5);

        let cancel = Arc::new(AtomicBool::new(false));
        let flag = cancel.clone();
        let waiting = std::thread::spawn(move || {
            reader.read(5, None, || flag.load(Ordering::SeqCst), |_| ())
        });
        std::thread::sleep(Duration::from_millis(20));
        cancel.store(true, Ordering::SeqCst);
        cache.wake();
        assert_eq!(waiting.join().unwrap(), Err(ReadError::Cancelled));
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
        let soon = || Some(Instant::now() + Duration::from_millis(10));
        // 50 silent frames: the head is not known before 100 frames are decoded.
        cache.push_bytes(&[0u8; 100]);
        assert!(reader.seek_output(200, 0));
        assert_eq!(reader.read(5, soon(), || false, |_| ()), Ok(Read::NotYet));
        // Then a ramp from 1: frame 50 + k holds k + 1.
        cache.push_bytes(&ramp(1000, 1, 1));
        assert_eq!(
            collect(&mut reader, 5),
            (Read::Frames(5), expect(201, 5, 1))
        );

        // Past what is decoded: it waits, and once the copy is complete (1000 frames from the
        // head) it wraps into the loop.
        assert!(reader.seek_output(5_003, 0));
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
        cache.push_bytes(&ramp(1000, 1, 1));
        // Output frame 950 is 50 frames into the first seam (the first pass ends at 900), but
        // where that pass ends is not known while the copy may still grow.
        assert!(reader.seek_output(950, 0));
        let soon = Some(Instant::now() + Duration::from_millis(10));
        assert_eq!(reader.read(5, soon, || false, |_| ()), Ok(Read::NotYet));
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
    fn a_cache_over_its_limit_becomes_a_bounded_window() {
        gst::init().unwrap();
        // Mono 8 kHz: a chunk is 32 KiB. The limit is three chunks.
        let limit = 3 * CHUNK_FRAMES as u64 * 2;
        let cache = Arc::new(PcmCache::new(8000, 1, limit));
        let mut reader = cache.reader().unwrap();
        let total = CHUNK_FRAMES * 40;
        let writer = {
            let cache = cache.clone();
            std::thread::spawn(move || {
                for start in (0..total).step_by(1000) {
                    cache.push_bytes(&ramp(1000.min(total - start), 1, start));
                }
                cache.end_pass()
            })
        };
        let mut got = 0usize;
        let mut most_held = 0u64;
        while got < total {
            let mut ok = true;
            let read = reader
                .read(
                    700,
                    None,
                    || false,
                    |s| {
                        ok &= s == &expect(got, s.len(), 1)[..];
                        got += s.len();
                    },
                )
                .unwrap();
            assert!(ok, "samples differ at frame {got}");
            assert!(matches!(read, Read::Frames(_)), "{read:?} at {got}");
            most_held = most_held.max(cache.byte_size());
        }
        // It streams: the next pass is asked for, and memory stayed near the limit, far below
        // the 1.3 MB the file decodes to.
        assert!(writer.join().unwrap());
        assert_eq!(cache.complete_frames(), None);
        assert!(
            most_held <= limit + 4 * CHUNK_FRAMES as u64 * 2,
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
            reader.read(10, None, || false, |_| ()),
            Err(ReadError::Ended("cannot loop".to_owned()))
        );
    }

    #[test]
    fn a_reader_that_stops_reading_does_not_starve_the_others() {
        gst::init().unwrap();
        // A shared copy of unknown length turns into a window: mono 8 kHz, limit three chunks.
        let limit = 3 * CHUNK_FRAMES as u64 * 2;
        let cache = Arc::new(PcmCache::new(8000, 1, limit));
        let mut active = cache.reader().unwrap();
        let mut paused = cache.reader().unwrap();
        cache.push_bytes(&ramp(1000, 1, 0));
        assert_eq!(collect(&mut paused, 100).0, Read::Frames(100));
        let total = CHUNK_FRAMES * 12;
        let writer = {
            let cache = cache.clone();
            std::thread::spawn(move || {
                for start in (1000..total).step_by(1000) {
                    cache.push_bytes(&ramp(1000.min(total - start), 1, start));
                }
            })
        };
        // The active reader gets through it all while the other one reads nothing.
        let mut got = 0usize;
        while got < total {
            // (A deadline, so a starved reader fails the test instead of hanging it.)
            let deadline = Instant::now() + Duration::from_secs(5);
            let read = active
                .read(
                    700,
                    Some(deadline),
                    || false,
                    |s| {
                        assert_eq!(s, &expect(got, s.len(), 1)[..], "at frame {got}");
                        got += s.len();
                    },
                )
                .unwrap();
            assert!(matches!(read, Read::Frames(_)), "{read:?} at frame {got}");
            assert!(cache.byte_size() <= limit + CHUNK_FRAMES as u64 * 2);
        }
        writer.join().unwrap();
        // The paused one goes on from the oldest frame still held.
        let (read, samples) = collect(&mut paused, 10);
        assert_eq!(read, Read::Frames(10));
        assert!(
            paused.position() > CHUNK_FRAMES as u64 * 8,
            "{}",
            paused.position()
        );
        assert_eq!(samples, expect(paused.position() as usize - 10, 10, 1));
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

    /// A reader short of frames calls the feed hook (on its own thread, outside the cache's
    /// lock) instead of waiting, and reads what it fed; a hook that declines, after the copy
    /// was completed elsewhere meanwhile (as the decoder's task does, telling a reader that
    /// is not waiting yet), does not leave the reader waiting for a wake-up that came before.
    #[test]
    fn readers_feed_through_the_hook_and_see_what_came_meanwhile() {
        gst::init().unwrap();
        let cache = Arc::new(PcmCache::new(8000, 1, u64::MAX));
        let mut reader = cache.reader().unwrap();
        let total = 3000;
        let fed = Arc::new(Mutex::new(0usize));
        let weak = Arc::downgrade(&cache);
        let fed_hook = fed.clone();
        cache.set_feed(Some(Arc::new(move || {
            let Some(cache) = weak.upgrade() else {
                return false;
            };
            let mut fed = fed_hook.lock().unwrap();
            if *fed < 2000 {
                // Fed here, 500 frames a call.
                cache.push_bytes(&ramp(500, 1, *fed));
                *fed += 500;
                true
            } else {
                // The rest comes "from elsewhere", and the hook declines.
                cache.push_bytes(&ramp(total - *fed, 1, *fed));
                *fed = total;
                assert!(!cache.end_pass());
                false
            }
        })));

        // On a thread of its own: a reader that missed the completion would wait for ever.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut got = Vec::new();
            loop {
                match reader.read(700, None, || false, |s| got.extend_from_slice(s)) {
                    Ok(Read::Frames(_)) => (),
                    Ok(Read::PassEnd) => break,
                    other => panic!("{other:?} after {} frames", got.len()),
                }
            }
            let _ = tx.send(got);
        });
        let got = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the reader is still waiting");
        assert_eq!(got, expect(0, total, 1));
        assert_eq!(*fed.lock().unwrap(), total);
        assert_eq!(cache.complete_frames(), Some(total as u64));
    }
}
