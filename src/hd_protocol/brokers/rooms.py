"""Lobby rooms (SPEC 7.3): the record, what a ``create_room`` frame may ask for, and
who a room admits. ``hd_protocol.brokers.lobby`` owns the rooms and their frames."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import RemoteProtocolError
from .frames import fields, text

VISIBILITY = ("public", "unlisted")
POLICIES = ("open", "token", "directory")


@dataclass(slots=True)
class Room:
    id: str
    name: str
    host: str
    visibility: str
    policy: str
    token_hash: str | None  # a token room keeps only the digest of its token
    members: set[str] = field(default_factory=set)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def parse_create_room(f: Mapping[str, Any]) -> tuple[str, str, str, str | None]:
    """``(name, visibility, policy, token digest)`` of a ``create_room`` frame."""
    fields(f, ("name", "visibility", "joinPolicy"), ("token",))
    name = text(f["name"], "name", min_chars=1, max_chars=64)
    if f["visibility"] not in VISIBILITY:
        raise RemoteProtocolError("bad_request", "visibility is public or unlisted")
    if f["joinPolicy"] not in POLICIES:
        raise RemoteProtocolError("bad_request", "joinPolicy is open, token or directory")
    token = f.get("token")
    if f["joinPolicy"] == "token":
        token = text(token, "token", min_chars=1, max_chars=256)
    elif token is not None:
        raise RemoteProtocolError("bad_request", "only a token room takes a token")
    return name, f["visibility"], f["joinPolicy"], (
        token_hash(token) if token is not None else None)


def admit(room: Room, node_id: str, public_key: str, token: object,
          directory: Mapping[str, str], max_members: int, *,
          token_digest: str | None = None) -> None:
    """Whether ``room`` takes the node (``denied``/``full``/``bad_request`` if not).
    Tokens and directory keys compare in constant time. ``token_digest``: the token as
    another lobby instance passed it on (its digest: the token itself never leaves the
    instance it was sent to)."""
    if room.host == node_id:
        raise RemoteProtocolError("bad_request", "the host is in its own room")
    if room.policy == "token":
        given = token_digest if token_digest is not None else (
            token_hash(token) if type(token) is str else None)
        if given is None or room.token_hash is None or not hmac.compare_digest(
                given, room.token_hash):
            raise RemoteProtocolError("denied", "wrong token")
    elif room.policy == "directory":
        listed = directory.get(node_id)
        if listed is None or not hmac.compare_digest(listed, public_key):
            raise RemoteProtocolError("denied", "not on this lobby's directory")
    if node_id not in room.members and len(room.members) >= max_members:
        raise RemoteProtocolError("full", f"at most {max_members} members")
