# SPDX-License-Identifier: MIT OR Apache-2.0

"""Plays assets/ambience.ogg looped at volume 0.3, turns it down to 0.1 after 1.5 s and stops
after 3 s. Fails on an error, or when the level element saw no audio or no drop in level.

    python3 examples/readme_playback.py                        # to the audio device
    python3 examples/readme_playback.py "fakesink sync=true"   # with no audio device
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
    "bgaudiosrc name=bg location=assets/ambience.ogg loop=true volume=0.3 "
    f"! audioconvert ! level ! audioresample ! {sink}")
bg = pipeline.get_by_name("bg")
loop = GLib.MainLoop()
errors = []
peaks = []  # the loudest channel of each level message, in dB


def on_message(bus, msg):
    if msg.type == Gst.MessageType.ERROR:
        err, _debug = msg.parse_error()
        errors.append(f"{msg.src.get_path_string()}: {err.message}")
        loop.quit()
    elif msg.type == Gst.MessageType.EOS:
        errors.append("unexpected EOS (loop=true)")
        loop.quit()
    elif msg.type == Gst.MessageType.LATENCY:
        pipeline.recalculate_latency()
    elif msg.type == Gst.MessageType.ELEMENT and msg.get_structure().has_name("level"):
        peaks.append(max(msg.get_structure().get_value("peak")))
    return True


def turn_down():
    bg.set_property("volume", 0.1)  # the element ramps the change: no click
    return False  # once


bus = pipeline.get_bus()
bus.add_watch(GLib.PRIORITY_DEFAULT, on_message)
GLib.timeout_add(1500, turn_down)
GLib.timeout_add(3000, loop.quit)
pipeline.set_state(Gst.State.PLAYING)  # on failure an ERROR says why
loop.run()
pipeline.set_state(Gst.State.NULL)
bus.remove_watch()

if errors:
    sys.exit(errors[0])
if not peaks:
    sys.exit("no audio reached the sink")
print(f"Peak level: {peaks[0]:.1f} dB at volume 0.3, then {peaks[-1]:.1f} dB at volume 0.1")
if peaks[0] - peaks[-1] < 6:
    sys.exit("turning the volume down did not lower the level")
