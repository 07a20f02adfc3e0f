// SPDX-License-Identifier: MIT OR Apache-2.0

//! The loop shape: how a reader plays the passes of a copy kept whole. Arithmetic on frame
//! counts and samples only, so every function here is tested with plain numbers.
//!
//! - `trim`: leading and trailing frames whose samples are all at most this level are left out
//!   of every pass, at most `max_trim` frames at each end (`trim_bounds`).
//! - `crossfade`: with `looping`, each seam overlaps the last `crossfade` frames of the pass
//!   with its first ones, equal-power (`mix_seam`), at most half the pass; the loop period is
//!   the pass's length less the crossfade.
//!
//! A window over a stream plays the stream as it is: shapes apply to copies only.

/// How a reader plays the passes of a copy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shape {
    pub trim: Option<i16>,
    pub max_trim: u64,
    pub crossfade: u64,
    pub looping: bool,
}

impl Shape {
    /// How far behind a decoder still filling the copy the reader stays: what a trim or a seam
    /// may still take from the end of the pass.
    pub fn lookahead(&self) -> u64 {
        let trim = self.trim.map_or(0, |_| self.max_trim);
        let crossfade = if self.looping { self.crossfade } else { 0 };
        trim + crossfade
    }

    /// Nothing to shape: buffers can share the copy's memory.
    pub fn is_plain(&self) -> bool {
        self.trim.is_none() && (self.crossfade == 0 || !self.looping)
    }

    /// The frames a seam overlaps, for passes playing `head..tail`.
    pub fn crossfade_for(&self, head: u64, tail: u64) -> u64 {
        if self.looping {
            self.crossfade.min(tail.saturating_sub(head) / 2)
        } else {
            0
        }
    }
}

/// Whether any sample of `frame` is above `threshold` (in absolute value).
pub fn is_loud(frame: &[i16], threshold: i16) -> bool {
    frame
        .iter()
        .any(|s| s.unsigned_abs() > threshold.unsigned_abs())
}

/// The frames a pass plays, `head..tail`, of a copy of `frames` frames whose frame `f` is loud
/// when `loud(f)`: silent frames are left out at each end, at most `max_trim` at each. A copy
/// that is silent throughout keeps all its frames, and so does one that would be trimmed away.
pub fn trim_bounds(frames: u64, max_trim: u64, loud: impl Fn(u64) -> bool) -> (u64, u64) {
    let first = (0..frames.min(max_trim)).find(|f| loud(*f));
    let last = (frames.saturating_sub(max_trim)..frames)
        .rev()
        .find(|f| loud(*f));
    let bounds = match (first, last) {
        // Silent at both ends: trim only if something in between is not.
        (None, None) if !(0..frames).any(&loud) => (0, frames),
        (head, tail) => (
            head.unwrap_or(max_trim.min(frames)),
            tail.map_or(frames.saturating_sub(max_trim), |t| t + 1),
        ),
    };
    if bounds.1 > bounds.0 {
        bounds
    } else {
        (0, frames)
    }
}

/// The seam: `outgoing` (the last frames of a pass) fading out (cosine) over `incoming` (the
/// first frames of the next) fading in (sine), frame by frame. Equal-power curves, so the level
/// holds across uncorrelated material; rounded, and saturated where correlated material adds up
/// above full scale.
pub fn mix_seam(outgoing: &[i16], incoming: &[i16], channels: usize) -> Vec<i16> {
    let channels = channels.max(1);
    let length = (outgoing.len().min(incoming.len()) / channels).max(1) as f64;
    let mut mixed = Vec::with_capacity(outgoing.len());
    for (i, (a, b)) in outgoing
        .chunks_exact(channels)
        .zip(incoming.chunks_exact(channels))
        .enumerate()
    {
        let angle = (i as f64 + 0.5) / length * std::f64::consts::FRAC_PI_2;
        let (fade_in, fade_out) = angle.sin_cos();
        mixed.extend(a.iter().zip(b).map(|(a, b)| {
            (*a as f64 * fade_out + *b as f64 * fade_in)
                .round()
                .clamp(-32768.0, 32767.0) as i16
        }));
    }
    mixed
}

/// Where a reader is in a copy: the frame it reads next, the frames it has played of this pass,
/// and how far into a seam it is when it is in one (the seam is read from the mixed frames,
/// then the pass goes on at `head + crossfade`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Place {
    pub pos: u64,
    pub in_pass: u64,
    pub seam: Option<u64>,
}

/// Where output frame `frame` lands, when the first pass starts at frame `first` of the file
/// and passes play `head..tail` with seams of `crossfade` frames: the first pass plays from the
/// later of `first` and the head to the end of the pass (the tail, less the crossfade when
/// looping); each later pass is a seam, then the rest of the pass, a period of the pass's length
/// less the crossfade. Without looping, a frame past the first pass lands at its end.
pub fn place(frame: u64, first: u64, head: u64, tail: u64, crossfade: u64, looping: bool) -> Place {
    let end = tail - crossfade;
    let from = head.max(first);
    let first_pass = end.saturating_sub(from);
    let (pos, in_pass, seam) = if frame < first_pass {
        (from + frame, frame, None)
    } else if !looping || end <= head {
        // Past the end: the pass ends (and loops, from a complete pass, when looping).
        (end, frame.max(1), None)
    } else {
        let into = (frame - first_pass) % (end - head);
        if into < crossfade {
            (end, into, Some(into))
        } else {
            (head + into, into, None)
        }
    };
    Place { pos, in_pass, seam }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loud_in(samples: &[i16]) -> impl Fn(u64) -> bool + '_ {
        move |f| samples[f as usize] != 0
    }

    #[test]
    fn trims_silent_ends_at_most_max_trim_each() {
        let mut s = vec![0i16; 100];
        s[10..80].fill(5);
        assert_eq!(trim_bounds(100, 50, loud_in(&s)), (10, 80));
        // At most 5 frames at each end.
        assert_eq!(trim_bounds(100, 5, loud_in(&s)), (5, 95));
        // Silent throughout: nothing to trim.
        assert_eq!(trim_bounds(100, 50, loud_in(&[0; 100])), (0, 100));
        // Loud only in the middle, beyond max_trim from both ends: trimmed by max_trim.
        let mut mid = vec![0i16; 100];
        mid[50] = 1;
        assert_eq!(trim_bounds(100, 10, loud_in(&mid)), (10, 90));
        // Nothing left after the trim: kept whole.
        assert_eq!(trim_bounds(4, 10, loud_in(&[0, 0, 0, 0])), (0, 4));
    }

    #[test]
    fn seams_fade_equal_power_and_saturate() {
        let out = [10_000i16; 8];
        let inc = [10_000i16; 8];
        let mixed = mix_seam(&out, &inc, 2);
        assert_eq!(mixed.len(), 8);
        // cos + sin > 1 between the ends: correlated material swells, never wraps.
        assert!(mixed.iter().all(|s| *s >= 10_000));
        let loud = mix_seam(&[32_000; 4], &[32_000; 4], 1);
        assert!(loud.iter().all(|s| *s == i16::MAX || *s >= 32_000));
        // The outgoing side dominates the first frame, the incoming the last.
        let ramp = mix_seam(&[1000, 1000, 1000, 1000], &[0, 0, 0, 0], 1);
        assert!(ramp[0] > 980 && ramp[3] < 200, "{ramp:?}");
    }

    #[test]
    fn places_output_frames_through_the_shaped_loop() {
        // Passes play 10..90 with 20-frame seams: the first pass is 10..70 (60 frames), each
        // later one a seam of 20 then 30..70 (a period of 60).
        let p = |frame, first| place(frame, first, 10, 90, 20, true);
        assert_eq!(
            p(0, 0),
            Place {
                pos: 10,
                in_pass: 0,
                seam: None
            }
        );
        assert_eq!(p(59, 0).pos, 69);
        assert_eq!(
            p(60, 0),
            Place {
                pos: 70,
                in_pass: 0,
                seam: Some(0)
            }
        );
        assert_eq!(p(79, 0).seam, Some(19));
        assert_eq!(
            p(80, 0),
            Place {
                pos: 30,
                in_pass: 20,
                seam: None
            }
        );
        assert_eq!(p(120, 0).seam, Some(0));
        // A first pass from frame 40 of the file is 30 frames long.
        assert_eq!(p(0, 40).pos, 40);
        assert_eq!(p(30, 40).seam, Some(0));
        // Without looping, past the end lands at the end.
        assert_eq!(place(500, 0, 0, 100, 0, false).pos, 100);
        assert_eq!(place(500, 0, 0, 100, 0, true).pos, 0);
    }

    #[test]
    fn the_shape_says_its_lookahead_and_crossfade() {
        let shape = Shape {
            trim: Some(100),
            max_trim: 50,
            crossfade: 30,
            looping: true,
        };
        assert_eq!(shape.lookahead(), 80);
        assert!(!shape.is_plain());
        assert_eq!(shape.crossfade_for(0, 40), 20);
        let once = Shape {
            looping: false,
            trim: None,
            ..shape
        };
        assert_eq!(once.lookahead(), 0);
        assert!(once.is_plain());
        assert_eq!(once.crossfade_for(0, 1000), 0);
    }
}
