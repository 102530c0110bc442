"""Typed errors. Every rejection in hd_protocol carries a short machine ``code``.

The code is what goes on the wire (``error {code}``, ``auth_result {reason}``) and
what shells count in their metrics; the message is for people and never carries
key material, tokens or payloads.

As in h11, the errors say who broke the protocol: ``RemoteProtocolError`` means the
input came from outside (a peer's frame, a tab's command, an invite someone pasted) and
is wrong; ``LocalProtocolError`` means our own caller asked for something the protocol
does not allow. A shell catches ``RemoteProtocolError`` around peer input and lets a
``LocalProtocolError`` surface as the bug it is, so a local bug is never swallowed as
a peer's fault. Both are ``ProtocolError``, which carries the ``code``.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """The protocol was broken. ``code`` names the rule."""

    code: str = "protocol"

    def __init__(self, code: str | None = None, message: str = "") -> None:
        if code is not None:
            self.code = code
        self.message = message or self.code
        super().__init__(f"{self.code}: {self.message}")


class RemoteProtocolError(ProtocolError):
    """Input from outside (a peer, a tab, a pasted invite) broke a rule."""


class LocalProtocolError(ProtocolError):
    """Our own caller asked for something the protocol does not allow."""

    code = "local"


class CanonicalError(ProtocolError):
    """A value outside the canonical JSON domain (SPEC 1.1).

    Neutral on purpose: ``canonical_json`` raises it for a value our caller built and
    ``loads_strict`` for wire text; every decoder turns it into its own
    ``RemoteProtocolError`` and every encoder into a ``LocalProtocolError``.
    """

    code = "canonical"


class HandshakeError(RemoteProtocolError):
    """A handshake aborted; ``code`` is one of the SPEC 4 reasons."""

    code = "bad_handshake"
