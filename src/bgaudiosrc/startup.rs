// SPDX-License-Identifier: MIT OR Apache-2.0

//! Start-up scheduling: when many elements start at once (a media server bringing up 50 agents),
//! each one's first buffer should come as early as the CPU allows.
//!
//! Two rules do it:
//! - **Turns.** Starting a decode chain is CPU work (building it, finding the format, decoding the
//!   first frames). Run side by side, 50 of them on 2 cores all finish at the end; taken in
//!   turn, one per core, in the order the elements asked, half of them are done at half the
//!   time. A turn lasts from `Startup::take_turn` to the first buffer, but never longer than
//!   `TURN_MAX`: a source waiting on the network holds nobody up.
//! - **Decoders give way.** While any element is starting, a decoder that is already
//!   `DECODE_LEAD` ahead of its readers waits (`decoders_yield`), so filling the rest of a file
//!   does not take the CPU from first buffers. It finishes once every element is playing.
//!
//! Nothing here is held for long: an element counts as starting for at most `STARTING_MAX`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How far ahead of its readers a decoder may run while elements are starting.
pub const DECODE_LEAD: Duration = Duration::from_millis(60);
/// An element counts as starting for at most this long, so one that never produces (a stalled
/// source, a live pipeline left in PAUSED) does not hold decoders back for ever.
const STARTING_MAX: Duration = Duration::from_secs(1);
/// The longest a turn keeps its place: a start-up that takes longer is waiting, not working.
const TURN_MAX: Duration = Duration::from_millis(40);

static STARTING: AtomicUsize = AtomicUsize::new(0);
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);
/// When the last element started, in nanoseconds since `EPOCH`.
static LAST_START: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Default)]
struct Turns {
    next_ticket: u64,
    /// Tickets waiting for a turn, in the order they were taken.
    waiting: VecDeque<u64>,
    /// Turns being taken, and since when.
    active: Vec<(u64, Instant)>,
}

static TURNS: LazyLock<Mutex<Turns>> = LazyLock::new(Default::default);
static TURNS_COND: Condvar = Condvar::new();

fn turns() -> MutexGuard<'static, Turns> {
    TURNS.lock().unwrap_or_else(|e| e.into_inner())
}

/// How many turns run at once: one per core.
fn parallel_turns() -> usize {
    static N: LazyLock<usize> =
        LazyLock::new(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    *N
}

/// Held by an element from `start` to its first buffer.
#[derive(Debug)]
pub struct Startup {
    turn: Option<u64>,
}

impl Startup {
    pub fn new() -> Self {
        LAST_START.store(EPOCH.elapsed().as_nanos() as u64, Ordering::SeqCst);
        STARTING.fetch_add(1, Ordering::SeqCst);
        Startup { turn: None }
    }

    /// Waits for this element's turn to start a decode chain: until fewer than one turn per
    /// core is being taken and every element that asked earlier has had its turn. Turns older
    /// than `TURN_MAX` do not count. Returns false, without a turn, once `cancelled()` is true
    /// after a `wake_all()`.
    pub fn take_turn(&mut self, cancelled: impl Fn() -> bool) -> bool {
        if self.turn.is_some() {
            return true;
        }
        let mut turns = turns();
        let ticket = turns.next_ticket;
        turns.next_ticket += 1;
        turns.waiting.push_back(ticket);
        loop {
            let now = Instant::now();
            turns.active.retain(|(_, since)| now - *since < TURN_MAX);
            if turns.waiting.front() == Some(&ticket) && turns.active.len() < parallel_turns() {
                turns.waiting.pop_front();
                turns.active.push((ticket, now));
                self.turn = Some(ticket);
                // The next in line may find a turn free too.
                TURNS_COND.notify_all();
                return true;
            }
            if cancelled() {
                turns.waiting.retain(|t| *t != ticket);
                TURNS_COND.notify_all();
                return false;
            }
            // Woken when a turn ends; otherwise when the oldest one runs out.
            let expiry = turns
                .active
                .iter()
                .map(|(_, since)| TURN_MAX.saturating_sub(now - *since))
                .min()
                .unwrap_or(TURN_MAX);
            turns = TURNS_COND
                .wait_timeout(turns, expiry.max(Duration::from_millis(1)))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Drop for Startup {
    fn drop(&mut self) {
        STARTING.fetch_sub(1, Ordering::SeqCst);
        if let Some(ticket) = self.turn.take() {
            turns().active.retain(|(t, _)| *t != ticket);
            TURNS_COND.notify_all();
        }
    }
}

/// Wakes every element waiting for a turn, so it can check its `cancelled` condition.
pub fn wake_all() {
    let _turns = turns();
    TURNS_COND.notify_all();
}

/// Whether decoders should give way: some element is waiting for its first buffer.
pub fn decoders_yield() -> bool {
    STARTING.load(Ordering::SeqCst) > 0
        && EPOCH.elapsed().as_nanos() as u64
            <= LAST_START.load(Ordering::SeqCst) + STARTING_MAX.as_nanos() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    #[test]
    fn turns_are_taken_in_order_and_a_cancelled_waiter_leaves_the_line() {
        // Hold every turn there is, so the next ones must wait.
        let mut holders: Vec<Startup> = (0..parallel_turns()).map(|_| Startup::new()).collect();
        for h in &mut holders {
            assert!(h.take_turn(|| false));
        }
        let waiting = || turns().waiting.len();
        let order = Arc::new(Mutex::new(Vec::new()));
        let cancel = Arc::new(AtomicBool::new(false));

        // A cancelled waiter leaves the line without a turn.
        let flag = cancel.clone();
        let cancelled = std::thread::spawn(move || {
            let mut s = Startup::new();
            s.take_turn(|| flag.load(Ordering::SeqCst))
        });
        while waiting() < 1 {
            std::thread::yield_now();
        }
        // Two more, queued in a known order.
        let spawn = |name: &'static str| {
            let order = order.clone();
            std::thread::spawn(move || {
                let mut s = Startup::new();
                assert!(s.take_turn(|| false));
                order.lock().unwrap().push(name);
            })
        };
        let first = spawn("first");
        while waiting() < 2 {
            std::thread::yield_now();
        }
        let second = spawn("second");
        while waiting() < 3 {
            std::thread::yield_now();
        }
        cancel.store(true, Ordering::SeqCst);
        wake_all();
        assert!(
            !cancelled.join().unwrap(),
            "a cancelled waiter gets no turn"
        );
        assert!(decoders_yield(), "elements are still starting");

        holders.clear();
        first.join().unwrap();
        second.join().unwrap();
        assert_eq!(*order.lock().unwrap(), ["first", "second"]);
    }
}
