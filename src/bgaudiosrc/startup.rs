// SPDX-License-Identifier: MIT OR Apache-2.0

//! Start-up scheduling: when many elements start at once (a media server bringing up 50 agents),
//! each one's first buffer should come as early as the CPU allows. Two rules do it:
//!
//! - **Decoders give way.** Each element needs a little decoded audio for its first buffer; a
//!   decoder that fills the rest of its file meanwhile only takes the CPU from the others. So
//!   while any element is starting (holds a `Startup`, from `start` to its first buffer), a
//!   decoder that is already `DECODE_LEAD` ahead of its readers waits (`decoders_yield`); it
//!   finishes its file once every element is playing.
//!   A fed file (see `feeder`) has no decoder running ahead meanwhile: its readers decode it
//!   as they read, and its task starts once start-ups are over.
//! - **Turns**, for a decode chain that starts on threads of its own (anything but a fed file).
//!   Starting one is CPU work (building it, finding the format, decoding and converting the
//!   first frames) handed between threads. Run all side by side, 50 of them on 2 cores all
//!   finish near the end; taken in the order the elements asked, a few at a time, the early ones
//!   are done early. Two turns per core keep the cores busy while a start-up waits on one of its
//!   threads. A turn lasts from `Startup::take_turn` to the first buffer, but never longer than
//!   `TURN_MAX`: a source waiting on the network holds nobody up. A fed file starts on its
//!   element's streaming thread alone, handing over to nobody, and takes no turn.
//!
//! An element counts as starting for at most `STARTING_MAX`, so one that never produces (a
//! stalled source, a live pipeline left in PAUSED) holds nobody up for long.
//!
//! Measured with `cargo run --release --example bench -- startup` (50 elements on 50 files
//! starting together, 2 cores, medians of 8 runs): with neither rule, first buffers took a
//! median 134 ms and at worst 388 ms; with decoders giving way (60 ms lead), 46 and 57; with
//! turns, two per core, a 30 ms lead, and the output format given to the decode chain up front
//! (`BgAudioSrc::fixed_output`), 32 and 53, against 32 and 55 for the stock chain in the same
//! runs. One turn per core was worse (41 and 73): the cores idle while a start-up hands over
//! between its threads. The 30 ms lead covers a first buffer of the default 20 ms; a longer one
//! fills as its reader moves. With the cheaper decode chain of `autoplug` (and an appsink that
//! does not preroll), 25 and 44 against 28 and 54; one, two, three or six turns at once then
//! measured within a millisecond or two of each other (26–29 median, 45–51 worst). With a thread
//! and an element less per decode chain (typefind pushes, no capsfilter), 20 and 35 against 31
//! and 57 (8 alternating runs); two, three, four or eight turns at once measured 20.5–21.2
//! median, four the lowest, so two per core stays. Fed files (MP3 here), started on their own
//! streaming threads, with readers feeding while start-ups are under way: 15–17 and 27–28
//! against 28–31 and 52–54, with 47 ms of CPU to the last first buffer against 92–95. Turns for
//! fed files then cost time: in alternating runs, two, four, eight, sixteen and fifty turns
//! measured 20.1, 20.0, 19.4, 17.3 and 17.2 median (none at all 16.0): a fed start-up has no
//! thread to wait on, so the cores stay busy without turns. A chain started through typefind
//! still gains from them (24.9 with four against 27.2 with none).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How far ahead of its readers a decoder may run while elements are starting.
pub const DECODE_LEAD: Duration = Duration::from_millis(30);
/// An element counts as starting for at most this long, so one that never produces (a stalled
/// source, a live pipeline left in PAUSED) does not hold decoders back for ever.
const STARTING_MAX: Duration = Duration::from_secs(1);
/// The longest a turn keeps its place: a start-up that takes longer is waiting, not working.
const TURN_MAX: Duration = Duration::from_millis(40);

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);
/// The elements starting now, counted by when they started (nanoseconds since `EPOCH`).
static STARTING: Mutex<BTreeMap<u64, usize>> = Mutex::new(BTreeMap::new());

fn starting() -> MutexGuard<'static, BTreeMap<u64, usize>> {
    STARTING.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug)]
struct Turns {
    next_ticket: u64,
    /// Elements waiting for a turn, in the order they asked: each is woken on its own, when it
    /// comes to the front of the line (or to look at its `cancelled` condition).
    waiting: VecDeque<(u64, Arc<Condvar>)>,
    /// Turns being taken, and since when.
    active: Vec<(u64, Instant)>,
}

impl Turns {
    /// Wakes the first in line, which may take a turn now.
    fn wake_front(&self) {
        if let Some((_, cond)) = self.waiting.front() {
            cond.notify_one();
        }
    }
}

static TURNS: Mutex<Turns> = Mutex::new(Turns {
    next_ticket: 0,
    waiting: VecDeque::new(),
    active: Vec::new(),
});

fn turns() -> MutexGuard<'static, Turns> {
    TURNS.lock().unwrap_or_else(|e| e.into_inner())
}

/// How many turns run at once: two per core.
fn parallel_turns() -> usize {
    static N: LazyLock<usize> =
        LazyLock::new(|| 2 * std::thread::available_parallelism().map_or(1, |n| n.get()));
    *N
}

/// Held by an element from `start` to its first buffer: while one younger than `STARTING_MAX`
/// is held, decoders give way.
#[derive(Debug)]
pub struct Startup {
    since: u64,
    turn: Option<u64>,
}

impl Startup {
    pub fn new() -> Self {
        let since = EPOCH.elapsed().as_nanos() as u64;
        *starting().entry(since).or_default() += 1;
        Startup { since, turn: None }
    }

    /// Waits for this element's turn to start: until fewer than `parallel_turns()` are being
    /// taken and every element that asked earlier has had its turn. Turns older than
    /// `TURN_MAX` do not count. Returns false, without a turn, once `cancelled()` is true after
    /// a `wake_all()`.
    pub fn take_turn(&mut self, cancelled: impl Fn() -> bool) -> bool {
        if self.turn.is_some() {
            return true;
        }
        let cond = Arc::new(Condvar::new());
        let mut turns = turns();
        let ticket = turns.next_ticket;
        turns.next_ticket += 1;
        turns.waiting.push_back((ticket, cond.clone()));
        loop {
            let now = Instant::now();
            turns.active.retain(|(_, since)| now - *since < TURN_MAX);
            let first = turns.waiting.front().is_some_and(|(t, _)| *t == ticket);
            if first && turns.active.len() < parallel_turns() {
                turns.waiting.pop_front();
                turns.active.push((ticket, now));
                self.turn = Some(ticket);
                // The next in line may find a turn free too.
                turns.wake_front();
                return true;
            }
            if cancelled() {
                turns.waiting.retain(|(t, _)| *t != ticket);
                turns.wake_front();
                return false;
            }
            // The first in line also wakes when the oldest turn runs out.
            let expiry = turns
                .active
                .iter()
                .filter(|_| first)
                .map(|(_, since)| TURN_MAX.saturating_sub(now - *since))
                .min()
                .unwrap_or(TURN_MAX);
            turns = cond
                .wait_timeout(turns, expiry.max(Duration::from_millis(1)))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// Wakes every element waiting for a turn, so it can check its `cancelled` condition.
pub fn wake_all() {
    for (_, cond) in &turns().waiting {
        cond.notify_one();
    }
}

impl Drop for Startup {
    fn drop(&mut self) {
        if let Some(ticket) = self.turn.take() {
            let mut turns = turns();
            turns.active.retain(|(t, _)| *t != ticket);
            turns.wake_front();
        }
        let mut starting = starting();
        if let Some(count) = starting.get_mut(&self.since) {
            *count -= 1;
            if *count == 0 {
                starting.remove(&self.since);
            }
        }
    }
}

/// Whether decoders should give way: an element started less than `STARTING_MAX` ago is still
/// waiting for its first buffer. (Elements stuck for longer do not count.)
pub fn decoders_yield() -> bool {
    let youngest = starting().last_key_value().map(|(since, _)| *since);
    youngest.is_some_and(|since| {
        EPOCH.elapsed().as_nanos() as u64 <= since + STARTING_MAX.as_nanos() as u64
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    // One test: the guards are process-wide, and the parts would see each other's.
    #[test]
    fn decoders_give_way_and_turns_are_taken_in_order() {
        let starting = Startup::new();
        assert!(decoders_yield());
        drop(starting);
        assert!(!decoders_yield());

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
                // Handed back, so the turn stays taken until the test lets it go.
                s
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
        assert_eq!(waiting(), 2, "the cancelled waiter left the line");
        assert!(
            order.lock().unwrap().is_empty(),
            "no turn while all are held"
        );

        // Ending one held turn lets the first waiter through, and only it; the next one ending
        // lets the second through.
        holders.pop();
        let first = first.join().unwrap();
        assert_eq!(*order.lock().unwrap(), ["first"]);
        assert_eq!(waiting(), 1, "the second still waits");
        holders.pop();
        let second = second.join().unwrap();
        assert_eq!(*order.lock().unwrap(), ["first", "second"]);
        drop((first, second));
        holders.clear();
        assert!(!decoders_yield());
    }
}
