"""The four-frame handshake (SPEC 4) as two sans-IO machines.

Dialer:   start() -> hello ; hello_ack -> NeedAdmission ; admit() -> auth ;
          auth_result -> Established | Failed
Acceptor: hello -> hello_ack ; auth -> NeedAdmission ; admit() -> auth_result +
          Established | Failed

Every frame is signed and every signature verified; the two ``auth`` frames are sealed
with the keys derived from an ephemeral X25519 exchange bound to the transcript. The
admission decision itself is the pure ``admission.admit``/``dialer_view``: the machine
asks for it (``NeedAdmission``) because only the shell can read the store.
Time only enters as ``now`` (ms); randomness only through the injected ``rng``."""

from __future__ import annotations

import enum
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from ..effects import Send
from ..envelope import (
    Envelope,
    decode_envelope,
    encode_envelope,
    make_envelope,
    new_msg_id,
    sign_envelope,
    verify_envelope,
)
from ..errors import HandshakeError, LocalProtocolError, RemoteProtocolError
from ..identity import Identity, Rng, b64encode
from ..limits import DEFAULT_LIMITS
from ..seal import open_with, seal_with
from .admission import Decision
from .hello import (
    HELLO_ACK_FIELDS,
    HELLO_FIELDS,
    PROTO,
    Established,
    Failed,
    HandshakeResult,
    NeedAdmission,
    Output,
    PeerHello,
    _parse_hello,
    _x25519_public,
    derive_session_keys,
    transcript_hash,
)

REASONS = (
    "pairing_required", "blocked", "key_mismatch", "wrong_node", "busy", "version",
    "bad_handshake",
)


class State(enum.Enum):
    START = "start"
    WAIT_HELLO = "wait_hello"
    WAIT_HELLO_ACK = "wait_hello_ack"
    WAIT_ADMISSION = "wait_admission"
    WAIT_AUTH = "wait_auth"
    WAIT_AUTH_RESULT = "wait_auth_result"
    DONE = "done"
    FAILED = "failed"


class _Machine:
    """What dialer and acceptor share: identity, deadline, failure and decoding."""

    role = ""
    # Set by the key exchange; nothing reads them before (class defaults, not per run).
    _tx: ChaCha20Poly1305 | None = None
    _rx: ChaCha20Poly1305 | None = None
    _keys: tuple[bytes, bytes] = (b"", b"")
    _th = b""

    def __init__(
        self,
        identity: Identity,
        *,
        rng: Rng,
        now: int,
        node_name: str = "",
        capabilities: tuple[str, ...] | list[str] = (),
        timeout_ms: int = DEFAULT_LIMITS.handshake_timeout_ms,
        max_capabilities: int = DEFAULT_LIMITS.capabilities,
        max_bytes: int = DEFAULT_LIMITS.max_envelope_bytes,
    ) -> None:
        if len(node_name) > 64:
            raise LocalProtocolError("bad_field", "node_name is at most 64 chars")
        self.identity = identity
        self.rng = rng
        self.node_name = node_name
        self.capabilities = list(capabilities)
        self.deadline = now + timeout_ms
        self.max_caps = max_capabilities
        self.max_bytes = max_bytes
        self.state = State.START
        self.failure: Failed | None = None
        self.result: HandshakeResult | None = None
        self.peer: PeerHello | None = None
        self._nonce = b64encode(rng(32))
        self._eph_seed = rng(32)
        self._eph = X25519PrivateKey.from_private_bytes(self._eph_seed)

    # public surface ---------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.state in (State.DONE, State.FAILED)

    def next_deadline(self) -> int | None:
        return None if self.done else self.deadline

    def on_timer(self, now: int, *, wall: int | None = None) -> list[Output]:
        del wall  # a timeout sends nothing
        if not self.done and now >= self.deadline:
            return self._fail("timeout", "handshake did not finish in time", quiet=True)
        return []

    def receive(
        self, frame: str | bytes | Envelope, now: int, *, wall: int | None = None
    ) -> list[Output]:
        """Feed one inbound frame. Any protocol violation ends in ``Failed``.

        ``now`` drives the deadline; ``wall`` (default: ``now``) is the wall clock put
        in the ``ts`` of what we send back (SPEC 5: timers on a monotonic clock)."""
        if self.done:
            return []
        if now >= self.deadline:
            return self._fail("timeout", "handshake did not finish in time", quiet=True)
        self._last_now = now if wall is None else wall
        try:
            env = frame if isinstance(frame, Envelope) else decode_envelope(
                frame, max_bytes=self.max_bytes
            )
            return self._on_envelope(env, self._last_now)
        except RemoteProtocolError as exc:
            reason = exc.code if exc.code in REASONS else "bad_handshake"
            return self._fail(reason, exc.message)

    # internals ----------------------------------------------------------------------

    def _on_envelope(self, env: Envelope, now: int) -> list[Output]:
        raise NotImplementedError

    def _fail(self, reason: str, message: str, *, quiet: bool = False) -> list[Output]:
        """Fail; an acceptor tells the peer (``auth_result``) unless ``quiet`` (timeout)."""
        out: list[Output] = []
        if not quiet and self._can_send_auth_result():
            out.append(Send(self._auth_result(False, None, reason, self._last_now)))
        self.state = State.FAILED
        self.failure = Failed(reason, message)
        out.append(self.failure)
        return out

    _last_now = 0

    def _can_send_auth_result(self) -> bool:
        return False

    def _auth_result(self, ok: bool, level: str | None, reason: str | None, now: int) -> str:
        raise NotImplementedError

    def _hello_data(self) -> dict[str, Any]:
        return {
            "proto": PROTO, "node_name": self.node_name, "public_key": self.identity.public_key,
            "capabilities": list(self.capabilities), "nonce": self._nonce,
            "eph": _x25519_public(self._eph),
        }

    def _signed(self, env: Envelope) -> str:
        return encode_envelope(sign_envelope(env, self.identity))

    def _derive(self, hello: Envelope, hello_ack: Envelope, peer_eph: str) -> None:
        try:
            d2a, a2d = derive_session_keys(self._eph_seed, peer_eph, hello, hello_ack)
        except ValueError:
            raise HandshakeError(message="ephemeral key exchange failed") from None
        self._th = transcript_hash(hello, hello_ack)
        if self.role == "dialer":
            self._keys = (d2a, a2d)
        else:
            self._keys = (a2d, d2a)
        self._tx = ChaCha20Poly1305(self._keys[0])
        self._rx = ChaCha20Poly1305(self._keys[1])

    def _open_sealed(self, env: Envelope, expected_type: str, peer: PeerHello) -> dict[str, Any]:
        if env.type != expected_type:
            raise HandshakeError(message=f"expected {expected_type}, got {env.type}")
        if env.src != peer.node_id:
            raise HandshakeError(message="src changed during the handshake")
        if env.dst != self.identity.node_id:
            raise HandshakeError("wrong_node", "frame is addressed to another node")
        if env.seq != 0 or env.box is None:
            raise HandshakeError(message=f"{expected_type} must be sealed with seq 0")
        if not verify_envelope(env, peer.public_key):
            raise HandshakeError(message="signature does not verify")
        assert self._rx is not None
        try:
            return open_with(self._rx, env)
        except RemoteProtocolError:
            raise HandshakeError(message="box does not open") from None

    def _established(self, level: str, peer_level: str | None) -> Established:
        assert self.peer is not None
        self.state = State.DONE
        self.result = HandshakeResult(
            role=self.role, peer=self.peer, level=level, key_tx=self._keys[0],
            key_rx=self._keys[1], transcript_hash=self._th, peer_level=peer_level,
        )
        return Established(self.result)


class Dialer(_Machine):
    """The side that opened the link. Pins ``expected_node_id`` when it knows whom it dials."""

    role = "dialer"
    _hello: Envelope | None = None  # these four are set as the exchange goes
    _hello_ack: Envelope | None = None
    _auth_msg_id = ""
    _level = ""

    def __init__(
        self,
        identity: Identity,
        *,
        rng: Rng,
        now: int,
        expected_node_id: str | None = None,
        token: str | None = None,
        attest: dict[str, Any] | None = None,
        **kw: Any,
    ) -> None:
        super().__init__(identity, rng=rng, now=now, **kw)
        if expected_node_id == identity.node_id:
            raise LocalProtocolError("wrong_node", "a node cannot dial itself")
        self.expected_node_id = expected_node_id
        self.token = token
        self.attest = attest

    def start(self, now: int, *, wall: int | None = None) -> list[Output]:
        if self.state is not State.START:
            raise LocalProtocolError("state", "start() is called once")
        self._hello = sign_envelope(
            make_envelope(
                "hello", msg_id=new_msg_id(self.rng), src=self.identity.node_id,
                dst=self.expected_node_id, ts=now if wall is None else wall,
                data=self._hello_data(),
            ),
            self.identity,
        )
        self.state = State.WAIT_HELLO_ACK
        return [Send(encode_envelope(self._hello))]

    def admit(self, decision: Decision, now: int, *, wall: int | None = None) -> list[Output]:
        """Continue with our own view of the acceptor (``admission.dialer_view``)."""
        if self.state is not State.WAIT_ADMISSION:
            raise LocalProtocolError("state", "no admission is pending")
        now = now if wall is None else wall  # only the ts of auth needs a time
        if not decision.ok:
            return self._fail(decision.reason or "pairing_required", "we refused the peer")
        assert decision.level is not None
        assert self._hello_ack is not None
        self._level = decision.level
        env = make_envelope(
            "auth", msg_id=new_msg_id(self.rng), re=self._hello_ack.msg_id,
            src=self.identity.node_id, dst=self._hello_ack.src, ts=now, seq=0,
        )
        assert self._tx is not None
        payload = {"echo": self._hello_ack.data["nonce"], "token": self.token,
                   "attest": self.attest}
        self._auth_msg_id = env.msg_id
        self.state = State.WAIT_AUTH_RESULT
        return [Send(self._signed(seal_with(self._tx, env, payload)))]

    def _on_envelope(self, env: Envelope, now: int) -> list[Output]:
        if self.state is State.WAIT_HELLO_ACK:
            return self._on_hello_ack(env)
        if self.state is State.WAIT_AUTH_RESULT:
            return self._on_auth_result(env)
        raise HandshakeError(message=f"unexpected {env.type} in state {self.state.value}")

    def _on_hello_ack(self, env: Envelope) -> list[Output]:
        assert self._hello is not None
        if env.type != "hello_ack":
            raise HandshakeError(message=f"expected hello_ack, got {env.type}")
        peer = _parse_hello(env, HELLO_ACK_FIELDS, self.max_caps)
        if env.re != self._hello.msg_id:
            raise HandshakeError(message="hello_ack does not answer our hello")
        if env.dst != self.identity.node_id:
            raise HandshakeError("wrong_node", "hello_ack is addressed to another node")
        if env.data["echo"] != self._nonce:
            raise HandshakeError(message="echo does not match our nonce")
        if peer.node_id == self.identity.node_id:
            raise HandshakeError("wrong_node", "dialled ourselves")
        if self.expected_node_id is not None and peer.node_id != self.expected_node_id:
            raise HandshakeError("wrong_node", "another node answered at that address")
        self._derive(self._hello, env, env.data["eph"])
        self._hello_ack = env
        self.peer = peer
        self.state = State.WAIT_ADMISSION
        return [NeedAdmission(peer)]

    def _on_auth_result(self, env: Envelope) -> list[Output]:
        assert self.peer is not None
        payload = self._open_sealed(env, "auth_result", self.peer)
        if env.re != self._auth_msg_id:
            raise HandshakeError(message="auth_result does not answer our auth")
        if set(payload) != {"ok", "level", "reason"} or type(payload["ok"]) is not bool:
            raise HandshakeError(message="auth_result payload is malformed")
        if not payload["ok"]:
            reason = payload["reason"] if payload["reason"] in REASONS else "bad_handshake"
            self.state = State.FAILED
            self.failure = Failed(reason, "the peer refused us", remote=True)
            return [self.failure]
        if payload["level"] not in ("trusted", "guest"):
            raise HandshakeError(message="auth_result level is not trusted or guest")
        return [self._established(self._level, payload["level"])]


class Acceptor(_Machine):
    """The side that accepted the link."""

    role = "acceptor"
    _hello: Envelope | None = None  # set when the hello is answered; read only after
    _ack_msg_id = ""

    def __init__(self, identity: Identity, *, rng: Rng, now: int, **kw: Any) -> None:
        super().__init__(identity, rng=rng, now=now, **kw)
        self.state = State.WAIT_HELLO
        self._auth: Envelope | None = None

    def admit(self, decision: Decision, now: int, *, wall: int | None = None) -> list[Output]:
        """Answer the dialer with the admission decision (``admission.admit``)."""
        if self.state is not State.WAIT_ADMISSION:
            raise LocalProtocolError("state", "no admission is pending")
        now = now if wall is None else wall  # only the ts of auth_result needs a time
        self._last_now = now
        if not decision.ok:
            return self._fail(decision.reason or "pairing_required", "admission refused")
        assert decision.level is not None
        wire = self._auth_result(True, decision.level, None, now)
        return [Send(wire), self._established(decision.level, None)]

    def _can_send_auth_result(self) -> bool:
        return self._tx is not None and self._auth is not None

    def _auth_result(self, ok: bool, level: str | None, reason: str | None, now: int) -> str:
        assert self._tx is not None
        assert self._auth is not None
        assert self._hello is not None
        env = make_envelope(
            "auth_result", msg_id=new_msg_id(self.rng), re=self._auth.msg_id,
            src=self.identity.node_id, dst=self._hello.src, ts=now, seq=0,
        )
        payload = {"ok": ok, "level": level, "reason": reason}
        return self._signed(seal_with(self._tx, env, payload))

    def _on_envelope(self, env: Envelope, now: int) -> list[Output]:
        if self.state is State.WAIT_HELLO:
            return self._on_hello(env, now)
        if self.state is State.WAIT_AUTH:
            return self._on_auth(env)
        raise HandshakeError(message=f"unexpected {env.type} in state {self.state.value}")

    def _on_hello(self, env: Envelope, now: int) -> list[Output]:
        if env.type != "hello":
            raise HandshakeError(message=f"expected hello, got {env.type}")
        if env.re is not None:
            raise HandshakeError(message="hello answers nothing")
        if env.dst is not None and env.dst != self.identity.node_id:
            raise HandshakeError("wrong_node", "hello is addressed to another node")
        peer = _parse_hello(env, HELLO_FIELDS, self.max_caps)
        if peer.node_id == self.identity.node_id:
            raise HandshakeError("wrong_node", "a node cannot dial itself")
        data = self._hello_data()
        data["echo"] = env.data["nonce"]
        ack = sign_envelope(
            make_envelope(
                "hello_ack", msg_id=new_msg_id(self.rng), re=env.msg_id,
                src=self.identity.node_id, dst=env.src, ts=now, data=data,
            ),
            self.identity,
        )
        self._derive(env, ack, env.data["eph"])
        self._hello = env
        self._ack_msg_id = ack.msg_id
        self.peer = peer
        self.state = State.WAIT_AUTH
        return [Send(encode_envelope(ack))]

    def _on_auth(self, env: Envelope) -> list[Output]:
        assert self.peer is not None
        payload = self._open_sealed(env, "auth", self.peer)
        self._auth = env  # keys exist: from here a refusal can be told to the dialer
        if env.re != self._ack_msg_id:
            raise HandshakeError(message="auth does not answer our hello_ack")
        if set(payload) != {"echo", "token", "attest"}:
            raise HandshakeError(message="auth payload is malformed")
        if payload["echo"] != self._nonce:
            raise HandshakeError(message="echo does not match our nonce")
        token = payload["token"]
        attest = payload["attest"]
        if token is not None and (type(token) is not str or len(token) > 256):
            raise HandshakeError(message="token must be null or a short string")
        if attest is not None and type(attest) is not dict:
            raise HandshakeError(message="attest must be null or an object")
        self.state = State.WAIT_ADMISSION
        return [NeedAdmission(self.peer, token, attest)]


__all__ = [
    "PROTO", "REASONS", "Acceptor", "Dialer", "Established", "Failed", "HandshakeResult",
    "NeedAdmission", "Output", "PeerHello", "Send", "State", "derive_session_keys",
    "transcript_hash",
]
