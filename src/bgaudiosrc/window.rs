// SPDX-License-Identifier: MIT OR Apache-2.0

//! The streaming window: what a decoded copy becomes when the file decodes to more than its
//! limit (or was known to, or is live). It holds the stream from its slowest reader to the
//! writer, counted in stream frames across passes, so memory stays bounded whatever the
//! duration is, known, unknown or wrong.
//!
//! The rules, as pure functions of the readers' places (`room`, `held_from`):
//! - The writer runs a lead ahead of the furthest reader, no more.
//! - It holds at most the limit from the slowest reader on: past that it waits for the slowest
//!   reader, which every reader that keeps up then gets every sample from, whatever their
//!   distance, as long as it is within the limit.
//! - Only a reader that holds the writer back and has stalled (has not read for `STALL`), or
//!   one so far behind that the furthest reader has nothing left to read, is moved on: it
//!   loses what the writer needs room for, and is told how much at its next read.
//!
//! The decoder marks the end of each pass (`Window::end_pass`) and starts the next one at once,
//! while the readers are still a lead behind, so a seam costs the readers nothing.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A reader that has not read for this long, while it holds the writer back, has stalled (its
/// element paused, or left in a pipeline that stopped pulling): it is moved on rather than
/// starve the others. Longer than the longest buffer (`buffer-duration` is at most 1 s).
pub const STALL: Duration = Duration::from_millis(1500);

/// A registered reader's place, as the writer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// The stream frame it reads next (for a seek not placed yet, the frame it waits for).
    pub pos: u64,
    pub pass: u64,
    pub last_read: Instant,
    /// Frames it was moved on by, not told yet.
    pub lost: u64,
}

impl Slot {
    pub fn new(now: Instant) -> Self {
        Slot {
            pos: 0,
            pass: 0,
            last_read: now,
            lost: 0,
        }
    }
}

/// What the writer of a window may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    Write,
    /// Until a reader moves, or until the given moment (when the slowest one counts as stalled).
    Wait(Option<Instant>),
    /// Readers before this stream frame are moved to it; then look again.
    Overtake(u64),
}

/// Whether the writer, having written `frames` stream frames, may add to a window that holds at
/// most `limit` frames and runs `lead` frames ahead of the furthest reader.
pub fn room(frames: u64, readers: &[Option<Slot>], limit: u64, lead: u64, now: Instant) -> Room {
    let (Some(slowest), Some(furthest)) = (
        readers.iter().flatten().min_by_key(|s| s.pos),
        readers.iter().flatten().map(|s| s.pos).max(),
    ) else {
        // Nobody reads: nothing held would ever be let go.
        return Room::Wait(None);
    };
    if frames >= furthest + lead {
        return Room::Wait(None);
    }
    if frames < slowest.pos + limit {
        return Room::Write;
    }
    let stalled = slowest.last_read + STALL;
    if stalled <= now || furthest >= frames {
        // Room for a little more than one write: the writer adds at most a chunk at a time.
        Room::Overtake(frames + 1 - limit.min(frames + 1))
    } else {
        Room::Wait(Some(stalled))
    }
}

/// Moves every reader before `to` to it, counting what each loses.
pub fn overtake(readers: &mut [Option<Slot>], to: u64) {
    for slot in readers.iter_mut().flatten().filter(|s| s.pos < to) {
        slot.lost += to - slot.pos;
        slot.pos = to;
    }
}

/// The first stream frame the window must still hold: the slowest reader's.
pub fn held_from(readers: &[Option<Slot>]) -> Option<u64> {
    readers.iter().flatten().map(|s| s.pos).min()
}

/// The passes of a window: where each ended in the stream.
#[derive(Debug, Default)]
pub struct Window {
    /// The stream frames at which passes ended, from pass `first_pass` on.
    pass_ends: VecDeque<u64>,
    first_pass: u64,
    /// Where the last pass ended (0 before the first).
    last_pass_end: u64,
    /// No pass follows the last one; why (for the reader that wanted to loop).
    pub ended: Option<String>,
}

impl Window {
    /// The decoder reached the end of a pass at stream frame `frames`. Returns whether another
    /// pass may follow (a pass with no audio: another one would be as empty).
    pub fn end_pass(&mut self, frames: u64) -> bool {
        let another = frames > self.last_pass_end;
        if self.pass_ends.back() != Some(&frames) {
            self.pass_ends.push_back(frames);
        }
        self.last_pass_end = frames;
        if !another && self.ended.is_none() {
            self.ended = Some("the stream holds no more audio".to_owned());
        }
        another
    }

    /// Where pass `pass` ends, if it has ended.
    pub fn pass_end(&self, pass: u64) -> Option<u64> {
        pass.checked_sub(self.first_pass)
            .and_then(|i| self.pass_ends.get(i as usize).copied())
    }

    /// The pass that stream frame `pos` is in.
    pub fn pass_of(&self, pos: u64) -> u64 {
        self.first_pass + self.pass_ends.iter().take_while(|end| **end <= pos).count() as u64
    }

    /// Forgets the ends of passes before `pass`, which no reader is in any more.
    pub fn forget_before(&mut self, pass: u64) {
        while self.first_pass < pass && !self.pass_ends.is_empty() {
            self.pass_ends.pop_front();
            self.first_pass += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(pos: u64, last_read: Instant) -> Option<Slot> {
        Some(Slot {
            pos,
            pass: 0,
            last_read,
            lost: 0,
        })
    }

    #[test]
    fn the_writer_leads_the_furthest_reader_and_waits_for_the_slowest() {
        let now = Instant::now();
        // Ahead of the furthest reader by the lead: wait.
        assert_eq!(
            room(1_100, &[at(100, now)], 10_000, 1_000, now),
            Room::Wait(None)
        );
        assert_eq!(
            room(1_099, &[at(100, now)], 10_000, 1_000, now),
            Room::Write
        );
        // Two readers 700 frames apart, well within the limit: the slowest holds nothing back.
        let readers = [at(5_000, now), at(5_700, now)];
        assert_eq!(room(6_000, &readers, 10_000, 1_000, now), Room::Write);
        // At the limit from the slowest, a live slowest reader and a furthest one with frames
        // left: wait until the slowest would count as stalled.
        let readers = [at(0, now), at(9_000, now)];
        assert_eq!(
            room(10_000, &readers, 10_000, 2_000, now),
            Room::Wait(Some(now + STALL))
        );
    }

    #[test]
    fn only_a_stalled_or_starving_window_moves_its_slowest_reader_on() {
        let now = Instant::now();
        let long_ago = now - STALL - Duration::from_millis(1);
        // Stalled: moved on by what the writer needs.
        let readers = [at(0, long_ago), at(9_000, now)];
        assert_eq!(
            room(10_000, &readers, 10_000, 2_000, now),
            Room::Overtake(1)
        );
        // Live, but the furthest reader has read everything: it is too far behind.
        let readers = [at(0, now), at(10_000, now)];
        assert_eq!(
            room(10_000, &readers, 10_000, 2_000, now),
            Room::Overtake(1)
        );
        let mut readers = [at(0, now), at(400, now), at(10_000, now)];
        overtake(&mut readers, 500);
        assert_eq!(
            readers.map(|s| s.map(|s| (s.pos, s.lost))),
            [Some((500, 500)), Some((500, 100)), Some((10_000, 0))]
        );
        assert_eq!(held_from(&readers), Some(500));
        // Nobody reads: nothing would ever be let go.
        assert_eq!(room(0, &[], 10_000, 2_000, now), Room::Wait(None));
    }

    #[test]
    fn passes_end_where_the_decoder_marked_them() {
        let mut w = Window::default();
        assert!(w.end_pass(300));
        assert!(w.end_pass(600));
        assert_eq!(w.pass_end(0), Some(300));
        assert_eq!(w.pass_end(1), Some(600));
        assert_eq!(w.pass_end(2), None);
        assert_eq!((w.pass_of(299), w.pass_of(300), w.pass_of(650)), (0, 1, 2));
        w.forget_before(1);
        assert_eq!((w.pass_end(0), w.pass_end(1)), (None, Some(600)));
        // An empty pass: no other follows.
        assert!(!w.end_pass(600));
        assert!(w.ended.is_some());
    }
}
