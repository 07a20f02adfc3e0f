// SPDX-License-Identifier: MIT OR Apache-2.0

//! Gapless looping: the seam is sample-exact, timestamps keep counting, and replays come from
//! the decoded cache.

mod common;

use common::*;
use gst::prelude::*;
use std::path::PathBuf;

/// 10000 frames of a 400 Hz sine at 8 kHz: exactly 500 periods, so the looped output is one
/// continuous sine. 20 ms buffers are 160 frames, so the seam falls inside a buffer.
const LEN: usize = 10_000;

fn loop_clip() -> PathBuf {
    let path = fixture_dir("looping").join("periods.wav");
    make_sine(&path, 8_000, 1, 400.0, LEN as u64, "wavenc");
    path
}

#[test]
fn loop_seam_is_sample_exact_over_four_passes() {
    init();
    let path = loop_clip();
    let single = bgaudio(&path, "", &s16(""), None);
    assert!(single.eos);
    assert_eq!(single.samples.len(), LEN);

    let looped = bgaudio(&path, "loop=true", &s16(""), Some(4 * LEN + 500));
    assert!(looped.error.is_none(), "{:?}", looped.error);
    assert!(looped.samples.len() >= 4 * LEN + 500);
    for (i, s) in looped.samples.iter().enumerate() {
        assert_eq!(*s, single.samples[i % LEN], "frame {i} (pass {})", i / LEN);
    }
    // The clip is whole sine periods, so across each seam the output is the same continuous
    // sine: no gap, no repeated sample.
    for i in 0..looped.samples.len() {
        let phase = 2.0 * std::f64::consts::PI * 400.0 * (i + 1) as f64 / 8000.0;
        let expect = (0.8 * 32767.0 * phase.sin()).round() as i32;
        assert!((looped.samples[i] as i32 - expect).abs() <= 1, "frame {i}");
    }
    // Every buffer is full (seams fall inside buffers) and timestamps run on across seams.
    assert!(looped.buffers.iter().all(|b| b.4 == 160));
    assert_contiguous(&looped);
}

#[test]
fn lossy_loop_is_periodic_with_the_decoded_length() {
    init();
    let path = fixture_dir("looping").join("stereo.ogg");
    make_sine(&path, 44_100, 2, 330.0, 30_000, "vorbisenc ! oggmux");
    let single = bgaudio(&path, "", &s16(""), None);
    let len = single.samples.len() / 2;
    assert!(len > 20_000);
    let looped = bgaudio(&path, "loop=true", &s16(""), Some(3 * len + 1000));
    assert!(looped.samples.len() >= 6 * len);
    for (i, s) in looped.samples.iter().enumerate() {
        assert_eq!(*s, single.samples[i % (2 * len)], "sample {i}");
    }
    assert_contiguous(&looped);
}

#[test]
fn replays_share_the_cache_memory() {
    // At volume 1.0 a replayed buffer points into the cache: the same file position gives the
    // same memory on every pass after the first, so nothing was decoded or copied again.
    init();
    let path = loop_clip();
    let pipeline = pipeline(&format!(
        "bgaudiosrc location=\"{}\" loop=true ! fakesink name=sink",
        path.display()
    ));
    let src_pad = pipeline
        .by_name("sink")
        .unwrap()
        .static_pad("sink")
        .unwrap();
    // (position in the file, data pointer of the first memory) per buffer.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(u64, usize, u64)>::new()));
    let seen_probe = seen.clone();
    src_pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(buffer) = info.buffer() {
            let mem = buffer.peek_memory(0);
            let ptr = mem.map_readable().map(|m| m.as_ptr() as usize).unwrap_or(0);
            seen_probe
                .lock()
                .unwrap()
                .push((buffer.offset() % LEN as u64, ptr, buffer.offset()));
        }
        gst::PadProbeReturn::Ok
    });
    pipeline.set_state(gst::State::Playing).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while seen.lock().unwrap().len() < 6 * LEN / 160 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    pipeline.set_state(gst::State::Null).unwrap();
    let seen = seen.lock().unwrap();
    assert!(seen.len() >= 6 * LEN / 160, "got {} buffers", seen.len());
    // Compare passes 2 and 4 (pass 1 may still be read while decoding).
    let pass = |n: u64| -> Vec<(u64, usize)> {
        seen.iter()
            .filter(|(_, _, off)| *off / LEN as u64 == n)
            .map(|(pos, ptr, _)| (*pos, *ptr))
            .collect()
    };
    let (p2, p4) = (pass(2), pass(4));
    assert!(!p2.is_empty());
    assert_eq!(p2, p4);
}

#[test]
fn a_file_with_no_samples_ends_with_eos_even_when_looping() {
    init();
    let path = fixture_dir("looping").join("nosamples.wav");
    // A valid WAV header (8 kHz mono S16) whose data chunk is empty.
    let mut wav = Vec::new();
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&36u32.to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    for v in [1u16, 1] {
        wav.extend_from_slice(&v.to_le_bytes());
    }
    wav.extend_from_slice(&8000u32.to_le_bytes());
    wav.extend_from_slice(&16000u32.to_le_bytes());
    for v in [2u16, 16] {
        wav.extend_from_slice(&v.to_le_bytes());
    }
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&0u32.to_le_bytes());
    std::fs::write(&path, wav).unwrap();

    let out = bgaudio(&path, "loop=true", &s16(""), None);
    // wavparse may call an empty data chunk an error; either way the element stops, it does
    // not spin producing nothing.
    assert!(out.eos || out.error.is_some());
    assert!(out.samples.is_empty());
}

#[test]
fn loop_can_be_switched_off_while_playing() {
    init();
    let path = loop_clip();
    let pipeline = pipeline(&format!(
        "bgaudiosrc name=src location=\"{}\" loop=true ! {} ! appsink name=sink",
        path.display(),
        s16("")
    ));
    let src = pipeline.by_name("src").unwrap();
    let sink = pipeline.by_name("sink").unwrap();
    let pad = sink.static_pad("sink").unwrap();
    // Turn looping off during the second pass: the output ends with EOS at the end of that pass.
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(b) = info.buffer() {
            if b.offset() >= LEN as u64 + 1000 {
                src.set_property("loop", false);
            }
        }
        gst::PadProbeReturn::Ok
    });
    let out = collect_pipeline(&pipeline, None);
    assert!(out.eos);
    assert_eq!(out.samples.len(), 2 * LEN);
}
