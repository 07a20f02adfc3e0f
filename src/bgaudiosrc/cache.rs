// SPDX-License-Identifier: MIT OR Apache-2.0

//! The PCM cache: the decoded file as interleaved S16 at one rate and channel count.
//!
//! The decoder appends to it while the element reads from it, so the first buffer flows while the
//! first pass is still decoding; once the decoder reaches the end the cache is frozen and every
//! later loop replays it without a lock and without decoding again.
//!
//! Storage is a list of fixed-size chunks (`CHUNK_FRAMES` frames each, the last one sized exactly),
//! so filling never reallocates and the byte size is always known. Each sealed chunk is also
//! wrapped in a `gst::Memory` sharing the same samples, so a reader can hand out buffers that
//! point into the cache instead of copying. The cache is `Send + Sync` and meant to be held in an
//! `Arc` by any number of readers.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

use super::imp::CAT;

/// Frames per chunk: 16384 frames is 64 KiB of 48 kHz stereo.
const CHUNK_FRAMES: usize = 16_384;

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

/// Why a read returned no samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// `wake()` was called while `cancelled()` is true: the reader is flushing.
    Cancelled,
    /// The decoder failed before it reached the requested position.
    Failed(gst::ErrorMessage),
}

#[derive(Debug, Default)]
enum Status {
    #[default]
    Filling,
    Failed(gst::ErrorMessage),
}

#[derive(Debug, Default)]
struct Filling {
    chunks: Vec<Chunk>,
    tail: Vec<i16>,
    frames: u64,
    status: Status,
    /// Bounded mode: chunks dropped from the front since the start.
    first_chunk: u64,
    /// Bounded mode: the reader's position; chunks before it are dropped.
    read_pos: u64,
    /// Bounded mode: the decoder reached the end of the file (until `restart`).
    pass_ended: bool,
    /// The decoder is shutting down: writes return at once.
    closed: bool,
}

#[derive(Debug)]
struct Frozen {
    chunks: Vec<Chunk>,
    frames: u64,
}

/// Decoded S16 audio, filled once by a decoder and read by any number of readers.
#[derive(Debug)]
pub struct PcmCache {
    rate: u32,
    channels: usize,
    filling: Mutex<Filling>,
    cond: Condvar,
    frozen: OnceLock<Frozen>,
    /// Bounded (streaming) mode: at most this many chunks are held; the writer waits for the
    /// reader, and the end of the file is a pass that `restart` begins again instead of a freeze.
    bounded: Option<usize>,
}

impl PcmCache {
    pub fn new(rate: u32, channels: u32) -> Self {
        PcmCache {
            rate,
            channels: channels.max(1) as usize,
            filling: Mutex::new(Filling::default()),
            cond: Condvar::new(),
            frozen: OnceLock::new(),
            bounded: None,
        }
    }

    /// A window over a stream that is too long to keep: at most `max_bytes` (rounded up to
    /// two chunks) of decoded audio are held at any time, for one reader. The writer waits
    /// while the window is full, so memory stays flat however long the file is.
    pub fn bounded(rate: u32, channels: u32, max_bytes: u64) -> Self {
        let chunk_bytes = (CHUNK_FRAMES * channels.max(1) as usize * 2) as u64;
        let chunks = max_bytes.div_ceil(chunk_bytes).max(2) as usize;
        PcmCache {
            bounded: Some(chunks),
            ..PcmCache::new(rate, channels)
        }
    }

    pub fn is_bounded(&self) -> bool {
        self.bounded.is_some()
    }

    pub fn rate(&self) -> u32 {
        self.rate
    }

    fn chunk_samples(&self) -> usize {
        CHUNK_FRAMES * self.channels
    }

    fn lock(&self) -> MutexGuard<'_, Filling> {
        // A reader or writer that panicked cannot leave `Filling` half-updated in a way that
        // matters more than losing the cache, so carry on with the data.
        self.filling.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The total number of frames once decoding is complete.
    pub fn complete_frames(&self) -> Option<u64> {
        self.frozen.get().map(|f| f.frames)
    }

    /// The decoder's failure, if it failed.
    pub fn failed(&self) -> Option<gst::ErrorMessage> {
        match &self.lock().status {
            Status::Failed(err) => Some(err.clone()),
            Status::Filling => None,
        }
    }

    /// Frames decoded so far.
    pub fn frames(&self) -> u64 {
        match self.frozen.get() {
            Some(f) => f.frames,
            None => self.lock().frames,
        }
    }

    /// Bytes of decoded audio held.
    pub fn byte_size(&self) -> u64 {
        self.frames() * self.channels as u64 * 2
    }

    /// Appends native-endian interleaved S16 bytes (whole frames). Called by the decoder; in
    /// bounded mode it waits while the window is full.
    pub fn push_bytes(&self, bytes: &[u8]) {
        if self.frozen.get().is_some() {
            return;
        }
        let chunk_samples = self.chunk_samples();
        let mut filling = self.lock();
        let mut samples = bytes
            .chunks_exact(2)
            .map(|b| i16::from_ne_bytes([b[0], b[1]]));
        loop {
            if let Some(max_chunks) = self.bounded {
                while filling.chunks.len() >= max_chunks && !filling.closed {
                    filling = self.cond.wait(filling).unwrap_or_else(|e| e.into_inner());
                }
            }
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
            // Visible to readers at once: a bounded writer may wait for them below.
            filling.frames += (added / self.channels) as u64;
            self.cond.notify_all();
            if filling.tail.len() < chunk_samples {
                break;
            }
            let full = std::mem::take(&mut filling.tail);
            filling.chunks.push(Chunk::new(full));
        }
    }

    /// Shuts writes off (a waiting writer returns): the decoder is going away.
    pub fn close(&self) {
        self.lock().closed = true;
        self.cond.notify_all();
    }

    /// Bounded mode: the decoder starts the file again; the next pass continues the stream.
    pub fn restart(&self) {
        self.lock().pass_ended = false;
    }

    /// Marks the end of the decoded data: the cache is immutable from now on.
    pub fn finish(&self) {
        let mut filling = self.lock();
        if let Status::Failed(_) = filling.status {
            return;
        }
        if self.bounded.is_some() {
            // The end of one pass, not of the data: readers see it once they catch up.
            filling.pass_ended = true;
            drop(filling);
            self.cond.notify_all();
            return;
        }
        let mut chunks = std::mem::take(&mut filling.chunks);
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
            "Cache complete: {} frames at {} Hz, {} channels, {} bytes",
            frames,
            self.rate,
            self.channels,
            self.byte_size()
        );
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

    /// Calls `visit` with the samples of up to `max_frames` frames starting at frame `pos`, in
    /// order and in as few slices as the chunks allow, and returns the number of frames visited.
    ///
    /// Waits while the frames at `pos` are not decoded yet; returns `Ok(0)` at the end of the
    /// complete data. `cancelled` is checked before every wait; `wake()` interrupts a wait.
    pub fn read(
        &self,
        pos: u64,
        max_frames: usize,
        cancelled: impl Fn() -> bool,
        mut visit: impl FnMut(&[i16]),
    ) -> Result<usize, ReadError> {
        if let Some(frozen) = self.frozen.get() {
            return Ok(self.read_frozen(frozen, pos, max_frames, &mut visit));
        }
        let mut filling = self.lock();
        if self.bounded.is_some() {
            self.consume_until(&mut filling, pos);
        }
        loop {
            if let Some(frozen) = self.frozen.get() {
                drop(filling);
                return Ok(self.read_frozen(frozen, pos, max_frames, &mut visit));
            }
            if filling.frames > pos {
                return Ok(Self::read_chunks(
                    &filling.chunks,
                    &filling.tail,
                    filling.first_chunk,
                    filling.frames,
                    self.channels,
                    pos,
                    max_frames,
                    &mut visit,
                ));
            }
            if let Status::Failed(ref err) = filling.status {
                return Err(ReadError::Failed(err.clone()));
            }
            if filling.pass_ended {
                return Ok(0);
            }
            if cancelled() {
                return Err(ReadError::Cancelled);
            }
            filling = self.cond.wait(filling).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Appends to `buffer` memories that share the cache's samples for up to `max_frames` frames
    /// from `pos`, without copying. Only possible once the cache is complete: returns `None` before.
    pub fn share_into(
        &self,
        pos: u64,
        max_frames: usize,
        buffer: &mut gst::BufferRef,
    ) -> Option<usize> {
        let frozen = self.frozen.get()?;
        if pos >= frozen.frames {
            return Some(0);
        }
        let frames = (max_frames as u64).min(frozen.frames - pos) as usize;
        let bpf = self.channels * 2;
        let mut chunk = (pos / CHUNK_FRAMES as u64) as usize;
        let mut offset = (pos % CHUNK_FRAMES as u64) as usize;
        let mut left = frames;
        while left > 0 {
            let mem = &frozen.chunks[chunk].memory;
            let in_chunk = (mem.size() / bpf - offset).min(left);
            buffer.append_memory(mem.share(offset * bpf..(offset + in_chunk) * bpf));
            left -= in_chunk;
            chunk += 1;
            offset = 0;
        }
        Some(frames)
    }

    fn read_frozen(
        &self,
        frozen: &Frozen,
        pos: u64,
        max_frames: usize,
        visit: &mut impl FnMut(&[i16]),
    ) -> usize {
        Self::read_chunks(
            &frozen.chunks,
            &[],
            0,
            frozen.frames,
            self.channels,
            pos,
            max_frames,
            visit,
        )
    }

    /// Bounded mode: drops the chunks the reader has passed and wakes a waiting writer.
    fn consume_until(&self, filling: &mut Filling, pos: u64) {
        filling.read_pos = filling.read_pos.max(pos);
        let passed = (filling.read_pos / CHUNK_FRAMES as u64).saturating_sub(filling.first_chunk);
        let passed = (passed as usize).min(filling.chunks.len());
        if passed > 0 {
            filling.chunks.drain(..passed);
            filling.first_chunk += passed as u64;
            self.cond.notify_all();
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn read_chunks(
        chunks: &[Chunk],
        tail: &[i16],
        first_chunk: u64,
        total_frames: u64,
        channels: usize,
        pos: u64,
        max_frames: usize,
        visit: &mut impl FnMut(&[i16]),
    ) -> usize {
        if pos >= total_frames {
            return 0;
        }
        let frames = (max_frames as u64).min(total_frames - pos) as usize;
        let mut chunk = (pos / CHUNK_FRAMES as u64 - first_chunk) as usize;
        let mut offset = (pos % CHUNK_FRAMES as u64) as usize * channels;
        let mut left = frames * channels;
        while left > 0 {
            let samples: &[i16] = match chunks.get(chunk) {
                Some(c) => &c.samples,
                None => tail,
            };
            let n = (samples.len() - offset).min(left);
            visit(&samples[offset..offset + n]);
            left -= n;
            chunk += 1;
            offset = 0;
        }
        frames
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(frames: usize, channels: usize, start: usize) -> Vec<u8> {
        (start * channels..(start + frames) * channels)
            .flat_map(|i| ((i % 30000) as i16).to_ne_bytes())
            .collect()
    }

    fn collect(cache: &PcmCache, pos: u64, n: usize) -> Vec<i16> {
        let mut out = Vec::new();
        cache
            .read(pos, n, || false, |s| out.extend_from_slice(s))
            .unwrap();
        out
    }

    #[test]
    fn reads_across_chunks_while_filling_and_after_freeze() {
        gst::init().unwrap();
        let cache = PcmCache::new(48000, 2);
        let total = CHUNK_FRAMES * 2 + 100;
        cache.push_bytes(&ramp(CHUNK_FRAMES + 10, 2, 0));
        cache.push_bytes(&ramp(total - CHUNK_FRAMES - 10, 2, CHUNK_FRAMES + 10));
        let expect: Vec<i16> = (0..total * 2).map(|i| (i % 30000) as i16).collect();

        let pos = CHUNK_FRAMES as u64 - 5;
        let got = collect(&cache, pos, CHUNK_FRAMES + 50);
        assert_eq!(
            got,
            &expect[pos as usize * 2..(pos as usize + CHUNK_FRAMES + 50) * 2]
        );
        assert_eq!(cache.complete_frames(), None);

        cache.finish();
        assert_eq!(cache.complete_frames(), Some(total as u64));
        assert_eq!(cache.byte_size(), total as u64 * 4);
        let got = collect(&cache, 0, total + 1000);
        assert_eq!(got, expect);
        assert_eq!(collect(&cache, total as u64, 10), Vec::<i16>::new());
    }

    #[test]
    fn shared_memories_hold_the_same_samples() {
        gst::init().unwrap();
        let cache = PcmCache::new(8000, 1);
        let mut buffer = gst::Buffer::new();
        assert_eq!(cache.share_into(0, 10, buffer.get_mut().unwrap()), None);
        cache.push_bytes(&ramp(CHUNK_FRAMES + 20, 1, 0));
        cache.finish();
        let pos = CHUNK_FRAMES as u64 - 4;
        assert_eq!(
            cache.share_into(pos, 10, buffer.get_mut().unwrap()),
            Some(10)
        );
        assert_eq!(buffer.n_memory(), 2);
        let map = buffer.map_readable().unwrap();
        let got: Vec<i16> = map
            .chunks_exact(2)
            .map(|b| i16::from_ne_bytes([b[0], b[1]]))
            .collect();
        let expect: Vec<i16> = (pos..pos + 10).map(|i| i as i16).collect();
        assert_eq!(got, expect);
    }

    #[test]
    fn failure_reaches_readers_after_the_decoded_part() {
        gst::init().unwrap();
        let cache = PcmCache::new(8000, 1);
        cache.push_bytes(&ramp(10, 1, 0));
        cache.fail(gst::error_msg!(gst::StreamError::Decode, ("broken")));
        assert_eq!(collect(&cache, 0, 20).len(), 10);
        assert!(matches!(
            cache.read(10, 20, || false, |_| ()),
            Err(ReadError::Failed(_))
        ));
    }

    #[test]
    fn a_waiting_reader_is_woken_by_data_and_by_cancel() {
        gst::init().unwrap();
        let cache = Arc::new(PcmCache::new(8000, 1));
        let c = cache.clone();
        let reader = std::thread::spawn(move || {
            let mut n = 0;
            c.read(0, 5, || false, |s| n += s.len()).map(|_| n)
        });
        std::thread::sleep(std::time::Duration::from_millis(20));
        cache.push_bytes(&ramp(5, 1, 0));
        assert_eq!(reader.join().unwrap(), Ok(5));

        let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (c, flag) = (cache.clone(), cancel.clone());
        let reader = std::thread::spawn(move || {
            c.read(
                100,
                5,
                || flag.load(std::sync::atomic::Ordering::SeqCst),
                |_| (),
            )
        });
        std::thread::sleep(std::time::Duration::from_millis(20));
        cancel.store(true, std::sync::atomic::Ordering::SeqCst);
        cache.wake();
        assert_eq!(reader.join().unwrap(), Err(ReadError::Cancelled));
    }
}
