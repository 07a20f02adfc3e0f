// SPDX-License-Identifier: MIT OR Apache-2.0

//! `bgaudiosrc`: a push source that plays a decoded audio file, optionally looped without a gap,
//! at a set volume.

use gst::glib;
use gst::prelude::*;

use std::sync::{Condvar, LazyLock, MutexGuard};
use std::time::Instant;

mod cache;
mod decoder;
mod gain;
mod imp;
mod playout;
mod registry;
mod shape;
mod window;

pub use registry::{
    retain_budget, set_retain_budget, usage as cache_usage, CacheUsage, DEFAULT_RETAIN_BYTES,
    RETAIN_ENV,
};

/// The debug category of the element and of its helper modules (`GST_DEBUG=bgaudiosrc:6`).
pub(crate) static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "bgaudiosrc",
        gst::DebugColorFlags::empty(),
        Some("Background audio source"),
    )
});

/// Waits on `cond` until it is notified, and at most until `until`. (A thread that panicked
/// while holding the lock leaves nothing that matters more than going on with the data.)
fn wait<'a, T>(
    cond: &Condvar,
    guard: MutexGuard<'a, T>,
    until: Option<Instant>,
) -> MutexGuard<'a, T> {
    let wait = until.map(|until| until.saturating_duration_since(Instant::now()));
    match wait {
        None => cond.wait(guard).unwrap_or_else(|e| e.into_inner()),
        Some(wait) => {
            cond.wait_timeout(guard, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0
        }
    }
}

/// How the element behaves in its pipeline.
#[derive(Debug, Default, Eq, PartialEq, Ord, PartialOrd, Hash, Clone, Copy, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstBgAudioSrcMode")]
pub enum BgAudioSrcMode {
    /// The exclusive output: non-live, timestamps from 0, EOS at the end of the file.
    #[default]
    #[enum_value(
        name = "Playback: the only audio, non-live, timestamps from 0",
        nick = "playback"
    )]
    Playback = 0,
    /// One input of an `audiomixer` in a live pipeline.
    #[enum_value(name = "Mixing: a live input of an audiomixer", nick = "mixing")]
    Mixing = 1,
}

glib::wrapper! {
    /// The `bgaudiosrc` element.
    pub struct BgAudioSrc(ObjectSubclass<imp::BgAudioSrc>) @extends gst_base::PushSrc, gst_base::BaseSrc, gst::Element, gst::Object;
}

/// Registers `bgaudiosrc` (and its mode enum, for gst-inspect-1.0) with `plugin`.
pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    // Registered at plugin load, so `--gst-debug-help` lists it before first use.
    LazyLock::force(&CAT);
    #[cfg(feature = "doc")]
    BgAudioSrcMode::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    gst::Element::register(
        Some(plugin),
        "bgaudiosrc",
        gst::Rank::NONE,
        BgAudioSrc::static_type(),
    )
}
