// SPDX-License-Identifier: MIT OR Apache-2.0

//! The gain stage: linear gain on interleaved S16 with rounding and saturation.

/// Largest gain the `volume` property accepts (the same range as the stock `volume` element).
pub const MAX_GAIN: f64 = 10.0;

/// Writes `src * gain` into `dst`, rounded to nearest and clipped to -32768..=32767, so loud
/// input saturates instead of wrapping. Within 1 LSB of `round(x * gain)`.
///
/// Both paths are branch-free vector loops. Attenuation (the usual case for background audio) is
/// integer arithmetic: the gain in Q15, one rounding 16 x 16-bit multiply (SSSE3's pmulhrsw where
/// the CPU has it); it cannot overflow, since |x * gain| < 32768. Amplification uses
/// floats, clamped before the conversion back; the rounding and conversion use the 1.5 * 2^23
/// trick (adding it leaves the rounded integer in the low mantissa bits) instead of a per-sample
/// `round()` and a saturating float-to-integer cast, which would keep the loop scalar.
pub fn apply(src: &[i16], dst: &mut [i16], gain: f64) {
    debug_assert_eq!(src.len(), dst.len());
    let gain = if gain.is_finite() { gain.max(0.0) } else { 0.0 };
    if gain < 1.0 {
        // Q15: at most 32767 for a gain just below 1. The quantisation error of the gain is at
        // most 2^-16, under half an LSB on a full-scale sample.
        let q = (gain * 32768.0).round().min(32767.0) as i16;
        attenuate(src, dst, q);
        return;
    }
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
    const MAGIC_BITS: i32 = 0x4B40_0000;
    let gain = gain as f32;
    for (d, s) in dst.iter_mut().zip(src) {
        let v = (*s as f32 * gain).clamp(-32768.0, 32767.0);
        *d = ((v + MAGIC).to_bits() as i32 - MAGIC_BITS) as i16;
    }
}

/// `dst = round(src * q / 2^15)` for a Q15 gain `q` in 0..=32767: never overflows.
fn attenuate(src: &[i16], dst: &mut [i16], q: i16) {
    let n = src.len().min(dst.len());
    #[allow(unused_mut)]
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("ssse3") {
        // SAFETY: the CPU has SSSE3 (checked just above).
        done = unsafe { attenuate_ssse3(&src[..n], &mut dst[..n], q) };
    }
    for (d, s) in dst[done..n].iter_mut().zip(&src[done..n]) {
        *d = ((*s as i32 * q as i32 + (1 << 14)) >> 15) as i16;
    }
}

/// SSSE3's pmulhrsw is exactly `(x * q + 2^14) >> 15` on eight samples at once: one
/// instruction a vector. (From the scalar loop the compiler widens to 32-bit multiplies, which
/// costs several times more.) Returns how many samples it did, a multiple of 8.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "ssse3")]
unsafe fn attenuate_ssse3(src: &[i16], dst: &mut [i16], q: i16) -> usize {
    use std::arch::x86_64::*;
    let n = src.len().min(dst.len()) / 8 * 8;
    let qv = _mm_set1_epi16(q);
    let mut i = 0;
    while i < n {
        // SAFETY: i + 8 <= n, inside both slices; unaligned loads and stores need no alignment.
        unsafe {
            let x = _mm_loadu_si128(src.as_ptr().add(i).cast::<__m128i>());
            _mm_storeu_si128(
                dst.as_mut_ptr().add(i).cast::<__m128i>(),
                _mm_mulhrs_epi16(x, qv),
            );
        }
        i += 8;
    }
    n
}

/// The gain of every output frame: the volume, ramped linearly over a few milliseconds whenever
/// it changes, times an optional fade-in from frame 0 and an optional fade-out.
///
/// Frames are counted on the element's output sample counter. All three parts are linear
/// segments, so the step between two consecutive frames' gains is bounded by
/// `|volume change| / ramp_frames` plus `volume / fade_frames`.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    ramp_from: f64,
    ramp_to: f64,
    ramp_start: u64,
    ramp_frames: u64,
    fade_in_frames: u64,
    /// First frame and length; the first frame may lie before frame 0 (see `moved`).
    fade_out: Option<(i64, u64)>,
}

impl Envelope {
    /// Starts at `volume` with no ramp in progress.
    pub fn new(volume: f64, ramp_frames: u64, fade_in_frames: u64) -> Self {
        Envelope {
            ramp_from: volume,
            ramp_to: volume,
            ramp_start: 0,
            ramp_frames: ramp_frames.max(1),
            fade_in_frames,
            fade_out: None,
        }
    }

    /// From frame `at` on, moves towards `volume` over the ramp length, starting from the gain
    /// the volume has at `at` (so a change in the middle of a ramp does not jump).
    pub fn set_volume(&mut self, volume: f64, at: u64) {
        if volume == self.ramp_to {
            return;
        }
        self.ramp_from = self.volume_at(at);
        self.ramp_to = volume;
        self.ramp_start = at;
    }

    /// Fades out over `frames` frames from frame `at`; a fade already running is kept.
    pub fn fade_out(&mut self, at: u64, frames: u64) {
        if self.fade_out.is_none() {
            self.fade_out = Some((at as i64, frames));
        }
    }

    /// The first frame after the fade-out, if one was asked for.
    pub fn end(&self) -> Option<u64> {
        self.fade_out
            .map(|(start, frames)| (start + frames as i64).max(0) as u64)
    }

    /// The envelope for output that goes on at frame `to` after frame `from` (a seek): the
    /// gain goes on from where it was, a ramp towards the volume from the gain reached, a
    /// fade-out under way from the point it reached (so it still ends, with EOS). No fade-in.
    pub fn moved(&self, from: u64, to: u64) -> Self {
        let shift = to as i64 - from as i64;
        Envelope {
            ramp_from: self.volume_at(from),
            ramp_to: self.ramp_to,
            ramp_start: to,
            ramp_frames: self.ramp_frames,
            fade_in_frames: 0,
            fade_out: self.fade_out.map(|(start, frames)| (start + shift, frames)),
        }
    }

    fn volume_at(&self, n: u64) -> f64 {
        let t = n.saturating_sub(self.ramp_start);
        if t >= self.ramp_frames {
            return self.ramp_to;
        }
        self.ramp_from + (self.ramp_to - self.ramp_from) * (t as f64 / self.ramp_frames as f64)
    }

    /// The gain of frame `n`.
    pub fn at(&self, n: u64) -> f64 {
        let mut gain = self.volume_at(n);
        if n < self.fade_in_frames {
            gain *= n as f64 / self.fade_in_frames as f64;
        }
        if let Some((start, frames)) = self.fade_out {
            let n = n as i64;
            if n >= start + frames as i64 {
                return 0.0;
            }
            if n >= start {
                gain *= 1.0 - (n - start) as f64 / frames as f64;
            }
        }
        gain
    }

    /// The gain of frames `from..to` if it is the same for all of them: the common case, which
    /// then costs one multiplication per sample (or nothing at 1.0).
    pub fn constant(&self, from: u64, to: u64) -> Option<f64> {
        let ramping = self.ramp_from != self.ramp_to && from < self.ramp_start + self.ramp_frames;
        let fading_in = from < self.fade_in_frames;
        let fading_out = self.fade_out.is_some_and(|(start, _)| to as i64 > start);
        (!ramping && !fading_in && !fading_out).then_some(self.ramp_to)
    }
}

/// Writes `src * gain` as F32 into `dst`, full scale 1.0: `x * gain / 32768`. At gain 1 that is
/// exactly `x / 32768` (a power of two: no rounding). Floats need no saturation.
pub fn apply_f32(src: &[i16], dst: &mut [f32], gain: f64) {
    debug_assert_eq!(src.len(), dst.len());
    let gain = if gain.is_finite() { gain.max(0.0) } else { 0.0 };
    let scale = (gain / 32768.0) as f32;
    for (d, s) in dst.iter_mut().zip(src) {
        *d = *s as f32 * scale;
    }
}

/// Writes `src * envelope.at(frame)` into `dst` with `apply` (`apply` or `apply_f32`), frame by
/// frame, where `src` starts at output frame `first_frame`. Used only while a ramp or fade is in
/// progress.
pub fn apply_envelope<T>(
    src: &[i16],
    dst: &mut [T],
    channels: usize,
    first_frame: u64,
    envelope: &Envelope,
    apply: impl Fn(&[i16], &mut [T], f64),
) {
    for (i, (s, d)) in src
        .chunks_exact(channels)
        .zip(dst.chunks_exact_mut(channels))
        .enumerate()
    {
        apply(s, d, envelope.at(first_frame + i as u64));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(x: i16, gain: f64) -> i16 {
        (x as f64 * gain).round().clamp(-32768.0, 32767.0) as i16
    }

    #[test]
    fn half_gain_rounds_within_one_lsb() {
        let src: Vec<i16> = (i16::MIN..=i16::MAX).step_by(7).collect();
        let mut dst = vec![0; src.len()];
        apply(&src, &mut dst, 0.5);
        for (s, d) in src.iter().zip(&dst) {
            assert!(
                (*d as i32 - reference(*s, 0.5) as i32).abs() <= 1,
                "{s} -> {d}"
            );
        }
    }

    #[test]
    fn every_attenuation_is_within_one_lsb() {
        // An odd length, so both the 8-sample loop and the scalar tail run.
        let src: Vec<i16> = (i16::MIN..=i16::MAX).step_by(3).collect();
        assert_ne!(src.len() % 8, 0);
        let mut dst = vec![0; src.len()];
        for gain in [0.001, 0.1, 0.3, 0.333, 0.7, 0.999, 0.99999, 1.5, 2.7] {
            apply(&src, &mut dst, gain);
            for (s, d) in src.iter().zip(&dst) {
                assert!(
                    (*d as i32 - reference(*s, gain) as i32).abs() <= 1,
                    "{gain}: {s} -> {d}"
                );
            }
        }
    }

    #[test]
    fn large_gain_saturates_and_never_wraps() {
        let src = [i16::MIN, -20000, -1, 0, 1, 20000, i16::MAX];
        let mut dst = [0; 7];
        apply(&src, &mut dst, 3.0);
        assert_eq!(dst, [i16::MIN, i16::MIN, -3, 0, 3, i16::MAX, i16::MAX]);
        apply(&src, &mut dst, MAX_GAIN);
        assert_eq!(dst, [i16::MIN, i16::MIN, -10, 0, 10, i16::MAX, i16::MAX]);
    }

    #[test]
    fn zero_gain_is_silence() {
        let src = [i16::MIN, -5, 5, i16::MAX];
        let mut dst = [1; 4];
        apply(&src, &mut dst, 0.0);
        assert_eq!(dst, [0; 4]);
    }

    #[test]
    fn envelope_ramps_volume_changes_and_fades() {
        let mut env = Envelope::new(1.0, 100, 0);
        assert_eq!(env.constant(0, 960), Some(1.0));
        env.set_volume(0.5, 1000);
        assert_eq!(env.constant(1000, 1960), None);
        assert_eq!(env.at(1000), 1.0);
        assert!((env.at(1050) - 0.75).abs() < 1e-9);
        assert_eq!(env.at(1100), 0.5);
        assert_eq!(env.constant(1100, 2000), Some(0.5));
        // A change in the middle of a ramp starts from where the ramp is.
        let mut env = Envelope::new(1.0, 100, 0);
        env.set_volume(0.0, 0);
        env.set_volume(1.0, 50);
        assert!((env.at(50) - 0.5).abs() < 1e-9);
        assert_eq!(env.at(150), 1.0);

        let mut env = Envelope::new(1.0, 100, 480);
        assert_eq!(env.at(0), 0.0);
        assert!((env.at(240) - 0.5).abs() < 1e-9);
        assert_eq!(env.constant(0, 960), None);
        assert_eq!(env.constant(480, 960), Some(1.0));
        env.fade_out(1000, 200);
        assert_eq!(env.end(), Some(1200));
        assert_eq!(env.constant(960, 1020), None);
        assert!((env.at(1100) - 0.5).abs() < 1e-9);
        assert_eq!(env.at(1200), 0.0);
    }

    #[test]
    fn a_fade_out_goes_on_where_a_seek_moves_the_output() {
        let mut env = Envelope::new(0.5, 100, 0);
        env.fade_out(1000, 200);
        // A seek at frame 1100 (half-way) to frame 40: the fade goes on from half-way.
        let moved = env.moved(1100, 40);
        assert!((moved.at(40) - 0.25).abs() < 1e-9);
        assert_eq!(moved.end(), Some(140));
        assert_eq!(moved.at(140), 0.0);
        // Back past the fade's start: it has gone further than frame 0 would show.
        let moved = env.moved(1150, 0);
        assert!((moved.at(0) - 0.125).abs() < 1e-9);
        assert_eq!(moved.end(), Some(50));
        // A ramp goes on from the gain reached.
        let mut env = Envelope::new(1.0, 100, 0);
        env.set_volume(0.0, 0);
        let moved = env.moved(50, 1000);
        assert!((moved.at(1000) - 0.5).abs() < 1e-9);
        assert_eq!(moved.at(1100), 0.0);
    }

    #[test]
    fn envelope_is_applied_per_frame() {
        let env = Envelope::new(1.0, 1, 4);
        let src = [1000i16; 8];
        let mut dst = [0i16; 8];
        apply_envelope(&src, &mut dst, 2, 0, &env, apply);
        assert_eq!(dst, [0, 0, 250, 250, 500, 500, 750, 750]);
    }

    #[test]
    fn unity_gain_is_identity() {
        let src: Vec<i16> = (i16::MIN..=i16::MAX).collect();
        let mut dst = vec![0; src.len()];
        apply(&src, &mut dst, 1.0);
        assert_eq!(src, dst);
    }
}
