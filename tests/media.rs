// SPDX-License-Identifier: MIT OR Apache-2.0

//! Small real files shipped under `tests/media/` (MP3, Ogg Vorbis, FLAC, AAC in MP4, Opus in
//! Ogg, 2 s of a tone and ticks each, made once with GStreamer's encoders) decode to the stock
//! chain's samples, at their own format and converted.

mod common;

use common::*;
use std::path::PathBuf;

fn media(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("media")
        .join(name)
}

#[test]
fn shipped_files_equal_the_stock_chain() {
    init();
    for name in [
        "chime.mp3",
        "chime.ogg",
        "chime.flac",
        "chime.m4a",
        "chime.opus",
    ] {
        let path = media(name);
        assert!(path.exists(), "{name} is missing");
        for caps in [
            s16(""),
            s16(",rate=48000,channels=2"),
            s16(",rate=16000,channels=1"),
        ] {
            let reference = reference(&path, &caps);
            assert!(
                reference.samples.len() > 30_000,
                "{name} at {caps}: reference too short"
            );
            assert_plays_as(&path, &caps, &reference, name);
        }
    }
}
