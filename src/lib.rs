// SPDX-License-Identifier: MIT OR Apache-2.0
#![allow(unused_doc_comments)]

//! GStreamer plugin `bgaudio`: the `bgaudiosrc` element plays a background sound (music,
//! ambience, hold music) from any file GStreamer can decode, looped without a gap, either as the
//! only audio (`mode=playback`) or under other live audio through an `audiomixer`
//! (`mode=mixing`).

/**
 * plugin-bgaudio:
 *
 * Since: 0.1.0
 */
use gst::glib;

mod bgaudiosrc;

pub use bgaudiosrc::{
    cache_usage, retain_budget, set_retain_budget, BgAudioSrc, BgAudioSrcMode, CacheUsage,
    DEFAULT_RETAIN_BYTES, RETAIN_ENV,
};

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    bgaudiosrc::register(plugin)
}

gst::plugin_define!(
    bgaudio,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MIT/X11",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    // Origin: the project has no public address yet.
    "gst-plugin-bgaudio (unpublished)",
    env!("BUILD_REL_DATE")
);
