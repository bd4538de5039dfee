"""Frames as they travel: a sequenced event's JSON text, encoded once for every socket of every
node (the fan-out publishes the text; a socket sends it as it is), and the compact JSON the
server writes for every frame it builds itself."""

from __future__ import annotations

import json

# A frame as it travels on the wire: (seq, the frame's JSON text). Sockets send the text as it
# is; only the seq is looked at on the way.
WireFrame = tuple[int, str]

# No spaces, UTF-8 kept as it is: what every frame the server encodes looks like.
dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def encode_frame(frame: dict) -> WireFrame:
    return frame["seq"], dumps(frame)
