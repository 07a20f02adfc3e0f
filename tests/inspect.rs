// SPDX-License-Identifier: MIT OR Apache-2.0

//! gst-inspect-1.0 finds the built plugin and documents the element and its properties.

use std::path::PathBuf;
use std::process::Command;

/// The folder cargo put the built libraries in: the parent of this test's `deps/` folder.
fn library_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("target profile folder")
        .to_path_buf()
}

#[test]
fn gst_inspect_documents_the_element() {
    let dir = library_dir();
    let lib = dir.join(format!(
        "{}gstbgaudio{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    assert!(lib.exists(), "{} was not built", lib.display());
    // A registry of its own, so a stale cache from another build is never used.
    let registry = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("inspect-registry.bin");
    let _ = std::fs::remove_file(&registry);
    let output = Command::new("gst-inspect-1.0")
        .arg("bgaudiosrc")
        .env("GST_PLUGIN_PATH", &dir)
        .env("GST_REGISTRY", &registry)
        .output()
        .expect("gst-inspect-1.0 runs (package gstreamer1.0-tools)");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for needle in [
        "Klass                    Source/Audio",
        "Rank                     none (0)",
        "SRC template: 'src'",
        "Availability: Always",
        "format: S16",
        "layout: interleaved",
        "location            : File path or URI",
        "volume              : Linear volume factor",
        "controllable",
        "Double. Range:               0 -              10 Default:               1",
        "mode                : Playback",
        "Enum \"GstBgAudioSrcMode\" Default: 0, \"playback\"",
        "(1): mixing",
        "loop                : Loop the file",
        "Boolean. Default: false",
        "buffer-duration     : Duration of each output buffer",
        "Default: 20000000",
    ] {
        assert!(
            text.contains(needle),
            "gst-inspect-1.0 output lacks {needle:?}:\n{text}"
        );
    }
}
