// SPDX-License-Identifier: MIT OR Apache-2.0

//! gst-inspect-1.0 finds the built plugin and documents the element and its properties.

use std::path::PathBuf;
use std::process::Command;

/// The plugin library cargo built for this test run: in `deps/` beside this test (where
/// `cargo test` puts it) or in the profile folder above (where `cargo build` puts it).
fn built_library() -> PathBuf {
    let name = format!(
        "{}gstbgaudio{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    let exe = std::env::current_exe().expect("test executable");
    let deps = exe.parent().expect("deps folder");
    [
        deps.join(&name),
        deps.parent().expect("profile folder").join(&name),
    ]
    .into_iter()
    .filter(|p| p.exists())
    .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
    .unwrap_or_else(|| panic!("{name} was not built"))
}

#[test]
fn gst_inspect_documents_the_element() {
    // The library alone in a folder of its own (deps/ holds other crates' libraries too), and
    // a registry of its own, so a stale cache from another build is never used.
    let lib = built_library();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("inspect-plugin");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(&lib, dir.join(lib.file_name().unwrap())).unwrap();
    let registry = dir.join("registry.bin");
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
        "format: { (string)S16LE, (string)F32LE }",
        "layout: interleaved",
        "rate: [ 1, 768000 ]",
        "channels: [ 1, 64 ]",
        "location            : File path or URI",
        "volume              : Linear volume factor",
        "controllable",
        "Double. Range:               0 -              10 Default:               1",
        "mute                : Mute the output",
        "mode                : Playback",
        "Enum \"GstBgAudioSrcMode\" Default: 0, \"playback\"",
        "(1): mixing",
        "loop                : Loop the file",
        "Boolean. Default: false",
        "buffer-duration     : Duration of each output buffer",
        "Default: 20000000",
        "fade-in-duration    : Fade-in when the element starts in mixing mode",
        "fade-out-duration   : Fade-out before EOS after the fade-out signal",
        "max-cache-size      : Most bytes of decoded audio kept in memory",
        "Default: 67108864",
        "timeout             : Nanoseconds the source may take to show its audio format",
        "Default: 10000000000",
        "Element Actions:",
        "\"fade-out\" :  void user_function (GstElement* object);",
    ] {
        assert!(
            text.contains(needle),
            "gst-inspect-1.0 output lacks {needle:?}:\n{text}"
        );
    }
}
