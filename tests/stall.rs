// SPDX-License-Identifier: MIT OR Apache-2.0

//! A decode chain that shows a format and then delivers nothing (as a libav demuxer looping on a
//! damaged file does) ends in an error once `timeout` passes, and the chain is shut down, so the
//! process stops spending a core on it. A process of its own (this file): the test registers a
//! type and a decoder for it that spins for ever.

mod common;

use common::*;
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The spinning decoder is inside its loop.
static SPINNING: AtomicBool = AtomicBool::new(false);
/// The spinning decoder was plugged and got data.
static SPUN: AtomicBool = AtomicBool::new(false);

mod spinning {
    use super::*;
    use std::sync::LazyLock;

    /// Sets raw-audio caps on its first buffer, then spins without pushing anything until its
    /// sink pad flushes (the chain shutting down).
    #[derive(Default)]
    pub struct Imp;

    #[glib::object_subclass]
    impl ObjectSubclass for Imp {
        const NAME: &'static str = "BgAudioTestSpinningDec";
        type Type = super::SpinningDec;
        type ParentType = gst::Element;
    }

    impl Imp {
        fn chain(&self, pad: &gst::Pad) -> Result<gst::FlowSuccess, gst::FlowError> {
            let src = self.obj().static_pad("src").ok_or(gst::FlowError::Error)?;
            let caps = gst_audio::AudioInfo::builder(gst_audio::AUDIO_FORMAT_S16, 44_100, 2)
                .build()
                .and_then(|info| info.to_caps())
                .map_err(|_| gst::FlowError::Error)?;
            src.push_event(gst::event::StreamStart::new("spinning"));
            src.push_event(gst::event::Caps::new(&caps));
            src.push_event(gst::event::Segment::new(&gst::FormattedSegment::<
                gst::ClockTime,
            >::new()));
            SPINNING.store(true, Ordering::SeqCst);
            SPUN.store(true, Ordering::SeqCst);
            while !pad.pad_flags().contains(gst::PadFlags::FLUSHING) {
                for _ in 0..1000 {
                    std::hint::spin_loop();
                }
            }
            SPINNING.store(false, Ordering::SeqCst);
            Err(gst::FlowError::Flushing)
        }
    }

    impl ObjectImpl for Imp {
        fn constructed(&self) {
            self.parent_constructed();
            let obj = self.obj();
            let sink = gst::Pad::builder_from_template(&obj.pad_template("sink").unwrap())
                .chain_function(|pad, parent, _buffer| {
                    Imp::catch_panic_pad_function(
                        parent,
                        || Err(gst::FlowError::Error),
                        |imp| imp.chain(pad),
                    )
                })
                .build();
            obj.add_pad(&sink).unwrap();
            let src = gst::Pad::from_template(&obj.pad_template("src").unwrap());
            obj.add_pad(&src).unwrap();
        }
    }

    impl GstObjectImpl for Imp {}

    impl ElementImpl for Imp {
        fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
            static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
                gst::subclass::ElementMetadata::new(
                    "Spinning decoder",
                    "Codec/Decoder/Audio",
                    "Shows a format, then loops without output (a test of stalls)",
                    "gst-plugin-bgaudio tests",
                )
            });
            Some(&META)
        }

        fn pad_templates() -> &'static [gst::PadTemplate] {
            static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
                vec![
                    gst::PadTemplate::new(
                        "sink",
                        gst::PadDirection::Sink,
                        gst::PadPresence::Always,
                        &gst::Caps::new_empty_simple("application/x-bgstall"),
                    )
                    .unwrap(),
                    gst::PadTemplate::new(
                        "src",
                        gst::PadDirection::Src,
                        gst::PadPresence::Always,
                        &gst::Caps::new_empty_simple("audio/x-raw"),
                    )
                    .unwrap(),
                ]
            });
            TEMPLATES.as_ref()
        }
    }
}

glib::wrapper! {
    pub struct SpinningDec(ObjectSubclass<spinning::Imp>) @extends gst::Element, gst::Object;
}

/// CPU time this process has used (user and system).
fn cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid pointer to a timespec, and a clock every Linux has.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[test]
fn a_chain_that_shows_a_format_and_delivers_nothing_errors_after_timeout_and_stops() {
    init();
    gst::TypeFind::register(
        None,
        "bgstall",
        gst::Rank::PRIMARY,
        None,
        Some(&gst::Caps::new_empty_simple("application/x-bgstall")),
        |typefind| {
            if typefind.peek(0, 7) == Some(b"BGSTALL") {
                typefind.suggest(
                    gst::TypeFindProbability::Maximum,
                    &gst::Caps::new_empty_simple("application/x-bgstall"),
                );
            }
        },
    )
    .unwrap();
    gst::Element::register(
        None,
        "bgaudiotestspinningdec",
        gst::Rank::PRIMARY,
        SpinningDec::static_type(),
    )
    .unwrap();

    let path = fixture_dir("stall").join("stalls.bgstall");
    let mut bytes = b"BGSTALL".to_vec();
    bytes.resize(16 * 1024, 0);
    std::fs::write(&path, bytes).unwrap();

    let pipeline = pipeline(&format!(
        "bgaudiosrc location=\"{}\" timeout=1000000000 ! fakesink sync=true",
        path.display()
    ));
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let started = Instant::now();
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(20),
            &[gst::MessageType::Error, gst::MessageType::Eos],
        )
        .expect("an error, well before 20 s");
    let waited = started.elapsed();
    let gst::MessageView::Error(err) = msg.view() else {
        panic!("expected an error, got {msg:?}");
    };
    assert!(
        err.error().matches(gst::StreamError::Decode),
        "{:?}",
        err.error()
    );
    let text = err.error().to_string();
    assert!(text.contains(path.to_str().unwrap()), "{text}");
    assert!(text.contains("timeout"), "{text}");
    // The decoder was seen spinning, and the error came after the timeout, not before.
    assert!(
        SPUN.load(Ordering::SeqCst),
        "the spinning decoder was not plugged"
    );
    assert!(waited >= Duration::from_secs(1), "{waited:?}");

    // The chain is shut down: the decoder leaves its loop while the pipeline stays PLAYING,
    // and the process stops spending a core.
    let deadline = Instant::now() + Duration::from_secs(10);
    while SPINNING.load(Ordering::SeqCst) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!SPINNING.load(Ordering::SeqCst), "the decoder still spins");
    let (cpu0, wall0) = (cpu_time(), Instant::now());
    std::thread::sleep(Duration::from_millis(500));
    let (cpu, wall) = (cpu_time() - cpu0, wall0.elapsed());
    assert!(
        cpu < wall / 5,
        "{cpu:?} of CPU in {wall:?} after the error: something still spins"
    );
    pipeline.set_state(gst::State::Null).unwrap();
}
