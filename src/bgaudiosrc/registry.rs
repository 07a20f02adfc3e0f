// SPDX-License-Identifier: MIT OR Apache-2.0

//! What the elements of a process share: decoded copies, and the formats of files probed before.
//!
//! Every `bgaudiosrc` that plays the same file at the same rate, channel count and channel layout
//! holds the same `Entry`: one `PcmCache`, filled by one decode chain. The key includes the
//! file's size and modification time, so a file changed on disk is a new entry. An element holds
//! its entry through a `Lease`; when the last lease goes, the copy is kept (retained) for the
//! next element that plays the file, within a process-wide budget, least recently used first
//! out: a complete copy, or one whose first pass is still filling, whose decoder then waits
//! for the next reader (at most `MAX_PARKED` of those). Anything else is freed with its decode
//! chain. It also remembers the formats of files probed before, and the probes under way.
//!
//! Its one lock guards bookkeeping only: no decode chain is started, probed or waited for while
//! it is held, and entries are dropped after it is released. A new entry is published before
//! its decode chain starts, and elements that join it meanwhile simply read from its copy,
//! which waits for the data.

use gst::prelude::*;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, Weak};
use std::time::SystemTime;

use super::cache::{PcmCache, Reader};
use super::decoder::{Decoder, NativeFormat, Shared};
use super::CAT;

/// The environment variable that sets the retained-copy budget, in bytes (0 keeps none).
pub const RETAIN_ENV: &str = "GST_BGAUDIO_RETAIN_BYTES";
/// The retained-copy budget when the environment does not set one: a few minutes of stereo.
pub const DEFAULT_RETAIN_BYTES: u64 = 64 * 1024 * 1024;
/// The most retained copies whose first pass is still filling: each keeps its decode chain
/// (a thread or two and the open file) waiting for the next reader.
const MAX_PARKED: usize = 8;
/// The most file formats remembered; the record is cleared when it reaches this.
const MAX_NATIVE: usize = 1024;

/// The file as it is on disk: what makes two locations the same audio.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileId {
    pub path: std::path::PathBuf,
    pub size: u64,
    pub modified: Option<SystemTime>,
}

/// One decoded copy: a file in one output format, under one memory limit (an element with
/// another `max-cache-size` must neither hold more than its own nor be held to less).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub file: FileId,
    pub max_cache_size: u64,
    pub rate: u32,
    pub channels: u32,
    pub channel_mask: u64,
}

/// A decoded copy and the decode chain that fills it.
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

    /// Hands the entry the decode chain that fills its copy.
    pub fn set_decoder(&self, decoder: Decoder) {
        *self.decoder() = Some(decoder);
    }

    /// The copy failed (`err` reaches every reader), and its decode chain is shut down without
    /// waiting for it, so nothing spins on: callable from a streaming thread.
    pub fn fail(&self, err: gst::ErrorMessage) {
        self.cache.fail(err);
        let decoder = self.decoder().take();
        if let Some(mut decoder) = decoder {
            decoder.shutdown(false);
        }
    }

    /// The decoder's idea of the file's length, while it runs (asked with no lock held).
    pub fn duration(&self) -> Option<gst::ClockTime> {
        let pipeline = self.decoder().as_ref().map(|d| d.pipeline().clone());
        pipeline.and_then(|p| p.query_duration::<gst::ClockTime>())
    }
}

/// An element's hold on an entry. Dropping it tells the registry the element no longer plays
/// the copy, which may then be retained or freed.
#[derive(Debug)]
pub struct Lease {
    entry: Arc<Entry>,
}

impl Lease {
    pub fn entry(&self) -> &Arc<Entry> {
        &self.entry
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        release(&self.entry);
    }
}

/// A shared entry with the number of leases on it; with none, it is retained.
#[derive(Debug)]
struct Slot {
    entry: Arc<Entry>,
    users: usize,
    /// When it was last obtained or released (a tick of `Registry::clock`): the least recently
    /// used retained copy goes first.
    used: u64,
}

/// What is known of a file's format.
#[derive(Debug)]
enum Known {
    Format(NativeFormat),
    /// An element is probing it: others wait on its decode chain.
    Probing(Weak<Shared>),
}

#[derive(Debug, Default)]
struct Registry {
    slots: HashMap<CacheKey, Slot>,
    /// Entries nobody can share (streams, windows), for `usage()` only.
    private: Vec<Weak<Entry>>,
    clock: u64,
    /// Formats of files probed before, and probes under way, by file identity (path, size,
    /// mtime), so a stale record is never used.
    formats: HashMap<FileId, Known>,
}

impl Registry {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn retained_bytes(&self) -> u64 {
        self.slots
            .values()
            .filter(|s| s.users == 0)
            .map(|s| s.entry.cache.byte_size())
            .sum()
    }

    /// Drops retained copies, least recently used first, until they fit `budget`. The entries
    /// are returned so that they are freed after the lock is released.
    fn evict(&mut self, budget: u64, out: &mut Vec<Arc<Entry>>) {
        let mut retained = self.retained_bytes();
        let parked = |reg: &Registry| {
            reg.slots
                .values()
                .filter(|s| s.users == 0 && s.entry.cache.is_filling())
                .count()
        };
        while retained > budget || parked(self) > MAX_PARKED {
            let over_budget = retained > budget;
            let Some(key) = self
                .slots
                .iter()
                .filter(|(_, s)| s.users == 0 && (over_budget || s.entry.cache.is_filling()))
                .min_by_key(|(_, s)| s.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(slot) = self.slots.remove(&key) {
                retained -= slot.entry.cache.byte_size();
                gst::debug!(
                    CAT,
                    id = slot.entry.cache.label(),
                    "Dropping the retained copy"
                );
                out.push(slot.entry);
            }
        }
    }
}

/// The process's one lock of its own: bookkeeping only (see the module doc).
static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(Default::default);

static RETAIN_BUDGET: LazyLock<AtomicU64> = LazyLock::new(|| {
    let budget = std::env::var(RETAIN_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(DEFAULT_RETAIN_BYTES);
    AtomicU64::new(budget)
});

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// The entry for `key` with a reader at its start, shared with the elements already playing it
/// (or retained), or a new one with the cache `make` gives. A new entry has no decode chain yet:
/// the caller starts one and hands it over with `Entry::set_decoder` (a failure goes to the
/// cache, where every reader finds it). With no key the entry is private. Returns whether the
/// entry is new.
pub fn obtain(key: Option<CacheKey>, make: impl FnOnce() -> PcmCache) -> (Lease, Reader, bool) {
    let new_entry = |key: Option<CacheKey>| {
        let entry = Arc::new(Entry {
            cache: Arc::new(make()),
            decoder: Mutex::new(None),
            key,
        });
        // A fresh cache always takes a reader at its start.
        let reader = entry.cache.reader().expect("a new cache has a start");
        (entry, reader)
    };
    let mut dropped = Vec::new();
    let mut reg = registry();
    let Some(key) = key else {
        let (entry, reader) = new_entry(None);
        reg.private.retain(|w| w.strong_count() > 0);
        reg.private.push(Arc::downgrade(&entry));
        drop(reg);
        return (Lease { entry }, reader, true);
    };

    let now = reg.tick();
    if let Some(slot) = reg.slots.get_mut(&key) {
        // A copy that failed, or that streams past its start, is not one to join.
        let cache = &slot.entry.cache;
        let reader = cache.failed().is_none().then(|| cache.reader()).flatten();
        if let Some(reader) = reader {
            slot.users += 1;
            slot.used = now;
            let entry = slot.entry.clone();
            drop(reg);
            return (Lease { entry }, reader, false);
        }
    }

    // The file changed on disk (same path, another size or time): its retained copies are stale.
    let stale: Vec<CacheKey> = reg
        .slots
        .iter()
        .filter(|(k, s)| s.users == 0 && k.file.path == key.file.path && k.file != key.file)
        .map(|(k, _)| k.clone())
        .collect();
    for k in stale {
        dropped.extend(reg.slots.remove(&k).map(|s| s.entry));
    }
    let (entry, reader) = new_entry(Some(key.clone()));
    let old = reg.slots.insert(
        key,
        Slot {
            entry: entry.clone(),
            users: 1,
            used: now,
        },
    );
    // A replaced entry still in use lives on with its leases; a retained one goes.
    dropped.extend(old.filter(|s| s.users == 0).map(|s| s.entry));
    drop(reg);
    drop(dropped);
    (Lease { entry }, reader, true)
}

fn release(entry: &Arc<Entry>) {
    let Some(key) = &entry.key else {
        return;
    };
    // A copy of a file that has changed on disk since is of no use to anyone later.
    let current = std::fs::metadata(&key.file.path)
        .is_ok_and(|m| m.len() == key.file.size && m.modified().ok() == key.file.modified);
    let mut dropped = Vec::new();
    let mut reg = registry();
    let now = reg.tick();
    let Some(slot) = reg.slots.get_mut(key) else {
        return;
    };
    if !Arc::ptr_eq(&slot.entry, entry) {
        // Replaced by a newer copy for the same key: this one goes with its last lease.
        return;
    }
    slot.users = slot.users.saturating_sub(1);
    if slot.users > 0 {
        return;
    }
    let budget = RETAIN_BUDGET.load(Ordering::Relaxed);
    let cache = &slot.entry.cache;
    let complete = cache.complete_frames().is_some();
    if (complete || cache.is_filling()) && current && cache.byte_size() <= budget {
        slot.used = now;
        // (A copy still filling keeps its decoder, waiting for the next reader.)
        gst::debug!(
            CAT,
            id = entry.cache.label(),
            "Retaining the copy (complete: {complete})"
        );
        reg.evict(budget, &mut dropped);
    } else {
        dropped.extend(reg.slots.remove(key).map(|s| s.entry));
        gst::debug!(
            CAT,
            id = entry.cache.label(),
            "Released the copy (its last user stopped)"
        );
    }
    drop(reg);
    drop(dropped);
}

/// Sets the budget, in bytes, for decoded copies kept after their last element stopped (0 keeps
/// none), and drops retained copies beyond it. The default is `GST_BGAUDIO_RETAIN_BYTES` from
/// the environment, else 64 MiB.
pub fn set_retain_budget(bytes: u64) {
    RETAIN_BUDGET.store(bytes, Ordering::Relaxed);
    let mut dropped = Vec::new();
    registry().evict(bytes, &mut dropped);
    drop(dropped);
}

/// The budget for retained copies, in bytes.
pub fn retain_budget() -> u64 {
    RETAIN_BUDGET.load(Ordering::Relaxed)
}

/// How much decoded audio the process holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheUsage {
    /// Decoded copies (files × output formats, and private streaming windows) that elements
    /// play now.
    pub entries: usize,
    /// Bytes of decoded S16 they hold.
    pub bytes: u64,
    /// Complete copies no element plays now, kept for the next one (within the budget).
    pub retained_entries: usize,
    /// Bytes of decoded S16 the retained copies hold.
    pub retained_bytes: u64,
}

/// The decoded copies held by the process now, for monitoring memory.
pub fn usage() -> CacheUsage {
    let reg = registry();
    let private: Vec<Arc<Entry>> = reg.private.iter().filter_map(Weak::upgrade).collect();
    let mut usage = CacheUsage::default();
    for slot in reg.slots.values() {
        let bytes = slot.entry.cache.byte_size();
        if slot.users > 0 {
            usage.entries += 1;
            usage.bytes += bytes;
        } else {
            usage.retained_entries += 1;
            usage.retained_bytes += bytes;
        }
    }
    drop(reg);
    // Outside the lock: if an element let go meanwhile, the last reference to its entry is
    // ours, and dropping it shuts a decode chain down.
    for entry in &private {
        usage.entries += 1;
        usage.bytes += entry.cache.byte_size();
    }
    drop(private);
    usage
}

/// How an element learns a file's format.
#[derive(Debug)]
pub enum Probe {
    /// Known from an earlier probe in this process: nothing to open.
    Known(NativeFormat),
    /// Another element is probing the file: wait on its decode chain.
    Join(Arc<Shared>),
    /// Nobody is: start a decode chain on this and wait on it; others may join.
    Own(Arc<Shared>),
}

/// Finds or starts the probe of `file`. Only bookkeeping under the lock: the caller starts the
/// decode chain of an `Own` probe.
pub fn probe(file: &FileId, location: &str) -> Probe {
    let mut reg = registry();
    match reg.formats.get(file) {
        Some(Known::Format(native)) => return Probe::Known(*native),
        Some(Known::Probing(shared)) => {
            if let Some(shared) = shared.upgrade().filter(|s| !s.is_abandoned()) {
                return Probe::Join(shared);
            }
        }
        None => (),
    }
    if reg.formats.len() >= MAX_NATIVE {
        reg.formats.clear();
    }
    let shared = Shared::new(location);
    reg.formats
        .insert(file.clone(), Known::Probing(Arc::downgrade(&shared)));
    Probe::Own(shared)
}

/// Records the format a probe of `file` found, so later elements need not open it.
pub fn remember(file: &FileId, native: NativeFormat) {
    registry()
        .formats
        .insert(file.clone(), Known::Format(native));
}
