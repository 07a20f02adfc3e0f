// SPDX-License-Identifier: MIT OR Apache-2.0

//! What the examples share: finding a usable audio device, and reporting bus errors.
#![allow(dead_code)]

use gst::prelude::*;

pub type Error = Box<dyn std::error::Error>;

/// An `autoaudiosink` that opened a real device, or `None` when there is none to open.
pub fn audio_sink() -> Result<Option<gst::Element>, Error> {
    let sink = gst::ElementFactory::make("autoaudiosink").build()?;
    // autoaudiosink picks and opens its device on NULL -> READY and falls back to a fakesink when
    // no device works. Outside a pipeline it has no bus, so its warning about that goes nowhere.
    if sink.set_state(gst::State::Ready).is_err() {
        let _ = sink.set_state(gst::State::Null);
        return Ok(None);
    }
    let bin = sink
        .downcast_ref::<gst::Bin>()
        .ok_or("autoaudiosink is not a bin")?;
    let fake = bin.children().iter().any(|child| {
        child
            .factory()
            .is_some_and(|factory| factory.name() == "fakesink")
    });
    if fake {
        let _ = sink.set_state(gst::State::Null);
        return Ok(None);
    }
    Ok(Some(sink))
}

/// The text of an error message: which element, what, and its debug details.
pub fn bus_error(msg: &gst::Message) -> Error {
    let gst::MessageView::Error(err) = msg.view() else {
        return format!("unexpected {:?} message", msg.type_()).into();
    };
    format!(
        "error from {}: {} ({})",
        msg.src()
            .map_or_else(|| "an unknown element".into(), |s| s.path_string()),
        err.error(),
        err.debug().as_deref().unwrap_or("no debug info")
    )
    .into()
}
