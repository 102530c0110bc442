"""Test kit for the link seam: link pairs and the Link conformance suite.

``memory_link_pair``/``MemoryLink`` (in-memory ends), ``ws_link_pair`` (a WebSocket
over 127.0.0.1), and the suite every ``Link`` must pass (``CHECKS``, ``run_check``,
``check_link_pair``, with ``LinkTraits`` for what carriers legitimately do differently).
It imports hd_protocol, hd_shell and trio only, so any binary's tests can use it.
"""

from .conformance import (
    CHECKS,
    FRAME_BYTES,
    ConformanceError,
    LinkTraits,
    check_link_pair,
    run_check,
)
from .pairs import (
    LinkPair,
    MakePair,
    MemoryLink,
    memory_link_pair,
    memory_pair,
    ws_link_pair,
    ws_pair,
)

__all__ = [
    "CHECKS", "FRAME_BYTES", "ConformanceError", "LinkPair", "LinkTraits", "MakePair",
    "MemoryLink", "check_link_pair", "memory_link_pair", "memory_pair", "run_check",
    "ws_link_pair", "ws_pair",
]
