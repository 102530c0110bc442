"""hd_protocol — the sans-IO core of hd fabric.

Codecs and state machines only: no sockets, no clocks, no hidden randomness. Time
comes in as ``now`` (integer milliseconds since the Unix epoch) and random bytes come
from an injected ``rng(n) -> bytes``. See SPEC sections referenced in each module.
"""

from .admission import (
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
from .candidates import Ladder, make_candidate, priority, sort_candidates
from .chat import ChatLog, ChatMessage
from .cjson import canonical_json, loads_strict
from .collab import Pane, Panes
from .envelope import (
    Envelope,
    decode_envelope,
    encode_envelope,
    make_envelope,
    new_msg_id,
    open_envelope,
    seal_envelope,
    sign_envelope,
    signing_bytes,
    verify_envelope,
)
from .errors import CanonicalError, HandshakeError, LocalProtocolError, ProtocolError
from .handshake import (
    Acceptor,
    Dialer,
    Established,
    Failed,
    HandshakeResult,
    NeedAdmission,
    PeerHello,
    derive_session_keys,
)
from .identity import Identity, Rng, node_id_for, verify_signature
from .limits import DEFAULT_LIMITS, Limits
from .presence import Presence, parse_presence
from .rebase import rebase
from .session import Session, keep_new_session, reconnect_delay_ms
from .ws import WsFrame, decode_ws_frame, encode_ws_frame

__version__ = "0.1.0"

__all__ = [
    "Acceptor", "CanonicalError", "ChatLog", "ChatMessage", "DEFAULT_LIMITS", "Decision",
    "Dialer", "Envelope", "Established", "Failed", "HandshakeError", "HandshakeResult",
    "Identity", "InviteRecord", "Ladder", "Limits", "LocalProtocolError", "NeedAdmission", "Pane",
    "Panes", "PeerHello", "PeerRecord", "Policy", "Presence", "Presented", "ProtocolError",
    "Rng", "Session", "WsFrame", "admit", "canonical_json", "decode_envelope", "decode_invite",
    "decode_ws_frame", "derive_session_keys", "dialer_view", "encode_envelope", "encode_invite",
    "encode_ws_frame", "hash_token", "invite_expired", "issue_attestation", "keep_new_session",
    "loads_strict", "make_candidate", "make_envelope", "new_msg_id", "new_token", "node_id_for",
    "open_envelope", "parse_presence", "priority", "rebase", "reconnect_delay_ms",
    "seal_envelope", "sign_envelope", "signing_bytes", "sort_candidates", "token_matches",
    "verify_attestation", "verify_envelope", "verify_signature",
]
