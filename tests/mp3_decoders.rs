// SPDX-License-Identifier: MIT OR Apache-2.0

//! MP3s as they come from different encoders and taggers decode to the stock chain's samples,
//! through every MP3 decoder installed, forced one at a time.
//!
//! A decoder is forced with `GST_PLUGIN_FEATURE_RANK`, which GStreamer reads at `gst::init`, so
//! each decoder runs in a process of its own: `each_mp3_decoder_...` runs this binary again,
//! once per decoder, for `one_decoder` (ignored in a plain run; it compares with whatever the
//! ranks pick when run by hand).

mod common;

use common::*;
use gst::prelude::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

/// The MP3 decoders the suite knows; those installed are each forced in turn.
const DECODERS: &[&str] = &["avdec_mp3", "avdec_mp3float", "mpg123audiodec"];
/// The decoder `one_decoder` must find plugged (set by the parent).
const FORCED: &str = "BGAUDIO_TEST_MP3_DECODER";

fn dir() -> PathBuf {
    fixture_dir("mp3-decoders")
}

/// 1.5 s of a two-tone stereo signal at 44.1 kHz as WAV, for the lame CLI.
fn wav() -> PathBuf {
    let path = dir().join("source.wav");
    make_once(&path, |tmp| {
        run(&format!(
            "audiomixer name=m ! audio/x-raw,format=S16LE,rate=44100,channels=2 ! wavenc \
             ! filesink location={} \
             audiotestsrc freq=440 volume=0.4 num-buffers=66 samplesperbuffer=1000 ! m. \
             audiotestsrc freq=660 volume=0.3 num-buffers=66 samplesperbuffer=1000 ! m.",
            tmp.display()
        ))
    });
    path
}

fn lamemp3enc(name: &str, settings: &str) -> PathBuf {
    let path = dir().join(name);
    make_sine(
        &path,
        44_100,
        2,
        523.0,
        66_000,
        &format!("lamemp3enc {settings}"),
    );
    path
}

fn lame_cli(name: &str, args: &[&str]) -> PathBuf {
    let path = dir().join(name);
    make_once(&path, |tmp| {
        let status = Command::new("lame")
            .arg("--quiet")
            .args(args)
            .arg(wav())
            .arg(tmp)
            .status()
            .expect("the lame CLI (scripts/install-deps.sh installs it)");
        assert!(status.success(), "lame {args:?}");
    });
    path
}

/// `mp3` with `head` before it and `tail` after it.
fn wrapped(name: &str, mp3: &Path, head: &[u8], tail: &[u8]) -> PathBuf {
    let path = dir().join(name);
    make_once(&path, |tmp| {
        let mut bytes = head.to_vec();
        bytes.extend(std::fs::read(mp3).expect("mp3"));
        bytes.extend(tail);
        std::fs::write(tmp, bytes).expect("write");
    });
    path
}

fn synchsafe(n: usize) -> [u8; 4] {
    [
        (n >> 21) as u8 & 0x7f,
        (n >> 14) as u8 & 0x7f,
        (n >> 7) as u8 & 0x7f,
        n as u8 & 0x7f,
    ]
}

/// An ID3v2 tag of `version` (2, 3 or 4) with a title frame and some padding, made by hand as
/// the taggers of each version write it.
fn id3v2(version: u8) -> Vec<u8> {
    let text = b"\x00A title";
    let mut frame = Vec::new();
    match version {
        2 => {
            frame.extend(b"TT2");
            frame.extend(&(text.len() as u32).to_be_bytes()[1..]);
        }
        3 => {
            frame.extend(b"TIT2");
            frame.extend((text.len() as u32).to_be_bytes());
            frame.extend([0, 0]);
        }
        _ => {
            frame.extend(b"TIT2");
            frame.extend(synchsafe(text.len()));
            frame.extend([0, 0]);
        }
    }
    frame.extend(text);
    frame.extend([0u8; 64]);
    let mut tag = vec![b'I', b'D', b'3', version, 0, 0];
    tag.extend(synchsafe(frame.len()));
    tag.extend(frame);
    tag
}

/// An APEv2 tag (header, one item, footer), as foobar2000 and mp3gain leave at the end.
fn apev2() -> Vec<u8> {
    let mut items = Vec::new();
    let value = b"An APE title";
    items.extend((value.len() as u32).to_le_bytes());
    items.extend(0u32.to_le_bytes());
    items.extend(b"Title\0");
    items.extend(value);
    let size = (items.len() + 32) as u32;
    let part = |flags: u32| {
        let mut p = b"APETAGEX".to_vec();
        p.extend(2000u32.to_le_bytes());
        p.extend(size.to_le_bytes());
        p.extend(1u32.to_le_bytes());
        p.extend(flags.to_le_bytes());
        p.extend([0u8; 8]);
        p
    };
    let mut tag = part(0xa000_0000);
    tag.extend(items);
    tag.extend(part(0x8000_0000));
    tag
}

/// `mp3` with the header of a frame near its middle zeroed: decoders resync at the next frame.
fn damaged(name: &str, mp3: &Path) -> PathBuf {
    let path = dir().join(name);
    make_once(&path, |tmp| {
        let mut bytes = std::fs::read(mp3).expect("mp3");
        let mid = bytes.len() / 2;
        let at = (mid..bytes.len() - 4)
            .find(|&i| bytes[i] == 0xff && bytes[i + 1] & 0xe0 == 0xe0)
            .expect("a frame header");
        bytes[at..at + 4].fill(0);
        std::fs::write(tmp, bytes).expect("write");
    });
    path
}

/// Every MP3 the suite decodes, by what it shows.
fn fixtures() -> Vec<(&'static str, PathBuf)> {
    let cbr = lamemp3enc("lamemp3enc-cbr.mp3", "target=bitrate bitrate=128 cbr=true");
    let cli = lame_cli("lame-cbr-info-tag.mp3", &["-b", "128"]);
    vec![
        ("lamemp3enc CBR", cbr.clone()),
        (
            "lamemp3enc VBR, xingmux",
            lamemp3enc("lamemp3enc-vbr.mp3", "target=quality quality=2 ! xingmux"),
        ),
        ("lame CLI CBR with its info tag", cli.clone()),
        (
            "lame CLI CBR without an info tag (-t)",
            lame_cli("lame-cbr-no-tag.mp3", &["-b", "128", "-t"]),
        ),
        (
            "lame CLI VBR (-V 2)",
            lame_cli("lame-vbr.mp3", &["-V", "2"]),
        ),
        (
            "lame CLI mono at 22.05 kHz",
            lame_cli("lame-mono.mp3", &["-m", "m", "--resample", "22.05"]),
        ),
        ("ID3v2.2", wrapped("id3v22.mp3", &cbr, &id3v2(2), &[])),
        ("ID3v2.3", wrapped("id3v23.mp3", &cli, &id3v2(3), &[])),
        ("ID3v2.4", wrapped("id3v24.mp3", &cbr, &id3v2(4), &[])),
        ("APEv2", wrapped("apev2.mp3", &cli, &[], &apev2())),
        (
            "ID3v2.3, APEv2 and ID3v1",
            wrapped(
                "all-tags.mp3",
                &cbr,
                &id3v2(3),
                &[apev2(), id3v1_tag()].concat(),
            ),
        ),
        ("a damaged frame header", damaged("damaged.mp3", &cli)),
    ]
}

/// The stock chain's decode of `path`, and the decoders it plugged.
fn reference_with_decoders(path: &Path, caps: &str) -> (Output, Vec<String>) {
    let uri = gst::glib::filename_to_uri(path, None).expect("uri");
    let pipeline = pipeline(&format!(
        "uridecodebin uri={uri} ! audioconvert dithering=none ! audioresample ! {caps} \
         ! appsink name=sink"
    ));
    let plugged = Arc::new(Mutex::new(Vec::new()));
    let record = plugged.clone();
    pipeline.connect_deep_element_added(move |_, _, element| {
        if let Some(factory) = element.factory() {
            if factory
                .metadata("klass")
                .is_some_and(|k| k.contains("Decoder/Audio"))
            {
                record.lock().unwrap().push(factory.name().to_string());
            }
        }
    });
    let out = collect_pipeline(&pipeline, None);
    assert!(out.error.is_none(), "reference failed: {:?}", out.error);
    assert!(out.eos);
    let plugged = plugged.lock().unwrap().clone();
    (out, plugged)
}

/// Compares the element with the stock chain on every fixture, at the file's own format and
/// resampled to 48 kHz.
#[test]
#[ignore = "run by each_mp3_decoder_equals_the_stock_chain, once per decoder"]
fn one_decoder() {
    init();
    let forced = std::env::var(FORCED).ok();
    for (what, path) in fixtures() {
        for caps in [s16(""), s16(",rate=48000,channels=2")] {
            let (reference, plugged) = reference_with_decoders(&path, &caps);
            if let Some(forced) = &forced {
                assert_eq!(
                    plugged.as_slice(),
                    std::slice::from_ref(forced),
                    "{what}: decoders plugged"
                );
            }
            assert!(
                reference.samples.len() > 20_000,
                "{what}: reference too short"
            );
            assert_plays_as(&path, &caps, &reference, what);
        }
    }
}

#[test]
fn each_mp3_decoder_equals_the_stock_chain() {
    init();
    let installed: Vec<&str> = DECODERS
        .iter()
        .copied()
        .filter(|name| gst::ElementFactory::find(name).is_some())
        .collect();
    // gstreamer1.0-libav and -good are what the project installs: these two at least.
    for needed in ["avdec_mp3", "mpg123audiodec"] {
        assert!(installed.contains(&needed), "{needed} is not installed");
    }
    // Every other decoder of MP3 is ranked out, so decodebin can only pick the forced one.
    let mp3 = gst::Caps::builder("audio/mpeg")
        .field("mpegversion", 1i32)
        .field("layer", 3i32)
        .build();
    let all: Vec<String> =
        gst::ElementFactory::factories_with_type(gst::ElementFactoryType::DECODER, gst::Rank::NONE)
            .into_iter()
            .filter(|f| f.can_sink_any_caps(&mp3))
            .map(|f| f.name().to_string())
            .collect();
    for forced in installed {
        let ranks: Vec<String> = all
            .iter()
            .map(|name| {
                let rank = if name == forced { "PRIMARY" } else { "NONE" };
                format!("{name}:{rank}")
            })
            .collect();
        let output = Command::new(std::env::current_exe().expect("test binary"))
            .args(["one_decoder", "--exact", "--ignored", "--nocapture"])
            .env("GST_PLUGIN_FEATURE_RANK", ranks.join(","))
            .env(FORCED, forced)
            .output()
            .expect("run the test binary");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("1 passed"),
            "with {forced}:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
