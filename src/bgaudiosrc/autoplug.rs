// SPDX-License-Identifier: MIT OR Apache-2.0

//! The decode chain of a local file, plugged the way decodebin plugs it, without decodebin where
//! the chain is a plain line of elements.
//!
//! `filesrc ! typefind` finds the stream's type (for a file whose type a parser takes, the same
//! typefinders read it through the pad that then feeds the parser: see `feeder`); from there
//! each pad is given the first element
//! decodebin would give it (the same factory list, in the same order: `decodable_factories`),
//! as long as that element has one sink pad and one source pad, until the pad shows raw audio.
//! That covers the usual background sound: MP3 (with or without ID3 tags), FLAC, ADTS AAC, WAV,
//! AIFF. Anything else (a demuxer with several streams: Ogg, MP4, Matroska; a type with no
//! decoder; a stream that is not audio) is handed to a `decodebin` at the pad where the line
//! ends, which goes on exactly as before and reports what it finds missing.
//!
//! Why: starting many elements at once is bounded by the CPU each start-up takes, and decodebin's
//! own share of it (its bin, its typefind and autoplugging, their signals) was about an eighth:
//! one MP3 start-up at a time measured 1.6–1.7 ms of CPU to the first buffer with this instead
//! of 1.8–2.0 ms through `filesrc ! decodebin`, alternating (`examples/zz_single`, not kept; the
//! bench's `start-one` row measures the same since).

use gst::glib;
use gst::prelude::*;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::decoder::{decodable_list, Shared};
use super::CAT;

/// Longest line of elements plugged before handing over to decodebin.
const MAX_DEPTH: usize = 8;

/// What plugging needs from the decode chain: what to do with a raw audio pad, and a decodebin
/// to hand a pad to.
pub(super) struct Plugger {
    pub pipeline: glib::WeakRef<gst::Pipeline>,
    /// The chain is shutting down: held while plugging, so `Decoder::shutdown` (which sets it)
    /// either waits for a plugging under way or stops the next one.
    pub closing: Arc<Mutex<bool>>,
    pub shared: Weak<Shared>,
    /// Links a raw audio pad to the rest of the chain.
    pub expose: Arc<dyn Fn(&gst::Pad) + Send + Sync>,
    /// A `decodebin` set up as the chain's fallback (its raw pads go to `expose`).
    pub decodebin: Box<dyn Fn() -> Result<gst::Element, glib::BoolError> + Send + Sync>,
}

/// Whether decodebin would stop plugging at `caps` and expose the pad.
fn is_raw_audio(caps: &gst::Caps) -> bool {
    caps.structure(0).is_some_and(|s| s.name() == "audio/x-raw")
}

/// The types plugged here: audio, and the tag wrappers audio files come in.
fn is_audio_type(caps: &gst::Caps) -> bool {
    caps.size() == 1
        && caps.structure(0).is_some_and(|s| {
            s.name().starts_with("audio/")
                || s.name() == "application/x-id3"
                || s.name() == "application/x-apetag"
        })
}

/// One sink pad always there, and one source pad (always there, or added once): a link in a
/// line. Templates named with `%` make many pads.
pub(super) fn is_linear(factory: &gst::ElementFactory) -> bool {
    let templates = factory.static_pad_templates();
    let (mut sinks, mut srcs) = (0, 0);
    for t in templates.iter() {
        if t.name_template().contains('%') || t.presence() == gst::PadPresence::Request {
            return false;
        }
        match t.direction() {
            gst::PadDirection::Sink if t.presence() == gst::PadPresence::Always => sinks += 1,
            gst::PadDirection::Src => srcs += 1,
            _ => return false,
        }
    }
    sinks == 1 && srcs == 1
}

/// Stops and removes what was plugged after `element` (an element that added its pad while it
/// started, then failed): the elements its source pads lead to, as far as the plugged ones go.
fn remove_downstream(pipeline: &gst::Pipeline, element: &gst::Element) {
    for src in element.src_pads() {
        let Some(peer) = src.peer() else {
            continue;
        };
        let _ = src.unlink(&peer);
        let Some(next) = peer.parent_element() else {
            continue;
        };
        // Only what was plugged (locked); the chain's own audioconvert stays.
        if next.is_locked_state() {
            remove_downstream(pipeline, &next);
            let _ = next.set_state(gst::State::Null);
            let _ = pipeline.remove(&next);
        }
    }
}

pub(super) fn is_parser(factory: &gst::ElementFactory) -> bool {
    factory
        .metadata(gst::ELEMENT_METADATA_KLASS)
        .is_some_and(|k| k.contains("Parser"))
}

impl Plugger {
    /// Starts an element added while the chain runs: PAUSED, from the thread that plugs it (the
    /// streaming thread of the element before it), and locked there.
    ///
    /// Not `sync_state_with_parent`: while the pipeline is still going to PAUSED, its state change
    /// may reach the new element too. Starting it makes it pull through typefind, which stops
    /// typefind's task and waits for it, while that task (plugging, here) waits for the element's
    /// state lock: a deadlock, seen in about one run in ten of 50 files started at once under
    /// load. An element the pipeline never starts cannot race: PAUSED is all a parser or decoder
    /// needs, and `Decoder::shutdown` takes locked elements to NULL after the pipeline.
    fn start(&self, element: &gst::Element) -> Result<(), glib::BoolError> {
        element
            .set_state(gst::State::Paused)
            .map(|_| ())
            .map_err(|_| glib::bool_error!("{} cannot start", element.name()))
    }

    /// Adds `element` to the chain, unless it is shutting down; `attach` links and starts it.
    /// Under the `closing` lock: the shutdown's sweep sees every element added.
    fn add(
        &self,
        element: &gst::Element,
        attach: impl FnOnce(&gst::Pipeline) -> Result<(), glib::BoolError>,
    ) -> Result<(), glib::BoolError> {
        thread_local! {
            /// The `closing` lock this thread holds already (its address): an element that adds
            /// its pad, caps set, while it starts plugs the next one from inside `attach`.
            static HOLDING: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
        }
        struct Release;
        impl Drop for Release {
            fn drop(&mut self) {
                HOLDING.with(|h| h.set(0));
            }
        }
        let lock_id = Arc::as_ptr(&self.closing) as usize;
        let (_release, _closing) = if HOLDING.with(|h| h.get()) == lock_id {
            (None, None)
        } else {
            let closing = self.closing.lock().unwrap_or_else(|e| e.into_inner());
            if *closing {
                return Err(glib::bool_error!("the decode chain is shutting down"));
            }
            HOLDING.with(|h| h.set(lock_id));
            (Some(Release), Some(closing))
        };
        let pipeline = self
            .pipeline
            .upgrade()
            .ok_or_else(|| glib::bool_error!("decode chain gone"))?;
        element.set_locked_state(true);
        pipeline.add(element)?;
        attach(&pipeline).inspect_err(|_| {
            let _ = element.set_state(gst::State::Null);
            let _ = pipeline.remove(element);
        })
    }

    /// Plugs `pad`, which shows `caps`; `chain` are the factories plugged before it.
    pub fn plug(self: &Arc<Self>, pad: &gst::Pad, caps: &gst::Caps, chain: &[gst::ElementFactory]) {
        if is_raw_audio(caps) {
            (self.expose)(pad);
            return;
        }
        if !is_audio_type(caps) || chain.len() >= MAX_DEPTH {
            self.hand_over(pad, caps);
            return;
        }
        for factory in decodable_list(caps).iter() {
            // A parser accepts its own output: it is plugged once per line (as decodebin does).
            if is_parser(factory) && chain.contains(factory) {
                continue;
            }
            if !is_linear(factory) {
                // decodebin would try this one first: let it.
                self.hand_over(pad, caps);
                return;
            }
            match self.link(pad, caps, factory, chain) {
                Ok(()) => return,
                Err(err) => {
                    gst::debug!(CAT, obj = pad, "Not {}: {}", factory.name(), err);
                }
            }
        }
        // Nothing fits: decodebin says what is missing, as it always has.
        self.hand_over(pad, caps);
    }

    /// Links `pad` to a new element of `factory` and follows its source pad.
    fn link(
        self: &Arc<Self>,
        pad: &gst::Pad,
        caps: &gst::Caps,
        factory: &gst::ElementFactory,
        chain: &[gst::ElementFactory],
    ) -> Result<(), glib::BoolError> {
        let element = factory.create().build()?;
        let sink = element
            .sink_pads()
            .into_iter()
            .next()
            .ok_or_else(|| glib::bool_error!("no sink pad"))?;
        // As decodebin checks: the factory list matches templates, the pad knows better.
        if !sink.query_accept_caps(caps) {
            return Err(glib::bool_error!("does not accept {}", caps));
        }
        let mut chain = chain.to_vec();
        chain.push(factory.clone());
        let chain: Arc<[gst::ElementFactory]> = chain.into();
        self.add(&element, |pipeline| {
            // Unchecked, as decodebin links: the sink pad accepted the caps above.
            pad.link_full(&sink, gst::PadLinkCheck::empty())
                .map_err(|err| glib::bool_error!("cannot link: {:?}", err))?;
            match element.src_pads().into_iter().next() {
                Some(src) => self.follow(&src, chain),
                None => {
                    // Added once the element knows what it holds (a tag or container header).
                    let this = Arc::downgrade(self);
                    element.connect_pad_added(move |_, src| {
                        if let (Some(this), gst::PadDirection::Src) =
                            (this.upgrade(), src.direction())
                        {
                            this.follow(src, chain.clone());
                        }
                    });
                }
            }
            // Its errors wait until it is known to work: a candidate that cannot start (a
            // decoder whose library or device fails to open) gives way to the next one.
            let shared = self.shared.upgrade();
            if let Some(shared) = &shared {
                shared.begin_try(&element);
            }
            let started = element
                .set_state(gst::State::Ready)
                .map_err(|_| glib::bool_error!("{} cannot open", element.name()))
                .and_then(|_| self.start(&element));
            if started.is_err() {
                // Still within the try: what stopping it posts is dropped with it.
                let _ = pad.unlink(&sink);
                remove_downstream(pipeline, &element);
                let _ = element.set_state(gst::State::Null);
            }
            if let Some(shared) = &shared {
                shared.end_try(&element, started.is_ok());
            }
            if started.is_ok() {
                gst::debug!(
                    CAT,
                    obj = pipeline,
                    "Plugged {} for {}",
                    factory.name(),
                    caps
                );
            }
            started
        })
    }

    /// Plugs `src` once it shows its caps (the first ones; later changes go down the line).
    fn follow(self: &Arc<Self>, src: &gst::Pad, chain: Arc<[gst::ElementFactory]>) {
        let once = Arc::new(AtomicBool::new(false));
        let this = Arc::downgrade(self);
        let (once_cb, chain_cb) = (once.clone(), chain.clone());
        src.connect_notify(Some("caps"), move |src, _| {
            let Some(caps) = src.current_caps() else {
                return;
            };
            if let Some(this) = this.upgrade() {
                if !once_cb.swap(true, Ordering::SeqCst) {
                    this.plug(src, &caps, &chain_cb);
                }
            }
        });
        if let Some(caps) = src.current_caps() {
            if !once.swap(true, Ordering::SeqCst) {
                self.plug(src, &caps, &chain);
            }
        }
    }

    /// Hands `pad` to a decodebin, which plugs the rest as the stock chain does.
    fn hand_over(&self, pad: &gst::Pad, caps: &gst::Caps) {
        gst::debug!(CAT, obj = pad, "Handing {} over to decodebin", caps);
        let linked = (self.decodebin)().and_then(|decodebin| {
            self.add(&decodebin, |_| {
                let sink = decodebin
                    .static_pad("sink")
                    .ok_or_else(|| glib::bool_error!("decodebin has no sink pad"))?;
                pad.link(&sink)
                    .map_err(|err| glib::bool_error!("cannot link decodebin: {:?}", err))?;
                self.start(&decodebin)
            })
        });
        if let Err(err) = linked {
            // Not `lock`: a plugging nested on this thread holds it (then the chain is not
            // shutting down), and a shutdown under way holds it only briefly.
            let closing = self.closing.try_lock().is_ok_and(|c| *c);
            if let (Some(shared), false) = (self.shared.upgrade(), closing) {
                shared.fail_to_build(err);
            }
        }
    }
}
