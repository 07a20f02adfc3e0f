// SPDX-License-Identifier: MIT OR Apache-2.0

//! Output formats: negotiation that keeps the file's own format into encoders and mixers, F32
//! output, GAP flags on silence, and the properties a running element refuses.

mod common;

use common::*;
use gst::glib;
use gst::prelude::*;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A 44.1 kHz stereo Ogg/Vorbis file, 1 s of a sine.
fn stereo_vorbis() -> PathBuf {
    let path = fixture_dir("formats").join("stereo-44100.ogg");
    make_sine(&path, 44_100, 2, 440.0, 44_000, "vorbisenc ! oggmux");
    path
}

/// The caps `element` (named `target` in `desc`) receives on its sink pad once the pipeline
/// has prerolled.
fn caps_into(desc: &str) -> gst::Caps {
    let pipeline = pipeline(desc);
    pipeline.set_state(gst::State::Paused).expect("pause");
    let (result, _, _) = pipeline.state(gst::ClockTime::from_seconds(10));
    assert!(result.is_ok(), "{desc}: no preroll");
    let caps = pipeline
        .by_name("target")
        .and_then(|e| {
            e.static_pad("sink")
                .or_else(|| e.sink_pads().first().cloned())
        })
        .and_then(|pad| pad.current_caps())
        .unwrap_or_else(|| panic!("{desc}: no caps on the target"));
    pipeline.set_state(gst::State::Null).expect("null");
    caps
}

fn rate_and_channels(caps: &gst::Caps) -> (i32, i32) {
    let s = caps.structure(0).expect("a structure");
    (
        s.get("rate").expect("rate"),
        s.get("channels").expect("channels"),
    )
}

#[test]
fn the_files_channels_survive_every_encoder_at_the_stock_chains_rate() {
    init();
    let path = stereo_vorbis();
    let uri = glib::filename_to_uri(&path, None).unwrap();
    for (downstream, needs) in [
        ("opusenc name=target ! fakesink", "opusenc"),
        ("lamemp3enc name=target ! fakesink", "lamemp3enc"),
        ("flacenc name=target ! fakesink", "flacenc"),
        ("vorbisenc name=target ! fakesink", "vorbisenc"),
        ("fakesink name=target", "fakesink"),
        (
            "capsfilter caps=audio/x-raw,channels=[1,2] ! fakesink name=target",
            "fakesink",
        ),
        ("audiomixer ! fakesink name=target", "audiomixer"),
    ] {
        if gst::ElementFactory::find(needs).is_none() {
            eprintln!("{needs} not installed: skipped");
            continue;
        }
        let ours = caps_into(&format!(
            "bgaudiosrc location=\"{}\" ! {downstream}",
            path.display()
        ));
        let stock = caps_into(&format!(
            "uridecodebin uri={uri} ! audioconvert ! audioresample ! {downstream}"
        ));
        let (rate, channels) = rate_and_channels(&ours);
        assert_eq!(channels, 2, "into {downstream}: {ours}");
        assert_eq!(
            (rate, channels),
            rate_and_channels(&stock),
            "into {downstream}: ours {ours}, stock {stock}"
        );
    }
}

/// Raw bytes of every buffer and their flags, from `desc` ending in `appsink name=sink`.
fn collect_raw(desc: &str) -> (Vec<u8>, Vec<gst::BufferFlags>, gst::Caps) {
    let pipeline = pipeline(desc);
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    sink.set_property("sync", false);
    pipeline.set_state(gst::State::Playing).expect("play");
    let (mut bytes, mut flags, mut caps) = (Vec::new(), Vec::new(), None);
    while let Ok(sample) = sink.pull_sample() {
        caps = caps.or_else(|| sample.caps().map(|c| c.to_owned()));
        let buffer = sample.buffer().unwrap();
        flags.push(buffer.flags());
        bytes.extend_from_slice(&buffer.map_readable().unwrap());
    }
    let error = pipeline
        .bus()
        .unwrap()
        .pop_filtered(&[gst::MessageType::Error]);
    assert!(error.is_none(), "{desc}: {error:?}");
    pipeline.set_state(gst::State::Null).expect("null");
    (bytes, flags, caps.expect("caps"))
}

#[test]
fn f32_output_is_the_s16_output_over_32768() {
    init();
    let path = stereo_vorbis();
    for volume in ["1.0", "0.5"] {
        let run = |format: &str| {
            collect_raw(&format!(
                "bgaudiosrc location=\"{}\" volume={volume} \
                 ! audio/x-raw,format={format},rate=48000 ! appsink name=sink",
                path.display()
            ))
        };
        let (s16, _, s16_caps) = run(if cfg!(target_endian = "little") {
            "S16LE"
        } else {
            "S16BE"
        });
        let (f32, _, f32_caps) = run(if cfg!(target_endian = "little") {
            "F32LE"
        } else {
            "F32BE"
        });
        assert_eq!(rate_and_channels(&s16_caps), (48_000, 2));
        assert_eq!(rate_and_channels(&f32_caps), (48_000, 2));
        let s16: Vec<i16> = s16
            .chunks_exact(2)
            .map(|b| i16::from_ne_bytes([b[0], b[1]]))
            .collect();
        let f32: Vec<f32> = f32
            .chunks_exact(4)
            .map(|b| f32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(s16.len(), f32.len());
        assert!(s16.iter().any(|s| s.abs() > 10_000), "a loud sine");
        if volume == "1.0" {
            for (i, (s, f)) in s16.iter().zip(&f32).enumerate() {
                assert_eq!(*f, *s as f32 / 32768.0, "sample {i}");
            }
        } else {
            // S16 rounds the scaled value; F32 keeps it.
            for (i, (s, f)) in s16.iter().zip(&f32).enumerate() {
                assert!((f * 32768.0 - *s as f32).abs() <= 0.5 + 1e-3, "sample {i}");
            }
        }
    }
}

#[test]
fn an_f32_encoder_links_directly() {
    init();
    let path = stereo_vorbis();
    let encoded = fixture_dir("formats").join("reencoded.ogg");
    run(&format!(
        "bgaudiosrc location=\"{}\" ! vorbisenc ! oggmux ! filesink location=\"{}\"",
        path.display(),
        encoded.display()
    ));
    // The re-encoded file decodes to about as long a sine.
    let out = reference(&encoded, &s16(",rate=44100,channels=2"));
    assert!(out.samples.len() / 2 >= 43_000, "{}", out.samples.len() / 2);
}

#[test]
fn silence_from_the_gain_is_flagged_gap() {
    init();
    let path = stereo_vorbis();
    for (props, silent) in [
        ("volume=0", true),
        ("mute=true", true),
        ("mute=true volume=0.7", true),
        ("volume=0.5", false),
    ] {
        let (bytes, flags, _) = collect_raw(&format!(
            "bgaudiosrc location=\"{}\" {props} ! {} ! appsink name=sink",
            path.display(),
            s16("")
        ));
        assert!(!flags.is_empty());
        let gaps = flags
            .iter()
            .filter(|f| f.contains(gst::BufferFlags::GAP))
            .count();
        if silent {
            assert_eq!(gaps, flags.len(), "{props}: every buffer is a GAP");
            assert!(bytes.iter().all(|b| *b == 0), "{props}: and silent");
        } else {
            assert_eq!(gaps, 0, "{props}: no GAP");
            assert!(bytes.iter().any(|b| *b != 0));
        }
    }
}

#[test]
fn muting_while_playing_ramps_down_then_flags_gap() {
    init();
    let path = stereo_vorbis();
    let pipeline = pipeline(&format!(
        "bgaudiosrc name=bg loop=true location=\"{}\" ! {} ! appsink name=sink",
        path.display(),
        s16(",rate=48000,channels=2")
    ));
    let bg = pipeline.by_name("bg").unwrap();
    // Mute from the element's own pad after 10 buffers, so it lands at a known point.
    let count = Arc::new(Mutex::new(0usize));
    let seen = count.clone();
    let element = bg.clone();
    bg.static_pad("src")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            let mut n = seen.lock().unwrap();
            *n += 1;
            if *n == 10 {
                element.set_property("mute", true);
            }
            gst::PadProbeReturn::Ok
        });
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    sink.set_property("sync", false);
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut buffers = Vec::new();
    while buffers.len() < 20 {
        let sample = sink
            .try_pull_sample(gst::ClockTime::from_seconds(5))
            .expect("a buffer");
        let buffer = sample.buffer().unwrap();
        buffers.push((
            buffer.flags().contains(gst::BufferFlags::GAP),
            samples_of(buffer),
        ));
    }
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(bg.property::<bool>("mute"));
    // Buffers 0..=9 play; the one after the change ramps (10 ms) and is not a GAP; from then
    // on every buffer is a silent GAP.
    assert!(buffers[..10]
        .iter()
        .all(|(gap, s)| !gap && s.iter().any(|x| x.abs() > 1000)));
    let (gap, ramp) = &buffers[10];
    assert!(!gap && ramp[..20].iter().any(|x| x.abs() > 1000));
    assert!(ramp[ramp.len() / 2..].iter().all(|x| *x == 0));
    assert!(buffers[11..]
        .iter()
        .all(|(gap, s)| *gap && s.iter().all(|x| *x == 0)));
}

#[test]
fn a_running_element_refuses_what_it_was_started_with() {
    init();
    let path = stereo_vorbis();
    let warnings = Arc::new(Mutex::new(Vec::<String>::new()));
    let logged = warnings.clone();
    let handler = glib::log_set_handler(
        Some("bgaudiosrc"),
        glib::LogLevels::LEVEL_WARNING,
        false,
        false,
        move |_, _, message| logged.lock().unwrap().push(message.to_owned()),
    );
    let pipeline = pipeline(&format!(
        "bgaudiosrc name=bg loop=true location=\"{}\" ! {} ! fakesink sync=true",
        path.display(),
        s16("")
    ));
    let bg = pipeline.by_name("bg").unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let (result, state, _) = pipeline.state(gst::ClockTime::from_seconds(10));
    assert!(result.is_ok() && state == gst::State::Playing);

    let location = bg.property::<Option<String>>("location");
    bg.set_property("location", "/elsewhere.ogg");
    bg.set_property_from_str("mode", "mixing");
    bg.set_property("buffer-duration", 40_000_000u64);
    bg.set_property("max-cache-size", 1_000u64);
    bg.set_property("timeout", 1u64);
    // Changes that take effect while playing are taken.
    bg.set_property("volume", 0.25);
    bg.set_property("loop", false);
    std::thread::sleep(Duration::from_millis(50));

    assert_eq!(bg.property::<Option<String>>("location"), location);
    assert_eq!(
        bg.property_value("mode")
            .get::<gstbgaudio::BgAudioSrcMode>()
            .ok(),
        Some(gstbgaudio::BgAudioSrcMode::Playback)
    );
    assert_eq!(bg.property::<u64>("buffer-duration"), 20_000_000);
    assert_eq!(bg.property::<u64>("max-cache-size"), 64 * 1024 * 1024);
    assert_eq!(bg.property::<u64>("timeout"), 10_000_000_000);
    assert_eq!(bg.property::<f64>("volume"), 0.25);
    assert!(!bg.property::<bool>("loop"));
    pipeline.set_state(gst::State::Null).unwrap();
    glib::log_remove_handler(Some("bgaudiosrc"), handler);

    let warnings = warnings.lock().unwrap();
    assert_eq!(warnings.len(), 5, "{warnings:?}");
    for (warning, property) in warnings.iter().zip([
        "location",
        "mode",
        "buffer-duration",
        "max-cache-size",
        "timeout",
    ]) {
        assert!(
            warning.contains(&format!("'{property}'")) && warning.contains("Playing"),
            "{warning}"
        );
    }

    // Stopped, they are taken again.
    bg.set_property_from_str("mode", "mixing");
    assert_eq!(
        bg.property_value("mode")
            .get::<gstbgaudio::BgAudioSrcMode>()
            .ok(),
        Some(gstbgaudio::BgAudioSrcMode::Mixing)
    );
}

#[test]
fn a_stream_that_switches_to_unpositioned_channels_plays_on() {
    init();
    // A chained Ogg: 1 s of stereo at 44.1 kHz, then 1 s of 20 channels without positions at
    // 48 kHz (what a damaged AAC can turn into half-way).
    let dir = fixture_dir("formats");
    let stereo = dir.join("chain-stereo.ogg");
    make_sine(&stereo, 44_100, 2, 440.0, 44_000, "vorbisenc ! oggmux");
    let wide = dir.join("chain-20.ogg");
    if !wide.exists() {
        let tmp = wide.with_extension("part");
        run(&format!(
            "audiotestsrc wave=sine freq=440 volume=0.8 samplesperbuffer=1000 num-buffers=48 \
             ! audio/x-raw,format=F32LE,rate=48000,channels=20,channel-mask=(bitmask)0 \
             ! vorbisenc ! oggmux ! filesink location=\"{}\"",
            tmp.display()
        ));
        std::fs::rename(&tmp, &wide).unwrap();
    }
    let chained = dir.join("chained.ogg");
    let mut bytes = std::fs::read(&stereo).unwrap();
    bytes.extend(std::fs::read(&wide).unwrap());
    std::fs::write(&chained, bytes).unwrap();

    let out = collect(
        &format!(
            "bgaudiosrc location=\"{}\" ! {} ! appsink name=sink",
            chained.display(),
            s16("")
        ),
        None,
    );
    assert!(out.error.is_none(), "{:?}", out.error);
    assert!(out.eos);
    assert_eq!(
        (out.rate(), out.channels()),
        (44_100, 2),
        "the file's first format"
    );
    // Both parts play: about 2 s, and the second second is the sine, not silence.
    let frames = out.samples.len() / 2;
    assert!((86_000..90_000).contains(&frames), "{frames} frames");
    let second: Vec<i16> = out.samples[50_000 * 2..85_000 * 2]
        .iter()
        .step_by(2)
        .copied()
        .collect();
    let peak = second.iter().map(|s| s.unsigned_abs()).max().unwrap();
    assert!(peak > 20_000, "peak {peak}");
}

#[test]
fn a_downstream_pool_of_too_small_buffers_is_passed_over() {
    init();
    let path = stereo_vorbis();
    let desc = format!(
        "bgaudiosrc location=\"{}\" volume=0.5 ! {} ! appsink name=sink",
        path.display(),
        s16(",rate=48000,channels=2")
    );
    let normal = collect(&desc, Some(20_000));

    // The sink proposes a pool of 64-byte buffers, which GstBaseSrc takes as it is.
    let pipeline = pipeline(&desc);
    let proposed = Arc::new(Mutex::new(0usize));
    let counted = proposed.clone();
    let sink_pad = pipeline
        .by_name("sink")
        .and_then(|s| s.static_pad("sink"))
        .unwrap();
    sink_pad.add_probe(gst::PadProbeType::QUERY_DOWNSTREAM, move |_, info| {
        if let Some(gst::PadProbeData::Query(query)) = &mut info.data {
            if let gst::QueryViewMut::Allocation(q) = query.view_mut() {
                let pool = gst::BufferPool::new();
                q.add_allocation_pool(Some(&pool), 64, 2, 0);
                *counted.lock().unwrap() += 1;
                return gst::PadProbeReturn::Handled;
            }
        }
        gst::PadProbeReturn::Ok
    });
    let small = collect_pipeline(&pipeline, Some(20_000));
    assert!(*proposed.lock().unwrap() >= 1, "the pool was proposed");
    assert!(small.error.is_none(), "{:?}", small.error);
    // Whole 20 ms buffers, the same samples as with the element's own pool.
    assert!(small.buffers.iter().all(|b| b.4 == 960));
    assert_eq!(small.samples.len(), normal.samples.len());
    assert!(small.samples == normal.samples);
}
