"""The browser socket frame ``{channel, event, data}`` (SPEC 9).

``decode_client_frame`` is strict and total: any input yields a ``WsFrame`` whose
channel and event a tab may send, or raises ``ProtocolError`` whose ``code`` the node
echoes back as ``{channel, event:"error", data:{code, message}}`` — the socket stays open.
The fields of each command are checked afterwards, once, by
``hd_protocol.apps.tabcommands.decode_command``.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any

from ..cjson import loads_strict
from ..envelope import wire_size
from ..errors import CanonicalError, RemoteProtocolError
from ..limits import DEFAULT_LIMITS
from .tabcommands import client_events

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}\Z")  # \Z: "$" would admit a trailing newline

# SPEC 9: what a tab may send, per channel (the names of ``tabcommands.COMMANDS``).
CLIENT_EVENTS: dict[str, frozenset[str]] = client_events()

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


@dataclass(frozen=True, slots=True)
class WsFrame:
    channel: str
    event: str
    data: dict[str, Any] = field(default_factory=dict, hash=False)


def encode_ws_frame(channel: str, event: str, data: dict[str, Any] | None = None) -> str:
    return _encoder.encode({"channel": channel, "event": event, "data": data or {}})


def error_frame(channel: str, code: str, message: str, **extra: Any) -> str:
    return encode_ws_frame(channel, "error", {"code": code, "message": message, **extra})


def decode_ws_frame(
    text: str | bytes,
    *,
    max_bytes: int = DEFAULT_LIMITS.max_ws_frame_bytes,
    allowed: dict[str, frozenset[str]] | None = CLIENT_EVENTS,
) -> WsFrame:
    """Parse one frame. With ``allowed`` (default: what a tab may send), an unknown
    channel is ``unknown_channel`` and an unknown event ``unknown_event``."""
    if not isinstance(text, str | bytes | bytearray):
        raise RemoteProtocolError("bad_frame", "a frame is text")
    if wire_size(text) > max_bytes:
        raise RemoteProtocolError("too_large", f"frame over {max_bytes} bytes")
    try:
        obj = loads_strict(text)
    except CanonicalError as exc:
        raise RemoteProtocolError("bad_json", exc.message) from None
    if type(obj) is not dict:
        raise RemoteProtocolError("bad_frame", "a frame is a JSON object")
    if not obj.keys() <= {"channel", "event", "data"} or "channel" not in obj or "event" not in obj:
        raise RemoteProtocolError("bad_frame", "a frame is {channel, event, data}")
    channel, event = obj["channel"], obj["event"]
    data = obj.get("data", {})
    if data is None:
        data = {}
    if type(channel) is not str or NAME_RE.match(channel) is None:
        raise RemoteProtocolError("bad_frame", "channel must be a short lowercase name")
    if type(event) is not str or NAME_RE.match(event) is None:
        raise RemoteProtocolError("bad_frame", "event must be a short lowercase name")
    if type(data) is not dict:
        raise RemoteProtocolError("bad_frame", "data must be an object")
    if allowed is not None:
        events = allowed.get(channel)
        if events is None:
            raise RemoteProtocolError("unknown_channel", f"no channel {channel}")
        if event not in events:
            raise RemoteProtocolError("unknown_event", f"no event {event} on {channel}")
    return WsFrame(channel, event, data)


def check_node_name(value: object, max_chars: int = DEFAULT_LIMITS.node_name_chars) -> str:
    """A display name a person gives their node (``network rename``): trimmed, then
    1..``max_chars`` characters, none of them a control character or a lone surrogate
    (a name is shown on other people's screens and must encode as UTF-8)."""
    if type(value) is not str:
        raise RemoteProtocolError("bad_request", "node_name must be a string")
    name = value.strip()
    if not 0 < len(name) <= max_chars:
        raise RemoteProtocolError("bad_request",
                                  f"node_name is 1..{max_chars} characters once trimmed")
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in name):
        raise RemoteProtocolError("bad_request", "node_name has a control character")
    return name
