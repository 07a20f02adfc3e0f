// SPDX-License-Identifier: MIT OR Apache-2.0

//! Playback output against the stock decode chain, caps fixation, timestamps and queries.

mod common;

use common::*;
use gst::prelude::*;
use std::path::PathBuf;

/// A 1.5 s 440 Hz stereo clip at 44.1 kHz in the given format.
fn clip(ext: &str, encoder: &str) -> PathBuf {
    let path = fixture_dir("decode").join(format!("clip.{ext}"));
    make_sine(&path, 44_100, 2, 440.0, 66_000, encoder);
    path
}

fn assert_same_as_reference(ext: &str, encoder: &str, caps: &str) {
    init();
    let caps = &s16(caps);
    let path = clip(ext, encoder);
    let reference = reference(&path, caps);
    assert!(
        format_of(&reference.caps).is_some(),
        "{ext}: reference caps"
    );
    assert!(
        reference.samples.len() > 30_000,
        "{ext}: reference too short"
    );
    assert_plays_as(&path, caps, &reference, ext);
}

const ANY: &str = "";

#[test]
fn vorbis_equals_reference_chain() {
    assert_same_as_reference("ogg", "vorbisenc ! oggmux", ANY);
}

#[test]
fn mp3_equals_reference_chain() {
    assert_same_as_reference("mp3", "lamemp3enc ! id3v2mux", ANY);
}

/// `tagged` decodes to the stock chain's samples at `caps` (`s16` fragments).
fn assert_same_samples_as_reference(tagged: &std::path::Path, caps: &[&str]) {
    for caps in caps {
        let caps = s16(caps);
        let reference = reference(tagged, &caps);
        let ours = bgaudio(tagged, "", &caps, None);
        assert!(ours.error.is_none() && ours.eos, "{caps}: {:?}", ours.error);
        assert!(
            reference.samples.len() > 30_000,
            "{caps}: reference too short"
        );
        assert_eq!(
            ours.samples.len(),
            reference.samples.len(),
            "{caps}: length"
        );
        assert!(ours.samples == reference.samples, "{caps}: samples differ");
    }
}

/// Ogg/Vorbis behind an ID3v2 tag (as some taggers leave it): id3demux reads the tag, and the
/// Ogg it gives decodes as the stock chain decodes it (oggdemux pulls through id3demux, which
/// pulls through typefind).
#[test]
fn ogg_behind_an_id3_tag_equals_reference_chain() {
    init();
    let tagged = fixture_dir("decode").join("id3-ogg.ogg");
    make_once(&tagged, |tmp| {
        // ID3v2.4, no flags, a 10-byte body of padding (sizes are synchsafe).
        let mut bytes = b"ID3\x04\x00\x00\x00\x00\x00\x0a".to_vec();
        bytes.extend([0u8; 10]);
        bytes.extend(std::fs::read(clip("ogg", "vorbisenc ! oggmux")).unwrap());
        std::fs::write(tmp, bytes).unwrap();
    });
    assert_same_samples_as_reference(&tagged, &[ANY]);
}

/// An ID3v1 tag at the end of the file (128 bytes from "TAG"), as most MP3s in the wild carry,
/// besides the ID3v2 tag at the start: the decoded audio is the stock chain's, at the file's
/// rate and resampled, and the tag is not played as audio (`tests/tags.rs` checks it is read).
#[test]
fn mp3_with_a_tag_at_the_end_equals_reference_chain() {
    init();
    let tagged = fixture_dir("decode").join("id3v1.mp3");
    make_once(&tagged, |tmp| {
        let mut bytes = std::fs::read(clip("mp3", "lamemp3enc ! id3v2mux")).unwrap();
        bytes.extend(id3v1_tag());
        std::fs::write(tmp, bytes).unwrap();
    });
    assert_same_samples_as_reference(&tagged, &[ANY, ",rate=48000"]);
}

#[test]
fn flac_equals_reference_chain() {
    assert_same_as_reference("flac", "flacenc", ANY);
}

/// ADTS AAC, the third type a parser takes (fed to aacparse, as MP3 and FLAC are fed to theirs),
/// resampled from 44.1 to 48 kHz.
#[test]
fn adts_aac_equals_reference_chain() {
    init();
    if gst::ElementFactory::find("avenc_aac").is_none() {
        eprintln!("avenc_aac not installed: skipped");
        return;
    }
    assert_same_as_reference(
        "aac",
        "avenc_aac ! aacparse ! audio/mpeg,stream-format=adts",
        ",rate=48000",
    );
}

/// AC-3 and WavPack: other types whose first element is a parser (ac3parse, wavpackparse), fed
/// to it as MP3, FLAC and AAC are.
#[test]
fn ac3_and_wavpack_equal_reference_chain() {
    assert_same_as_reference("ac3", "avenc_ac3", ",rate=48000");
    assert_same_as_reference("wv", "wavpackenc", ANY);
}

/// Files so short that their parser gives out its frames only when the file ends (a 23 ms MP3
/// is one frame, which mpegaudioparse keeps until it sees the next or the end), fed whole before
/// the decoder shows a format: every sample still comes out, before the end, as the stock
/// chain decodes it.
#[test]
fn very_short_files_equal_reference_chain() {
    init();
    let caps = s16(",rate=44100,channels=2");
    for (encoder, ext) in [("lamemp3enc", "mp3"), ("flacenc", "flac")] {
        for frames in [1_000u64, 2_000, 4_000] {
            let path = fixture_dir("decode").join(format!("short-{frames}.{ext}"));
            make_sine(&path, 44_100, 2, 440.0, frames, encoder);
            let reference = reference(&path, &caps);
            assert!(
                !reference.samples.is_empty(),
                "{ext} {frames}: empty reference"
            );
            let ours = bgaudio(&path, "", &caps, None);
            assert!(ours.error.is_none(), "{ext} {frames}: {:?}", ours.error);
            assert!(ours.eos, "{ext} {frames}: no EOS");
            assert_eq!(ours.samples, reference.samples, "{ext} {frames}: samples");
        }
    }
}

#[test]
fn wav_equals_reference_chain() {
    assert_same_as_reference("wav", "wavenc", ANY);
}

#[test]
fn resampled_and_downmixed_vorbis_equals_reference_chain() {
    assert_same_as_reference("ogg", "vorbisenc ! oggmux", ",rate=24000,channels=1");
}

#[test]
fn wav_output_is_the_file_bit_for_bit() {
    // S16 WAV at its own rate goes through without any conversion.
    init();
    let path = fixture_dir("decode").join("exact.wav");
    make_sine(&path, 8_000, 1, 250.0, 8_000, "wavenc");
    let ours = bgaudio(&path, "", &s16(ANY), None);
    assert_eq!(ours.samples.len(), 8_000);
    for (i, s) in ours.samples.iter().enumerate() {
        // audiotestsrc advances its phase before the first sample.
        let phase = 2.0 * std::f64::consts::PI * 250.0 * (i + 1) as f64 / 8000.0;
        let expect = (0.8 * 32767.0 * phase.sin()).round() as i32;
        assert!(
            (*s as i32 - expect).abs() <= 1,
            "sample {i}: {s} vs {expect}"
        );
    }
}

fn negotiated(path: &std::path::Path, downstream: &str) -> (i32, i32, gst::Caps) {
    let out = bgaudio(path, "", &s16(downstream), Some(1));
    assert!(out.error.is_none(), "{:?}", out.error);
    let caps = out.caps.clone().expect("caps");
    (out.rate(), out.channels() as i32, caps)
}

#[test]
fn fixates_to_the_files_own_format() {
    init();
    let dir = fixture_dir("decode");
    let flac = dir.join("hires.flac");
    make_sine(&flac, 96_000, 2, 1000.0, 48_000, "flacenc");
    let wav = dir.join("narrow.wav");
    make_sine(&wav, 8_000, 1, 500.0, 4_000, "wavenc");
    let surround = dir.join("surround.wav");
    make_sine(&surround, 48_000, 6, 500.0, 4_000, "wavenc");

    let (rate, channels, _) = negotiated(&flac, ANY);
    assert_eq!((rate, channels), (96_000, 2));
    let (rate, channels, _) = negotiated(&wav, ANY);
    assert_eq!((rate, channels), (8_000, 1));
    let (rate, channels, caps) = negotiated(&surround, ANY);
    assert_eq!((rate, channels), (48_000, 6));
    let mask = caps
        .structure(0)
        .unwrap()
        .get::<gst::Bitmask>("channel-mask");
    assert!(matches!(mask, Ok(m) if m.count_ones() == 6), "{caps}");
    let expected = format!(
        "S16{}",
        if cfg!(target_endian = "little") {
            "LE"
        } else {
            "BE"
        }
    );
    assert_eq!(
        caps.structure(0).unwrap().get::<&str>("format").unwrap(),
        expected
    );
}

#[test]
fn follows_the_format_downstream_asks_for() {
    init();
    let dir = fixture_dir("decode");
    let flac = dir.join("hires.flac");
    make_sine(&flac, 96_000, 2, 1000.0, 48_000, "flacenc");
    let (rate, channels, _) = negotiated(&flac, ",rate=24000,channels=1");
    assert_eq!((rate, channels), (24_000, 1));
    let (rate, channels, _) = negotiated(&flac, ",rate=[8000,16000],channels=[4,8]");
    assert_eq!((rate, channels), (16_000, 4));

    // The whole file at the imposed format: 0.5 s at 24 kHz, within the resampler's edges.
    let out = bgaudio(&flac, "", &s16(",rate=24000,channels=1"), None);
    assert!(out.eos);
    assert!(
        (out.samples.len() as i64 - 12_000).abs() <= 2,
        "{}",
        out.samples.len()
    );
}

/// Downstream leaves a range open: the decode chain starts at the file's own format and is
/// told the output format once it is chosen (16 kHz, 4 channels here), so it converts again
/// before the first samples reach the copy. What arrives is that format: 0.5 s of a 1 kHz sine
/// at 16 kHz in every channel, not the file's 96 kHz stereo samples under the new caps.
#[test]
fn a_format_chosen_from_a_range_reaches_the_data() {
    init();
    let dir = fixture_dir("decode");
    // A file of its own: one probed or decoded before in this process would start its chain
    // at the output format already, or share a copy with no chain at all.
    let flac = dir.join("range.flac");
    make_sine(&flac, 96_000, 2, 1000.0, 48_000, "flacenc");
    let out = bgaudio(&flac, "", &s16(",rate=[8000,16000],channels=[4,8]"), None);
    assert!(out.eos);
    assert_eq!((out.rate(), out.channels()), (16_000, 4));
    let frames = out.samples.len() / 4;
    assert!((frames as i64 - 8_000).abs() <= 2, "{frames} frames");
    for channel in 0..4 {
        let samples: Vec<i16> = out
            .samples
            .iter()
            .skip(channel)
            .step_by(4)
            .copied()
            .collect();
        // Rising zero crossings: one per period, 500 in 0.5 s of 1 kHz.
        let rising = samples.windows(2).filter(|w| w[0] < 0 && w[1] >= 0).count();
        assert!(
            (rising as i64 - 500).abs() <= 2,
            "channel {channel}: {rising}"
        );
        let peak = samples.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
        assert!(peak > 1000, "channel {channel}: peak {peak}");
    }
}

#[test]
fn buffers_are_20ms_by_default_and_follow_buffer_duration() {
    init();
    let path = clip("wav", "wavenc");
    let out = bgaudio(&path, "", &s16(ANY), None);
    let frames: Vec<usize> = out.buffers.iter().map(|b| b.4).collect();
    assert!(
        frames[..frames.len() - 1].iter().all(|f| *f == 882),
        "{frames:?}"
    );
    assert_eq!(frames.iter().sum::<usize>(), 66_000);
    assert_eq!(*frames.last().unwrap(), 66_000 % 882);
    assert_eq!(out.buffers[0].0, Some(gst::ClockTime::ZERO));

    let out = bgaudio(&path, "buffer-duration=10000000", &s16(ANY), Some(2000));
    assert_eq!(out.buffers[0].4, 441);
}

#[test]
fn answers_duration_in_time_and_none_while_looping() {
    init();
    let path = clip("flac", "flacenc");
    for (props, expect) in [
        (
            "",
            Some(gst::ClockTime::from_nseconds(
                66_000 * 1_000_000_000 / 44_100,
            )),
        ),
        ("loop=true", None),
    ] {
        let pipeline = gst::parse::launch(&format!(
            "bgaudiosrc name=src location=\"{}\" {props} ! fakesink",
            path.display()
        ))
        .unwrap();
        pipeline.set_state(gst::State::Paused).unwrap();
        let (res, _, _) = pipeline.state(gst::ClockTime::from_seconds(5));
        assert!(res.is_ok());
        let src = pipeline
            .downcast_ref::<gst::Bin>()
            .unwrap()
            .by_name("src")
            .unwrap();
        let mut q = gst::query::Duration::new(gst::Format::Time);
        assert!(src.src_pads()[0].query(&mut q), "{props}: query answered");
        let got = match q.result() {
            gst::GenericFormattedValue::Time(t) => t,
            other => panic!("{other:?}"),
        };
        match expect {
            // The decoder's estimate before the cache is complete may differ by a frame.
            Some(d) => {
                let got = got.expect("a duration");
                assert!(
                    got.nseconds().abs_diff(d.nseconds()) < 1_000_000,
                    "{got} vs {d}"
                );
            }
            None => assert_eq!(got, None),
        }
        let pos = pipeline.query_position::<gst::ClockTime>();
        assert!(pos.is_some(), "position answered in TIME");
        pipeline.set_state(gst::State::Null).unwrap();
    }
}

#[test]
fn renegotiation_keeps_the_format_downstream_still_allows() {
    init();
    let path = clip("wav", "wavenc");
    let pipeline = pipeline(&format!(
        "bgaudiosrc location=\"{}\" loop=true ! capsfilter name=f caps={} ! appsink name=sink",
        path.display(),
        s16(",rate=48000")
    ));
    let filter = pipeline.by_name("f").unwrap();
    let pad = filter.static_pad("src").unwrap();
    let changed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let changed_probe = changed.clone();
    let filter_probe = filter.clone();
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        let offset = info.buffer().map(|b| b.offset()).unwrap_or(0);
        if offset >= 48_000 && !changed_probe.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let caps: gst::Caps = s16(",rate=[8000,96000]").parse().unwrap();
            filter_probe.set_property("caps", caps);
        }
        gst::PadProbeReturn::Ok
    });
    let out = collect_pipeline(&pipeline, Some(48_000 * 3));
    assert!(changed.load(std::sync::atomic::Ordering::SeqCst));
    assert!(out.error.is_none(), "{:?}", out.error);
    assert!(out.samples.len() / 2 >= 48_000 * 3);
    assert_eq!(out.rate(), 48_000);
    assert_contiguous(&out);
}
