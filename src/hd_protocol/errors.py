"""Typed errors. Every rejection in hd_protocol carries a short machine ``code``.

The code is what goes on the wire (``error {code}``, ``auth_result {reason}``) and
what shells count in their metrics; the message is for people and never carries
key material, tokens or payloads.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """A peer (or a caller) broke the protocol. ``code`` names the rule."""

    code: str = "protocol"

    def __init__(self, code: str | None = None, message: str = "") -> None:
        if code is not None:
            self.code = code
        self.message = message or self.code
        super().__init__(f"{self.code}: {self.message}")


class CanonicalError(ProtocolError):
    """A value outside the canonical JSON domain (SPEC 1.1)."""

    code = "canonical"


class HandshakeError(ProtocolError):
    """A handshake aborted; ``code`` is one of the SPEC 4 reasons."""

    code = "bad_handshake"


class LocalProtocolError(ProtocolError):
    """Our own caller asked for something the protocol does not allow."""

    code = "local"
