"""hd-relay: the standalone relay broker (SPEC 7.7), a thin trio shell around
``hd_protocol.brokers.relay.RelayServer``.

Its package face is what ``hd-lobby`` bundles beside its lobby: the relay service (the
machine, its SQLite mailbox and its frames), the WebSocket path it serves and the frame
size its listener must admit.
"""

from .queue import QueueStore
from .service import PATH, RelayService, relay_frame_limit

__version__ = "0.1.0"

__all__ = ["PATH", "QueueStore", "RelayService", "relay_frame_limit"]
