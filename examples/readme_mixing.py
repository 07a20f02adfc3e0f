# SPDX-License-Identifier: MIT OR Apache-2.0

"""Background music under live "speech" (a test tone) through audiomixer: the background joins
the running mix at 0.5 s, is ducked at 1.5 s, fades out at 2.5 s and is taken out at its EOS;
the speech goes on alone until 3.5 s. Fails on an error, or when the background sent no audio
or did not end.

    python3 examples/readme_mixing.py                        # to the audio device
    python3 examples/readme_mixing.py "fakesink sync=true"   # with no audio device
"""
import sys

import gi

gi.require_version("Gst", "1.0")
from gi.repository import GLib, Gst  # noqa: E402

Gst.init(None)
if Gst.ElementFactory.find("bgaudiosrc") is None:
    sys.exit("bgaudiosrc not found: run `make install`, or set GST_PLUGIN_PATH to its folder")

sink = sys.argv[1] if len(sys.argv) > 1 else "autoaudiosink"
pipeline = Gst.parse_launch(
    "audiotestsrc is-live=true volume=0.2 ! audiomixer name=mix "
    f"! audioconvert ! audioresample ! {sink}")
mixer = pipeline.get_by_name("mix")
loop = GLib.MainLoop()
errors = []


class Background:
    """bgaudiosrc joining the running mix, and leaving it."""

    def __init__(self):
        self.buffers = 0  # sent to the mixer
        self.left = False
        self.element = Gst.ElementFactory.make("bgaudiosrc", "bg")
        self.element.set_property("mode", "mixing")
        self.element.set_property("location", "assets/ambience.ogg")
        self.element.set_property("loop", True)
        self.element.set_property("volume", 0.3)
        self.src = self.element.get_static_pad("src")
        self.src.add_probe(Gst.PadProbeType.BUFFER, self.on_buffer)
        self.src.add_probe(Gst.PadProbeType.EVENT_DOWNSTREAM, self.on_event)
        self.pad = None

    def join(self):
        pipeline.add(self.element)
        self.pad = mixer.request_pad_simple("sink_%u")
        self.src.link(self.pad)
        self.element.sync_state_with_parent()  # on failure an ERROR says why
        return False  # once

    def duck(self):
        self.element.set_property("volume", 0.1)  # the element ramps the change: no click
        return False

    def leave(self):
        self.element.emit("fade-out")  # then EOS, which on_event sees
        return False

    def on_buffer(self, pad, info):
        self.buffers += 1
        return Gst.PadProbeReturn.OK

    def on_event(self, pad, info):
        if info.get_event().type == Gst.EventType.EOS:
            GLib.idle_add(self.remove)  # not from the streaming thread
        return Gst.PadProbeReturn.OK

    def remove(self):
        self.element.set_state(Gst.State.NULL)
        self.src.unlink(self.pad)
        mixer.release_request_pad(self.pad)
        pipeline.remove(self.element)
        self.left = True
        return False


def on_message(bus, msg):
    if msg.type == Gst.MessageType.ERROR:
        err, _debug = msg.parse_error()
        errors.append(f"{msg.src.get_path_string()}: {err.message}")
        loop.quit()
    elif msg.type == Gst.MessageType.EOS:
        loop.quit()
    elif msg.type == Gst.MessageType.LATENCY:
        pipeline.recalculate_latency()  # a source joined or left
    return True


bus = pipeline.get_bus()
bus.add_watch(GLib.PRIORITY_DEFAULT, on_message)
background = Background()
GLib.timeout_add(500, background.join)
GLib.timeout_add(1500, background.duck)
GLib.timeout_add(2500, background.leave)
GLib.timeout_add(3500, loop.quit)
pipeline.set_state(Gst.State.PLAYING)  # on failure an ERROR says why
loop.run()
pipeline.set_state(Gst.State.NULL)
bus.remove_watch()

if errors:
    sys.exit(errors[0])
if background.buffers == 0:
    sys.exit("the background sent no audio")
if not background.left:
    sys.exit("the background did not end within 1 s of its fade-out")
print(f"The background joined, sent {background.buffers} buffers to the mixer and left")
