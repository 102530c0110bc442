"""hd-relay: the standalone relay broker (SPEC 7.7), a thin trio shell around
``hd_protocol.brokers.relay.RelayServer``.

Its package face is what ``hd-lobby`` bundles beside its lobby: the relay service (the
machine, its mailbox and its frames), the two mailboxes (``QueueStore``, SQLite for one
instance; ``ClusterMailbox``, JetStream shared by several instances on one NATS), the
WebSocket path it serves and the frame size its listener must admit.
"""

from .mailbox import ClusterMailbox
from .queue import QueueStore
from .service import PATH, RelayService, relay_frame_limit

__version__ = "0.1.0"

__all__ = ["PATH", "ClusterMailbox", "QueueStore", "RelayService", "relay_frame_limit"]
