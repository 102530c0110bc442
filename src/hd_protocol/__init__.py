"""hd_protocol — the sans-IO core of hd fabric.

Codecs and state machines only: no sockets, no clocks, no hidden randomness. Time
comes in as ``now`` (integer milliseconds; timers run on a monotonic ``now``, and the
wall clock, where an envelope needs a ``ts``, comes in separately as ``wall``) and
random bytes come from an injected ``rng(n) -> bytes``. See the SPEC sections
referenced in each module; ``Connection`` is the one machine a link needs.
"""

from .apps.agent import Agents
from .apps.chat import ChatLog
from .apps.collab import Panes
from .apps.rebase import rebase
from .apps.ws import WsFrame, decode_ws_frame, encode_ws_frame
from .cjson import canonical_json, loads_strict
from .effects import Send
from .envelope import (
    Envelope,
    decode_envelope,
    encode_envelope,
    make_envelope,
    new_msg_id,
    sign_envelope,
    signing_bytes,
    verify_envelope,
)
from .errors import (
    CanonicalError,
    HandshakeError,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
)
from .identity import Identity, Rng, node_id_for, verify_signature
from .limits import DEFAULT_LIMITS, Limits
from .peer.admission import (
    Decision,
    InviteRecord,
    PeerRecord,
    Policy,
    Presented,
    admit,
    decode_invite,
    dialer_view,
    encode_invite,
    hash_token,
    invite_expired,
    issue_attestation,
    new_token,
    token_matches,
    verify_attestation,
)
from .peer.candidates import (
    DialCandidate,
    Ladder,
    direct_candidates,
    make_candidate,
    priority,
    sort_candidates,
)
from .peer.connection import Connection, HandshakeFailed, RttEstimator
from .peer.handshake import (
    Acceptor,
    Dialer,
    Established,
    Failed,
    HandshakeResult,
    NeedAdmission,
    PeerHello,
    derive_session_keys,
)
from .peer.presence import Presence, parse_presence
from .peer.session import Session, keep_new_session, reconnect_delay_ms, should_redial
from .records import ChatMessage, Pane
from .seal import open_envelope, seal_envelope

__version__ = "0.1.0"

# The module paths of before the subpackages (``hd_protocol.session``,
# ``hd_protocol.relay``, ...) still import: each names the module that moved.
import sys as _sys  # noqa: E402

from .apps import agent, chat, collab, collab_tabs, tabcommands, ws  # noqa: E402
from .apps import rebase as _rebase  # noqa: E402  (``rebase`` is the function)
from .brokers import frames, lobby, lobby_client, relay, relay_client, rooms  # noqa: E402
from .peer import (  # noqa: E402
    addressbook,
    admission,
    candidates,
    connection,
    handshake,
    hello,
    monitor,
    policy,
    presence,
    session,
)
from .reach import lan, webrtc  # noqa: E402

for _module in (agent, chat, collab, collab_tabs, _rebase, tabcommands, ws, frames, lobby,
                lobby_client, relay, relay_client, rooms, addressbook, admission, candidates,
                connection, handshake, hello, monitor, policy, presence, session, lan, webrtc):
    _sys.modules.setdefault(f"hd_protocol.{_module.__name__.rpartition('.')[2]}", _module)

__all__ = [
    "Acceptor", "admit", "Agents", "canonical_json", "CanonicalError", "ChatLog", "ChatMessage",
    "Connection", "Decision", "decode_envelope", "decode_invite", "decode_ws_frame",
    "DEFAULT_LIMITS", "derive_session_keys", "DialCandidate", "Dialer", "dialer_view",
    "direct_candidates", "encode_envelope", "encode_invite", "encode_ws_frame", "Envelope",
    "Established", "Failed", "HandshakeError", "HandshakeFailed", "HandshakeResult",
    "hash_token", "Identity", "invite_expired", "InviteRecord", "issue_attestation",
    "keep_new_session", "Ladder", "Limits", "loads_strict", "LocalProtocolError",
    "make_candidate", "make_envelope", "NeedAdmission", "new_msg_id", "new_token",
    "node_id_for", "open_envelope", "Pane", "Panes", "parse_presence", "PeerHello",
    "PeerRecord", "Policy", "Presence", "Presented", "priority", "ProtocolError", "rebase",
    "reconnect_delay_ms", "RemoteProtocolError", "Rng", "RttEstimator", "seal_envelope", "Send",
    "Session", "should_redial", "sign_envelope", "signing_bytes", "sort_candidates",
    "token_matches", "verify_attestation", "verify_envelope", "verify_signature", "WsFrame",
]
