// SPDX-License-Identifier: MIT OR Apache-2.0

//! The volume property: rounding, saturation, silence, changes while playing, range checks.

mod common;

use common::*;
use gst::glib;
use gst::prelude::*;
use std::path::PathBuf;

/// 1 s of a loud (0.8 full scale) 440 Hz sine, 16 kHz mono S16: the unscaled reference.
fn clip() -> PathBuf {
    let path = fixture_dir("volume").join("sine.wav");
    make_sine(&path, 16_000, 1, 440.0, 16_000, "wavenc");
    path
}

/// The clip through a bgaudiosrc named `src` into an appsink named `sink`.
fn clip_pipeline() -> gst::Pipeline {
    pipeline(&format!(
        "bgaudiosrc name=src location=\"{}\" ! {} ! appsink name=sink",
        clip().display(),
        s16("")
    ))
}

fn play(volume: f64) -> Vec<i16> {
    let out = bgaudio(&clip(), &format!("volume={volume}"), &s16(""), None);
    assert!(out.eos, "volume {volume}: {:?}", out.error);
    assert_eq!(out.samples.len(), 16_000);
    out.samples
}

#[test]
fn half_volume_is_rounded_half_within_one_lsb() {
    init();
    let unity = play(1.0);
    let half = play(0.5);
    assert!(unity.iter().any(|s| s.abs() > 20_000));
    for (i, (x, y)) in unity.iter().zip(&half).enumerate() {
        let expect = (*x as f64 * 0.5).round() as i32;
        assert!((*y as i32 - expect).abs() <= 1, "sample {i}: {x} -> {y}");
    }
}

#[test]
fn volume_three_saturates_without_wrapping() {
    init();
    let unity = play(1.0);
    let loud = play(3.0);
    let mut clipped = 0;
    for (i, (x, y)) in unity.iter().zip(&loud).enumerate() {
        let expect = (*x as f64 * 3.0).round().clamp(-32768.0, 32767.0) as i32;
        assert!((*y as i32 - expect).abs() <= 1, "sample {i}: {x} -> {y}");
        // Never wraps: the sign survives.
        assert!(x.signum() == y.signum(), "sample {i}: {x} -> {y}");
        if *y == i16::MAX || *y == i16::MIN {
            clipped += 1;
        }
    }
    assert!(clipped > 1000, "only {clipped} samples clipped");
}

#[test]
fn volume_zero_is_silence() {
    init();
    assert!(play(0.0).iter().all(|s| *s == 0));
}

#[test]
fn volume_change_while_playing_applies_to_later_buffers() {
    init();
    let unity = play(1.0);
    let pipeline = clip_pipeline();
    let src = pipeline.by_name("src").unwrap();
    let pad = src.static_pad("src").unwrap();
    // Switch to 0.25 once the output passes frame 8000 (the buffer after that one is scaled).
    let switch_at = std::sync::Arc::new(std::sync::Mutex::new(None::<u64>));
    let switch_probe = switch_at.clone();
    pad.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        if let Some(b) = info.buffer() {
            let mut at = switch_probe.lock().unwrap();
            if at.is_none() && b.offset_end() >= 8000 {
                *at = Some(b.offset_end());
                if let Some(src) = pad.parent_element() {
                    src.set_property("volume", 0.25);
                }
            }
        }
        gst::PadProbeReturn::Ok
    });
    let out = collect_pipeline(&pipeline, None);
    let at = switch_at.lock().unwrap().unwrap() as usize;
    assert_eq!(out.samples[..at], unity[..at]);
    assert_eq!(out.samples.len(), 16_000);
    assert_ramped(&unity, &out.samples, at, 1.0, 0.25);
}

/// 10 ms at 16 kHz: a volume change moves linearly over this many frames.
const RAMP: usize = 160;

/// From frame `at`, `out` moves from `unity * from` to `unity * to` over `RAMP` frames (the
/// volume ramp), then stays at `unity * to`.
fn assert_ramped(unity: &[i16], out: &[i16], at: usize, from: f64, to: f64) {
    for (i, (x, y)) in unity.iter().zip(out).enumerate().skip(at) {
        let t = ((i - at) as f64 / RAMP as f64).min(1.0);
        let gain = from + (to - from) * t;
        let expect = (*x as f64 * gain).round() as i32;
        assert!(
            (*y as i32 - expect).abs() <= 1,
            "sample {i}: {x} -> {y}, gain {gain}"
        );
    }
}

/// Sets a property through GObject as any C or Python caller does, so GLib validates it.
fn g_object_set(obj: &gst::Element, name: &str, value: glib::Value) {
    use glib::translate::ToGlibPtr;
    let name = std::ffi::CString::new(name).unwrap();
    unsafe {
        glib::gobject_ffi::g_object_set_property(
            obj.as_ptr() as *mut glib::gobject_ffi::GObject,
            name.as_ptr(),
            value.to_glib_none().0,
        );
    }
}

#[test]
fn out_of_range_values_are_refused_and_the_old_value_kept() {
    init();
    let src = gst::ElementFactory::make("bgaudiosrc")
        .property("volume", 0.7)
        .build()
        .unwrap();
    // GLib prints its "out of range" warning; make it non-fatal for this process.
    unsafe {
        glib::ffi::g_log_set_always_fatal(glib::ffi::G_LOG_FATAL_MASK as _);
    }
    for bad in [10.5, -0.1] {
        g_object_set(&src, "volume", bad.to_value());
        assert_eq!(src.property::<f64>("volume"), 0.7);
    }
    g_object_set(&src, "buffer-duration", 5_000_000_000u64.to_value());
    assert_eq!(src.property::<u64>("buffer-duration"), 20_000_000);
    g_object_set(&src, "volume", 10.0.to_value());
    assert_eq!(src.property::<f64>("volume"), 10.0);
}

#[test]
fn volume_follows_a_controller_per_buffer() {
    use gst_controller::prelude::*;
    init();
    let unity = play(1.0);
    let pipeline = clip_pipeline();
    let src = pipeline.by_name("src").unwrap();
    // Absolute values: 1.0 until 0.5 s, then 0.5 (step mode). 0.5 s is frame 8000, the start of
    // the 26th 20 ms buffer at 16 kHz.
    let control = gst_controller::InterpolationControlSource::new();
    control.set_mode(gst_controller::InterpolationMode::None);
    control.set(gst::ClockTime::ZERO, 1.0);
    control.set(gst::ClockTime::from_mseconds(500), 0.5);
    let binding = gst_controller::DirectControlBinding::new_absolute(&src, "volume", &control);
    src.add_control_binding(&binding).unwrap();

    let out = collect_pipeline(&pipeline, None);
    assert_eq!(out.samples.len(), 16_000);
    assert_eq!(out.samples[..8000], unity[..8000]);
    assert_ramped(&unity, &out.samples, 8000, 1.0, 0.5);
}
