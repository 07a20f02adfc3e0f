// SPDX-License-Identifier: MIT OR Apache-2.0

//! One decoded copy per file and output format per process.
//!
//! Every `bgaudiosrc` that plays the same file at the same rate, channel count and channel layout
//! holds the same `Entry`: one `PcmCache`, filled by one decode chain. The key includes the
//! file's size and modification time, so a file changed on disk is a new entry. The registry only
//! holds weak references: an entry, its samples and its decode chain are freed when the last
//! element lets go of it.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, Weak};
use std::time::SystemTime;

use super::cache::PcmCache;
use super::decoder::{Decoder, NativeFormat};
use super::imp::CAT;

/// The file as it is on disk: what makes two locations the same audio.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileId {
    pub path: std::path::PathBuf,
    pub size: u64,
    pub modified: Option<SystemTime>,
}

/// One decoded copy: a file in one output format.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub file: FileId,
    pub rate: u32,
    pub channels: u32,
    pub channel_mask: u64,
}

/// A shared decoded copy and the decode chain that fills it.
#[derive(Debug)]
pub struct Entry {
    pub cache: Arc<PcmCache>,
    /// The decode chain while it fills the cache; dropped once the cache is complete (or with
    /// the entry), which shuts its private pipeline down.
    decoder: Mutex<Option<Decoder>>,
    key: Option<CacheKey>,
}

impl Entry {
    fn decoder(&self) -> MutexGuard<'_, Option<Decoder>> {
        self.decoder.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Shuts the decode chain down once the cache is complete. Call it from a thread that is
    /// not one of the decode chain's own.
    pub fn release_decoder(&self) {
        if self.cache.complete_frames().is_none() {
            return;
        }
        let decoder = self.decoder().take();
        if decoder.is_some() {
            gst::debug!(CAT, "Cache complete, shutting its decoder down");
        }
        drop(decoder);
    }

    /// Bounded mode: starts the next pass over the file.
    pub fn rewind(&self) -> Result<(), gst::ErrorMessage> {
        self.cache.restart();
        match self.decoder().as_ref() {
            Some(decoder) => decoder.rewind(),
            None => Ok(()),
        }
    }

    /// The decoder's idea of the file's length, while it runs.
    pub fn duration(&self) -> Option<gst::ClockTime> {
        self.decoder().as_ref().and_then(|d| d.duration())
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else {
            return;
        };
        let mut map = registry();
        // The slot may already hold a newer entry for the same key: only remove a dead one.
        if map.get(&key).is_some_and(|w| w.strong_count() == 0) {
            map.remove(&key);
        }
        gst::debug!(CAT, "Released the decoded copy of {:?}", key.file.path);
    }
}

static REGISTRY: LazyLock<Mutex<HashMap<CacheKey, Weak<Entry>>>> = LazyLock::new(Default::default);

fn registry() -> MutexGuard<'static, HashMap<CacheKey, Weak<Entry>>> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// The entry for `key`, shared with the elements already playing it, or a new one whose decode
/// chain `decoder` gives (it is only called when no entry exists) and `start` sets to fill the
/// cache. With no key (a stream that is not a local file) the entry is private. Returns whether
/// the entry is new.
pub fn obtain(
    key: Option<CacheKey>,
    info: &gst_audio::AudioInfo,
    bounded: Option<u64>,
    decoder: impl FnOnce() -> Result<Decoder, gst::ErrorMessage>,
    start: impl FnOnce(&mut Decoder, &Arc<Entry>) -> Result<(), gst::ErrorMessage>,
) -> Result<(Arc<Entry>, bool), gst::ErrorMessage> {
    let new_entry = |key: Option<CacheKey>| {
        let cache = match bounded {
            Some(max_bytes) => PcmCache::bounded(info.rate(), info.channels(), max_bytes),
            None => PcmCache::new(info.rate(), info.channels()),
        };
        Arc::new(Entry {
            cache: Arc::new(cache),
            decoder: Mutex::new(None),
            key,
        })
    };
    // A bounded cache is a window for one reader: never shared.
    let Some(key) = key.filter(|_| bounded.is_none()) else {
        let entry = new_entry(None);
        start_entry(&entry, decoder()?, start)?;
        return Ok((entry, true));
    };

    // The lock is held while a new entry starts, so two elements starting together on the
    // same file do not both decode it. Entries are only ever dropped after it is released:
    // dropping the last reference takes the lock again (`Entry::drop`).
    let mut map = registry();
    let existing = map.get(&key).and_then(Weak::upgrade);
    if let Some(entry) = existing.as_ref().filter(|e| e.cache.failed().is_none()) {
        let entry = entry.clone();
        drop(map);
        gst::debug!(CAT, "Sharing the decoded copy of {:?}", key.file.path);
        return Ok((entry, false));
    }
    let entry = new_entry(Some(key.clone()));
    let started = decoder().and_then(|decoder| start_entry(&entry, decoder, start));
    if started.is_ok() {
        map.insert(key, Arc::downgrade(&entry));
    }
    drop(map);
    drop(existing);
    started.map(|()| (entry, true))
}

/// Decoded formats of files probed before, by file identity (path, size, mtime), so a stale
/// record is never used. Bounded: cleared when it reaches `MAX_NATIVE` files.
static NATIVE: LazyLock<Mutex<HashMap<FileId, NativeFormat>>> = LazyLock::new(Default::default);
const MAX_NATIVE: usize = 1024;
/// One lock per file being probed, so elements starting together on one file probe it once.
static PROBING: LazyLock<Mutex<HashMap<FileId, Arc<Mutex<()>>>>> = LazyLock::new(Default::default);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The decoded format of the file, and the decode chain `open` made to learn it (`None` when
/// the format was known: a file probed before by any element of the process is not opened
/// again, and elements starting together on one file wait for one probe).
pub fn probe(
    file: Option<&FileId>,
    open: impl FnOnce() -> Result<(Decoder, NativeFormat), gst::ErrorMessage>,
) -> Result<(Option<Decoder>, NativeFormat), gst::ErrorMessage> {
    let Some(file) = file else {
        return open().map(|(decoder, native)| (Some(decoder), native));
    };
    let gate = lock(&PROBING).entry(file.clone()).or_default().clone();
    let probed = {
        let _probing = lock(&gate);
        let known = lock(&NATIVE).get(file).copied();
        match known {
            Some(native) => Ok((None, native)),
            None => open().map(|(decoder, native)| {
                let mut natives = lock(&NATIVE);
                if natives.len() >= MAX_NATIVE {
                    natives.clear();
                }
                natives.insert(file.clone(), native);
                (Some(decoder), native)
            }),
        }
    };
    let mut probing = lock(&PROBING);
    // The map's reference and ours: nobody else waits on this file.
    if Arc::strong_count(&gate) == 2 {
        probing.remove(file);
    }
    probed
}

fn start_entry(
    entry: &Arc<Entry>,
    mut decoder: Decoder,
    start: impl FnOnce(&mut Decoder, &Arc<Entry>) -> Result<(), gst::ErrorMessage>,
) -> Result<(), gst::ErrorMessage> {
    start(&mut decoder, entry)?;
    *entry.decoder() = Some(decoder);
    Ok(())
}

/// How much decoded audio the process holds in shared caches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheUsage {
    /// Decoded copies alive (files × output formats).
    pub entries: usize,
    /// Bytes of decoded S16 they hold.
    pub bytes: u64,
}

/// The decoded copies held by the process now, for monitoring memory.
pub fn usage() -> CacheUsage {
    let entries: Vec<Arc<Entry>> = registry().values().filter_map(Weak::upgrade).collect();
    CacheUsage {
        entries: entries.len(),
        bytes: entries.iter().map(|e| e.cache.byte_size()).sum(),
    }
}
