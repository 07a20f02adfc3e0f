// SPDX-License-Identifier: MIT OR Apache-2.0

//! Feeding a local file straight to its parser, from a pad of our own, instead of
//! `filesrc ! typefind`.
//!
//! When the first element for the file's type is a parser of one stream (MP3, FLAC and ADTS
//! AAC, the usual background sounds; AC-3 and WavPack too, tested), the chain is
//! `feeder ! parser ! decoder ! audioconvert ! audioresample ! appsink`, and whoever needs the
//! data pushes it: the element's own streaming thread until its first buffer is decoded
//! (`feed_until`), its readers while other elements are starting (the decoder's `feed_hook`),
//! then a task on the feeder pad for the rest of the file. A start-up hands over to no other
//! thread, and creates none before its first buffer.
//!
//! Callers and the task never feed at the same time, and a caller never waits for the task:
//! `feed_here` feeds nothing once `start_task` (or a `rewind`) handed the file to the task. A
//! running task holds the pad's stream lock, and may itself be waiting for the reader that
//! would wait for that lock.
//!
//! Measured with `cargo run --release --example bench -- startup` (50 elements on 50 distinct
//! 5 s MP3s, one pipeline, 2 cores): first buffers 20.0 median and 35.6 at worst, with 61 ms of
//! CPU to the last one, against 22.5, 38.7 and 67 through `filesrc ! typefind` (8 alternating
//! runs); with readers feeding while start-ups are under way instead of a task started at once,
//! 51 ms of CPU against 68; and without start-up turns for fed files (see `startup`), 15–17 and
//! 27–28 with 47 ms of CPU, where the stock chain took 28–31, 52–54 and 92–95. Reading the file
//! 1 KiB at a time while starting measured the same as 512 bytes; 4 KiB (filesrc's block)
//! decoded a quarter of a second of MP3 at once and took 51 ms at the median.
//!
//! The type is found as typefind finds it in pull mode (the typefinders read the start and the
//! end of the file: an ID3v1 tag there makes it a tagged file). Anything else (a tag demuxer,
//! wavparse, a container) keeps `filesrc ! typefind`, which lets them pull.
//!
//! The feeder answers the queries a parser asks upstream (the file's size in bytes, push mode
//! only, not seekable) and loops the file for a streamed copy by rewinding itself (`rewind`),
//! as a flushing seek to the start would.

use gst::glib;
use gst::prelude::*;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use super::CAT;

/// What the task reads at a time (filesrc's block size).
const BLOCK: usize = 4096;
/// What the start-up reads at a time: an MP3 frame or two, so a start-up decodes little more
/// than its first buffer needs.
pub const START_BLOCK: usize = 1024;

#[derive(Debug)]
struct Position {
    offset: u64,
    /// EOS was pushed: the task has nothing more to do until a rewind.
    ended: bool,
}

/// Why feeding stopped, when nobody else says so on the chain's bus.
#[derive(Debug)]
pub enum Failure {
    /// A flow error no element posted an error for (`not-negotiated`, `not-linked`).
    Flow(gst::FlowError),
    /// The file could not be read.
    Read(std::io::Error),
    /// The task that feeds the rest of the file could not start.
    Task(glib::BoolError),
}

/// Who feeds the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Driver {
    /// Whoever calls `feed_here`: the start-up, then readers (no task yet).
    Callers,
    /// The pad's task, from `start_task` on (running, or paused at the end of the file).
    Task,
    /// `stop` was called: nothing feeds any more.
    Stopped,
}

/// Where `feed` stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fed {
    /// A block went down the chain.
    Block,
    /// The end of the file: EOS went down the chain (or, when told to hold it, is due).
    End,
    /// Nothing to do: EOS went down before (until a rewind).
    Idle,
    /// The chain is flushing or failed (a failure is on the chain's bus or given to `on_fail`).
    Stopped,
}

#[derive(Debug)]
pub struct Feeder {
    pad: gst::Pad,
    /// Shared with the pad's range function.
    file: Arc<File>,
    size: u64,
    position: Mutex<Position>,
    /// Taken by `feed_here` for the whole of a block, and to hand over to the task: a caller
    /// never waits for the stream lock a running task holds (the task may itself be waiting
    /// for that caller to read).
    driver: Mutex<Driver>,
}

impl Feeder {
    /// Opens `path` for feeding. `location` names it in the stream id.
    pub fn open(path: &Path, location: &str) -> std::io::Result<Arc<Feeder>> {
        let file = Arc::new(File::open(path)?);
        let size = file.metadata()?.len();
        let reader = file.clone();
        let uri = glib::filename_to_uri(path, None).ok();
        let pad = gst::Pad::builder(gst::PadDirection::Src)
            .name(format!("bgaudiosrc-feeder:{location}"))
            // For typefinding only (`type_find`): the chain is fed in push mode.
            .getrange_function(move |_, _, offset, buffer, length| {
                if offset >= size {
                    return Err(gst::FlowError::Eos);
                }
                let length = (length as u64).min(size - offset) as usize;
                let read_into = |buffer: &mut gst::BufferRef| -> Result<(), gst::FlowError> {
                    let mut map = buffer.map_writable().map_err(|_| gst::FlowError::Error)?;
                    let read = reader
                        .read_at(&mut map[..length], offset)
                        .map_err(|_| gst::FlowError::Error)?;
                    drop(map);
                    buffer.set_size(read);
                    Ok(())
                };
                match buffer {
                    Some(buffer) if buffer.size() >= length => {
                        read_into(buffer)?;
                        Ok(gst::PadGetRangeSuccess::FilledBuffer)
                    }
                    _ => {
                        let mut new =
                            gst::Buffer::with_size(length).map_err(|_| gst::FlowError::Error)?;
                        read_into(new.make_mut())?;
                        Ok(gst::PadGetRangeSuccess::NewBuffer(new))
                    }
                }
            })
            .query_function(move |_, _, query| match query.view_mut() {
                gst::QueryViewMut::Scheduling(q) => {
                    q.set(gst::SchedulingFlags::SEQUENTIAL, 1, -1, 0);
                    q.add_scheduling_modes([gst::PadMode::Push]);
                    true
                }
                gst::QueryViewMut::Duration(q) if q.format() == gst::Format::Bytes => {
                    q.set(gst::format::Bytes::from_u64(size));
                    true
                }
                gst::QueryViewMut::Seeking(q) => {
                    let format = q.format();
                    q.set(
                        false,
                        gst::GenericFormattedValue::none_for_format(format),
                        gst::GenericFormattedValue::none_for_format(format),
                    );
                    true
                }
                gst::QueryViewMut::Uri(q) => {
                    q.set_uri(uri.as_deref());
                    uri.is_some()
                }
                _ => false,
            })
            // Seeks from the chain are refused (the feeder rewinds itself); the rest (latency,
            // QoS, reconfigure) has nothing to act on.
            .event_function(|_, _, event| !matches!(event.view(), gst::EventView::Seek(_)))
            .build();
        Ok(Arc::new(Feeder {
            pad,
            file,
            size,
            position: Mutex::new(Position {
                offset: 0,
                ended: false,
            }),
            driver: Mutex::new(Driver::Callers),
        }))
    }

    fn position(&self) -> MutexGuard<'_, Position> {
        self.position.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn driver(&self) -> MutexGuard<'_, Driver> {
        self.driver.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn pad(&self) -> &gst::Pad {
        &self.pad
    }

    /// The file's type, as typefind finds it when it can read the whole file: the same helper,
    /// reading through the pad's range function, with the file's extension as a hint (the
    /// typefinders for it go first, and the search ends at a certain answer).
    pub fn type_find(&self, path: &Path) -> Option<gst::Caps> {
        use glib::translate::{from_glib_full, ToGlibPtr};
        let extension = path
            .extension()
            .and_then(|e| e.to_str())
            .and_then(|e| std::ffi::CString::new(e).ok());
        let pad: *mut gst::ffi::GstPad = self.pad.to_glib_none().0;
        let mut caps: *mut gst::ffi::GstCaps = std::ptr::null_mut();
        let mut probability = gst::ffi::GST_TYPE_FIND_NONE;
        // SAFETY: as typefind calls it in pull mode: the pad's own range function, given the
        // pad (`obj`) and its parent; the pad outlives the call, and the caps come back owned.
        unsafe {
            let func: gst_base::ffi::GstTypeFindHelperGetRangeFunction =
                std::mem::transmute((*pad).getrangefunc);
            gst_base::ffi::gst_type_find_helper_get_range_full(
                pad as *mut gst::ffi::GstObject,
                std::ptr::null_mut(),
                func,
                self.size,
                extension.as_ref().map_or(std::ptr::null(), |e| e.as_ptr()),
                &mut caps,
                &mut probability,
            );
            if caps.is_null() {
                None
            } else {
                Some(from_glib_full(caps))
            }
        }
    }

    /// Activates the pad and queues the stream's start, its type and a segment in bytes, which
    /// go down with the first block.
    pub fn activate(&self, caps: &gst::Caps, stream_id: &str) -> Result<(), glib::BoolError> {
        self.pad.set_active(true)?;
        let events = [
            gst::event::StreamStart::builder(stream_id)
                .group_id(gst::GroupId::next())
                .build(),
            gst::event::Caps::new(caps),
            gst::event::Segment::new(&gst::FormattedSegment::<gst::format::Bytes>::new()),
        ];
        for event in events {
            // Stored on the pad (sticky) until it is linked and data flows.
            self.pad.push_event(event);
        }
        Ok(())
    }

    /// Feeds the next block on the caller's thread (see `feed`), unless the task feeds the
    /// file or the feeder stopped: then `Fed::Idle` at once.
    pub fn feed_here(&self, block: usize, hold_end: bool, on_fail: &dyn Fn(Failure)) -> Fed {
        let driver = self.driver();
        if *driver != Driver::Callers {
            return Fed::Idle;
        }
        self.feed(block, hold_end, on_fail)
    }

    /// Reads the next block of at most `block` bytes and pushes it, under the pad's stream lock
    /// (so the task, the start-up and a rewind take turns). At the end of the file EOS is
    /// pushed, unless `hold_end`. `on_fail` is told of a failure nobody posted.
    fn feed(&self, block: usize, hold_end: bool, on_fail: &dyn Fn(Failure)) -> Fed {
        let _stream = self.pad.stream_lock();
        let mut position = self.position();
        if position.ended {
            return Fed::Idle;
        }
        let offset = position.offset;
        let length = (block as u64).min(self.size.saturating_sub(offset)) as usize;
        let mut data = vec![0u8; length];
        let read = match self.file.read_at(&mut data, offset) {
            Ok(0) if length > 0 => {
                // The file shrank: it ends here, as filesrc ends at a short read.
                gst::warning!(CAT, obj = self.pad, "The file ends early, at {}", offset);
                0
            }
            Err(err) => {
                drop(position);
                on_fail(Failure::Read(err));
                return Fed::Stopped;
            }
            Ok(read) => read,
        };
        if read == 0 {
            position.offset = self.size;
            if !hold_end {
                position.ended = true;
                drop(position);
                self.pad.push_event(gst::event::Eos::new());
            }
            return Fed::End;
        }
        data.truncate(read);
        position.offset = offset + read as u64;
        drop(position);
        let mut buffer = gst::Buffer::from_mut_slice(data);
        if let Some(buffer) = buffer.get_mut() {
            buffer.set_offset(offset);
            buffer.set_offset_end(offset + read as u64);
            if offset == 0 {
                buffer.set_flags(gst::BufferFlags::DISCONT);
            }
        }
        let pushed = self.pad.push(buffer);
        gst::trace!(
            CAT,
            obj = self.pad,
            "Fed {} bytes at {}: {:?}",
            read,
            offset,
            pushed
        );
        match pushed {
            Ok(_) => Fed::Block,
            Err(gst::FlowError::Flushing) | Err(gst::FlowError::Eos) => Fed::Stopped,
            Err(err) => {
                on_fail(Failure::Flow(err));
                Fed::Stopped
            }
        }
    }

    /// Feeds blocks of `block` bytes on the caller's thread (`feed_here`) until `done()`,
    /// `budget` bytes were fed (then it returns `Block`), the end of the file (EOS held if
    /// `hold_end`), a stop, or the task taking over.
    pub fn feed_until(
        &self,
        block: usize,
        hold_end: bool,
        budget: u64,
        done: &dyn Fn() -> bool,
        on_fail: &dyn Fn(Failure),
    ) -> Fed {
        let mut fed = 0u64;
        loop {
            if done() || fed >= budget {
                return Fed::Block;
            }
            match self.feed_here(block, hold_end, on_fail) {
                Fed::Block => fed += block as u64,
                other => return other,
            }
        }
    }

    /// Feeds the rest of the file from a task of the pad's own (GStreamer's thread pool); from
    /// then on `feed_here` feeds nothing. Nothing to do if the task feeds already, or after
    /// `stop`.
    pub fn start_task(self: &Arc<Self>, on_fail: Arc<dyn Fn(Failure) + Send + Sync>) {
        let mut driver = self.driver();
        if *driver == Driver::Callers {
            self.spawn_task(&mut driver, on_fail);
        }
    }

    /// Starts a new task (the pad has none), under the `driver` lock.
    fn spawn_task(
        self: &Arc<Self>,
        driver: &mut Driver,
        on_fail: Arc<dyn Fn(Failure) + Send + Sync>,
    ) {
        let this = Arc::downgrade(self);
        let fail = on_fail.clone();
        let started = self.pad.start_task(move || {
            let Some(this) = this.upgrade() else {
                return;
            };
            let fed = this.feed(BLOCK, false, &*fail);
            if fed != Fed::Block {
                gst::debug!(CAT, obj = this.pad, "Feeding paused: {:?}", fed);
                let _ = this.pad.pause_task();
            }
        });
        match started {
            Ok(()) => *driver = Driver::Task,
            Err(err) => {
                gst::warning!(CAT, obj = self.pad, "Cannot start feeding: {}", err);
                on_fail(Failure::Task(err));
            }
        }
    }

    /// Starts the file again from the top, as a flushing seek to 0 would: the chain is flushed,
    /// the next block is the file's first, after a new segment, and a new task feeds it
    /// (whoever fed the last pass). Not from the task's thread; nothing to do after `stop`.
    pub fn rewind(self: &Arc<Self>, on_fail: Arc<dyn Fn(Failure) + Send + Sync>) {
        // A push under way returns, so its caller lets go of `driver`, the task of the stream
        // lock.
        self.pad.push_event(gst::event::FlushStart::new());
        let mut driver = self.driver();
        if *driver == Driver::Stopped {
            return;
        }
        // Joins the old task (none if callers fed the whole pass): a new one gets the function.
        if let Err(err) = self.pad.stop_task() {
            gst::warning!(CAT, obj = self.pad, "Cannot stop feeding: {}", err);
        }
        {
            let _stream = self.pad.stream_lock();
            self.pad.push_event(gst::event::FlushStop::new(true));
            *self.position() = Position {
                offset: 0,
                ended: false,
            };
            self.pad
                .push_event(gst::event::Segment::new(&gst::FormattedSegment::<
                    gst::format::Bytes,
                >::new()));
        }
        self.spawn_task(&mut driver, on_fail);
    }

    /// Stops feeding: the pad flushes (a push under way returns), the task ends, and nothing
    /// feeds from then on.
    pub fn stop(&self) {
        let _ = self.pad.set_active(false);
        *self.driver() = Driver::Stopped;
        let _ = self.pad.stop_task();
    }
}
