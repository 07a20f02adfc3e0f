// SPDX-License-Identifier: MIT OR Apache-2.0

//! Loops of files not made to loop: trim-silence on encoder padding (MP3, M4A), loop-crossfade on
//! a file that ends at full level, start-position and random-start (all from one shared copy:
//! `tests/shared_cache.rs`).

mod common;

use common::*;
use gst::prelude::*;
use std::path::PathBuf;

const RATE: usize = 48_000;

fn caps() -> String {
    s16(",rate=48000,channels=1")
}

/// 1 s of a 441 Hz tone at 48 kHz mono through `encoder` (`ext` names the file).
fn tone(ext: &str, encoder: &str) -> PathBuf {
    let path = fixture_dir("loops").join(format!("tone.{ext}"));
    make_sine(&path, 48_000, 1, 441.0, 48_000, encoder);
    path
}

/// The longest run of consecutive samples under 400 in magnitude (the tone is at about 26000):
/// a dropout at a seam. A sine's own zero crossings make runs of one or two samples.
fn longest_quiet_run(samples: &[i16]) -> usize {
    let (mut longest, mut run) = (0, 0);
    for s in samples {
        if s.unsigned_abs() < 400 {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    longest
}

/// Three seconds of `path` looped with `props`, past its first quarter second (the decoder's
/// own start delay is not a seam).
fn looped(path: &std::path::Path, props: &str) -> Vec<i16> {
    let out = bgaudio(path, &format!("loop=true {props}"), &caps(), Some(3 * RATE));
    assert!(out.error.is_none(), "{:?}", out.error);
    out.samples[RATE / 4..].to_vec()
}

#[test]
fn trim_silence_closes_the_mp3_padding_gap() {
    init();
    let mp3 = tone("mp3", "lamemp3enc");
    let untrimmed = longest_quiet_run(&looped(&mp3, ""));
    let trimmed = longest_quiet_run(&looped(&mp3, "trim-silence=true"));
    eprintln!("mp3: quiet run {untrimmed} samples untrimmed, {trimmed} trimmed");
    assert!(
        untrimmed > RATE / 100,
        "the padding gap is there: {untrimmed}"
    );
    assert!(trimmed <= RATE / 1000, "no quiet run over 1 ms: {trimmed}");
}

#[test]
fn trim_silence_closes_the_m4a_padding_gap() {
    init();
    if gst::ElementFactory::find("avenc_aac").is_none() {
        eprintln!("avenc_aac not installed: skipped");
        return;
    }
    let m4a = tone("m4a", "avenc_aac ! mp4mux");
    let untrimmed = longest_quiet_run(&looped(&m4a, ""));
    let trimmed = longest_quiet_run(&looped(&m4a, "trim-silence=true"));
    eprintln!("m4a: quiet run {untrimmed} samples untrimmed, {trimmed} trimmed");
    assert!(
        untrimmed > RATE / 200,
        "the padding gap is there: {untrimmed}"
    );
    assert!(trimmed <= RATE / 1000, "no quiet run over 1 ms: {trimmed}");
}

/// 1.0125 s of a 440 Hz sine that fades in from silence and ends at full level, mid-cycle: it
/// clicks when looped. WAV, so both chains decode it bit for bit.
fn clicking() -> PathBuf {
    let path = fixture_dir("loops").join("clicking-peak.wav");
    if !path.exists() {
        let tmp = path.with_extension("part");
        // Ends a quarter cycle past a whole number of cycles: at the top of the wave.
        let frames = 48_574usize;
        let samples: Vec<i16> = (0..frames)
            .map(|i| {
                let fade = (i as f64 / 480.0).min(1.0);
                (fade * 26_000.0 * (2.0 * std::f64::consts::PI * 440.0 * i as f64 / 48_000.0).sin())
                    as i16
            })
            .collect();
        write_wav(&tmp, &samples);
        std::fs::rename(&tmp, &path).unwrap();
    }
    path
}

/// A 48 kHz mono S16 WAV file.
fn write_wav(path: &std::path::Path, samples: &[i16]) {
    let data: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    let mut wav = Vec::new();
    wav.extend(b"RIFF");
    wav.extend((36 + data.len() as u32).to_le_bytes());
    wav.extend(b"WAVEfmt ");
    wav.extend(16u32.to_le_bytes());
    wav.extend(1u16.to_le_bytes());
    wav.extend(1u16.to_le_bytes());
    wav.extend(48_000u32.to_le_bytes());
    wav.extend((48_000u32 * 2).to_le_bytes());
    wav.extend(2u16.to_le_bytes());
    wav.extend(16u16.to_le_bytes());
    wav.extend(b"data");
    wav.extend((data.len() as u32).to_le_bytes());
    wav.extend(data);
    std::fs::write(path, wav).unwrap();
}

fn steps(samples: &[i16]) -> Vec<u32> {
    samples
        .windows(2)
        .map(|w| (w[1] as i32 - w[0] as i32).unsigned_abs())
        .collect()
}

#[test]
fn a_crossfade_removes_the_click_and_the_loop_is_exactly_periodic() {
    init();
    let path = clicking();
    let file = reference(&path, &caps()).samples;
    let length = file.len();
    // The file's own 99.9th-percentile step.
    let mut own = steps(&file);
    own.sort_unstable();
    let p999 = own[own.len() * 999 / 1000];

    // Without a crossfade the seam jumps from full level to silence.
    let plain = bgaudio(&path, "loop=true", &caps(), Some(3 * RATE)).samples;
    let click = steps(&plain[length - 50..length + 50])
        .into_iter()
        .max()
        .unwrap();
    assert!(
        click > 3 * p999,
        "the click is there: step {click}, p99.9 {p999}"
    );

    // With 200 ms: no step near a seam beyond 1.5 times the file's own.
    let crossfade = RATE / 5;
    let out = bgaudio(
        &path,
        "loop=true loop-crossfade=200000000",
        &caps(),
        Some(4 * RATE),
    );
    assert!(out.error.is_none());
    let s = &out.samples;
    let period = length - crossfade;
    for seam in [
        length - crossfade,
        length - crossfade + period,
        length - crossfade + 2 * period,
    ] {
        let worst = steps(&s[seam - 100..seam + crossfade + 100])
            .into_iter()
            .max()
            .unwrap();
        assert!(
            worst as f64 <= 1.5 * p999 as f64,
            "seam at {seam}: step {worst}, file p99.9 {p999}"
        );
    }
    // The first pass plays the file up to its last 200 ms as it is.
    assert!(s[..length - crossfade] == file[..length - crossfade]);
    // From the second pass on, exactly periodic with period length - crossfade.
    assert!(s[length..length + period] == s[length + period..length + 2 * period]);
}

#[test]
fn start_position_is_sample_exact_and_later_passes_start_at_the_start() {
    init();
    let path = fixture_dir("loops").join("ten-seconds.wav");
    make_sine(&path, 48_000, 1, 333.0, 480_000, "wavenc");
    let file = reference(&path, &caps()).samples;
    let out = bgaudio(
        &path,
        "loop=true start-position=7000000000",
        &caps(),
        Some(5 * RATE),
    );
    assert!(out.error.is_none());
    let s = &out.samples;
    assert!(s[..3 * RATE] == file[7 * RATE..]);
    assert!(s[3 * RATE..5 * RATE] == file[..2 * RATE]);
    // Timestamps still start at 0.
    assert_eq!(out.buffers[0].0, Some(gst::ClockTime::ZERO));
}

#[test]
fn random_starts_differ_and_loop_with_the_files_period() {
    init();
    let path = fixture_dir("loops").join("ramp-1.2s.wav");
    if !path.exists() {
        // A ramp: every frame differs, so an opening tells where it started.
        let tmp = path.with_extension("part");
        let samples: Vec<i16> = (0..57_600).map(|i| (i - 28_800) as i16).collect();
        write_wav(&tmp, &samples);
        std::fs::rename(&tmp, &path).unwrap();
    }
    let file = reference(&path, &caps()).samples;
    let length = file.len();

    let mut openings = Vec::new();
    for _ in 0..4 {
        let out = bgaudio(
            &path,
            "loop=true random-start=true",
            &caps(),
            Some(5 * RATE),
        );
        assert!(out.error.is_none());
        let s = out.samples;
        let start = file
            .windows(2)
            .position(|w| w == &s[..2])
            .expect("the opening is in the file");
        assert!(s[..length - start] == file[start..], "plays on from there");
        assert!(
            s[length - start..2 * length - start] == file[..],
            "then the file from its start"
        );
        openings.push(start);
    }
    openings.sort_unstable();
    openings.dedup();
    assert!(openings.len() >= 3, "distinct openings: {openings:?}");
}

#[test]
fn the_loop_settings_work_in_mixing_mode_too() {
    init();
    let path = fixture_dir("loops").join("ten-seconds.wav");
    make_sine(&path, 48_000, 1, 333.0, 480_000, "wavenc");
    let file = reference(&path, &caps()).samples;
    // Live: half a second of output takes half a second.
    let out = bgaudio(
        &path,
        "mode=mixing fade-in-duration=0 loop=true trim-silence=true loop-crossfade=100000000 \
         start-position=7000000000",
        &caps(),
        Some(RATE / 2),
    );
    assert!(out.error.is_none(), "{:?}", out.error);
    assert!(out.samples[..RATE / 2] == file[7 * RATE..7 * RATE + RATE / 2]);
}

/// 1.2 s: 100 ms of silence, 1 s of noise at ±1000..26000 (no two places in it alike), 100 ms
/// of silence. 48 kHz mono WAV.
fn padded_noise() -> PathBuf {
    let path = fixture_dir("loops").join("padded-noise.wav");
    if !path.exists() {
        let tmp = path.with_extension("part");
        let mut seed = 0x2545_f491u32;
        let mut samples = vec![0i16; 4_800];
        samples.extend((0..48_000).map(|_| {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let level = 1_000 + (seed >> 8) as i32 % 25_000;
            (if seed & 1 == 0 { level } else { -level }) as i16
        }));
        samples.extend(std::iter::repeat_n(0i16, 4_800));
        write_wav(&tmp, &samples);
        std::fs::rename(&tmp, &path).unwrap();
    }
    path
}

#[test]
fn a_seek_lands_where_the_shaped_loop_plays_that_frame() {
    init();
    let path = padded_noise();
    let props = "loop=true trim-silence=true loop-crossfade=200000000 start-position=300000000";
    let whole = bgaudio(&path, props, &caps(), Some(4 * RATE));
    assert!(whole.error.is_none(), "{:?}", whole.error);
    // The first pass plays file frames 14400..43200 (from the start position to the tail less
    // the crossfade); each later pass, 38400 frames, is a 9600-frame seam and then the rest.
    let first_pass = 28_800;
    let period = 38_400;
    for (frame, what) in [
        (10_080, "in the first pass"),
        (first_pass + period + 4_032, "in the second seam"),
        (first_pass + 2 * period + 20_448, "past the third seam"),
    ] {
        let pipeline = pipeline(&format!(
            "bgaudiosrc location=\"{}\" {props} ! {} ! appsink name=sink",
            path.display(),
            caps()
        ));
        pipeline.set_state(gst::State::Paused).unwrap();
        assert!(pipeline.state(gst::ClockTime::from_seconds(10)).0.is_ok());
        let at = gst::ClockTime::from_nseconds(frame as u64 * 1_000_000_000 / RATE as u64);
        pipeline
            .seek_simple(gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE, at)
            .unwrap();
        assert!(pipeline.state(gst::ClockTime::from_seconds(10)).0.is_ok());
        let out = collect_pipeline(&pipeline, Some(RATE / 2));
        assert!(out.error.is_none(), "{:?}", out.error);
        assert_eq!(out.buffers[0].0, Some(at), "{what}");
        assert!(
            out.samples[..RATE / 2] == whole.samples[frame..frame + RATE / 2],
            "a seek to frame {frame} ({what}) plays what the loop plays there"
        );
    }
}
