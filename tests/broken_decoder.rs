// SPDX-License-Identifier: MIT OR Apache-2.0

//! The decode chain's decodebin picks the decoders: a candidate that cannot start gives way to
//! the next one, as in the stock chain. A process of its own (this file), as the test registers
//! a decoder that outranks every other.

mod common;

use common::*;
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

mod broken {
    use super::*;
    use std::sync::LazyLock;

    /// An MP3 "decoder" that fails to open, with an error on the bus, as a decoder whose
    /// library or device is missing does.
    #[derive(Default)]
    pub struct Imp;

    #[glib::object_subclass]
    impl ObjectSubclass for Imp {
        const NAME: &'static str = "BgAudioTestBrokenDec";
        type Type = super::BrokenDec;
        type ParentType = gst::Element;
    }

    impl ObjectImpl for Imp {
        fn constructed(&self) {
            self.parent_constructed();
            let obj = self.obj();
            for template in obj.pad_template_list() {
                obj.add_pad(&gst::Pad::from_template(&template)).unwrap();
            }
        }
    }

    impl GstObjectImpl for Imp {}

    impl ElementImpl for Imp {
        fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
            static META: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
                gst::subclass::ElementMetadata::new(
                    "Broken MP3 decoder",
                    "Codec/Decoder/Audio",
                    "Fails to open (a test of candidates giving way)",
                    "gst-plugin-bgaudio tests",
                )
            });
            Some(&META)
        }

        fn pad_templates() -> &'static [gst::PadTemplate] {
            static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
                let sink = gst::Caps::builder("audio/mpeg")
                    .field("mpegversion", 1i32)
                    .field("layer", 3i32)
                    .field("parsed", true)
                    .build();
                vec![
                    gst::PadTemplate::new(
                        "sink",
                        gst::PadDirection::Sink,
                        gst::PadPresence::Always,
                        &sink,
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

        fn change_state(
            &self,
            transition: gst::StateChange,
        ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
            if transition == gst::StateChange::NullToReady {
                gst::element_imp_error!(self, gst::LibraryError::Init, ["cannot open"]);
                return Err(gst::StateChangeError);
            }
            self.parent_change_state(transition)
        }
    }
}

glib::wrapper! {
    pub struct BrokenDec(ObjectSubclass<broken::Imp>) @extends gst::Element, gst::Object;
}

#[test]
fn a_decoder_that_cannot_open_gives_way_to_the_next() {
    init();
    let path = fixture_dir("broken-decoder").join("tone.mp3");
    make_sine(&path, 44_100, 2, 440.0, 66_000, "lamemp3enc");
    let caps = s16("");
    // What the installed decoders make of it, before the broken one is registered.
    let expected = bgaudio(&path, "", &caps, None);
    assert!(
        expected.error.is_none() && expected.eos,
        "{:?}",
        expected.error
    );

    gst::Element::register(
        None,
        "bgaudiotestbrokendec",
        gst::Rank::from(356), // PRIMARY + 100
        BrokenDec::static_type(),
    )
    .unwrap();
    assert!(gst::ElementFactory::make("bgaudiotestbrokendec")
        .build()
        .is_ok());
    // A file of another name: not the copy decoded above.
    let again = fixture_dir("broken-decoder").join("tone-again.mp3");
    std::fs::copy(&path, &again).unwrap();
    let out = bgaudio(&again, "", &caps, None);
    assert!(out.error.is_none(), "{:?}", out.error);
    assert!(out.eos);
    assert_eq!(out.samples.len(), expected.samples.len());
    assert!(out.samples == expected.samples);
}
