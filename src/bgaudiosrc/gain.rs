// SPDX-License-Identifier: MIT OR Apache-2.0

//! The gain stage: linear gain on interleaved S16 with rounding and saturation.

/// Largest gain the `volume` property accepts (the same range as the stock `volume` element).
pub const MAX_GAIN: f64 = 10.0;

/// Writes `src * gain` into `dst`, rounded to nearest (ties to even) and clipped to
/// -32768..=32767, so loud input saturates instead of wrapping.
///
/// The loop body is branch-free float arithmetic so the compiler vectorises it: the rounding uses
/// the 1.5 * 2^23 trick (exact for |x| < 2^22, far above any clipped S16 value) instead of a
/// per-sample `round()` call.
pub fn apply(src: &[i16], dst: &mut [i16], gain: f64) {
    debug_assert_eq!(src.len(), dst.len());
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
    let gain = gain as f32;
    for (d, s) in dst.iter_mut().zip(src) {
        let v = (*s as f32 * gain).clamp(-32768.0, 32767.0);
        *d = ((v + MAGIC) - MAGIC) as i16;
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
    fn unity_gain_is_identity() {
        let src: Vec<i16> = (i16::MIN..=i16::MAX).collect();
        let mut dst = vec![0; src.len()];
        apply(&src, &mut dst, 1.0);
        assert_eq!(src, dst);
    }
}
