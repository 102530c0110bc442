"""What a tab (``/ws``) or the CLI (``/api``) may ask of its node (SPEC 9): one table,
checked once.

Each command is a frozen dataclass in ``COMMANDS``, keyed by ``(channel, event)``. Its
fields are the members of the frame's ``data``, named as on the wire and typed by their
annotations; a field with a default may be left out (or be null). ``decode_command``
checks a command's ``data`` against its class once, at the boundary, and returns the
typed command; the node's handlers and the machines take it as it is. The checks run
in this order, so which error a tab sees first is fixed:

1. each field in declaration order: missing → ``bad_request "{event} needs {name}"``;
   a value of another JSON type (``true`` is not an integer) → ``"{name} has the wrong
   type"``;
2. ``req``, the client's optional correlation id (a string of at most 64 characters),
   which the node echoes in its direct answer;
3. each field's value rule (``rule(check)``: pane keys, node ids, turn ids, ...), in
   declaration order.

Members the table does not name are ignored. Rules that need the node's state (its own
id, its limits, what it stores, who is connected) belong to the machines and the node,
and come after these. ``long`` commands may take seconds (a dial, a pairing, a bench,
an agent turn): a tab runs them beside its other commands instead of waiting for each.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar, get_type_hints

from ..errors import RemoteProtocolError
from ..peer.addressbook import check_peer_url
from ..records import _check_rev, _is_node_id, check_pane_key

REQ_CHARS = 64


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    """A checked command. ``req`` is the client's correlation id, if it gave one."""

    channel: ClassVar[str] = ""
    event: ClassVar[str] = ""
    long: ClassVar[bool] = False
    req: str | None = None


C = TypeVar("C", bound=type[Command])

# (channel, event) -> the command's class; its fields: (name, JSON types, required, rule)
COMMANDS: dict[tuple[str, str], type[Command]] = {}
_FIELDS: dict[type[Command], tuple[tuple[str, tuple[type, ...], bool,
                                         Callable[[Any], Any] | None], ...]] = {}


def command(channel: str, event: str, *, long: bool = False) -> Callable[[C], C]:
    """Enter a command class in the table."""

    def register(cls: C) -> C:
        cls.channel, cls.event, cls.long = channel, event, long
        hints = get_type_hints(cls)
        fields = []
        for f in dataclasses.fields(cls):
            if f.name == "req":
                continue
            hint = hints[f.name]
            kinds = hint.__args__ if isinstance(hint, types.UnionType) else (hint,)
            required = f.default is dataclasses.MISSING
            fields.append((f.name, tuple(kinds), required, f.metadata.get("rule")))
        COMMANDS[(channel, event)] = cls
        _FIELDS[cls] = tuple(fields)
        return cls

    return register


def rule(check: Callable[[Any], Any], **kw: Any) -> Any:
    """A field whose value must also pass ``check`` (which returns the value to keep);
    ``None`` of an optional field is not checked."""
    return dataclasses.field(metadata={"rule": check}, **kw)


def req_of(data: Mapping[str, Any]) -> str | None:
    """The ``req`` a frame carries, if it is a valid one (also for error answers)."""
    req = data.get("req")
    return req if type(req) is str and len(req) <= REQ_CHARS else None


def decode_command(channel: str, event: str, data: Mapping[str, Any]) -> Command:
    """The typed command, or ``RemoteProtocolError`` (``bad_request``; ``unsupported``
    for a name the table does not hold)."""
    cls = COMMANDS.get((channel, event))
    if cls is None:
        raise RemoteProtocolError("unsupported", f"{channel} {event} is not served yet")
    args: dict[str, Any] = {}
    for name, kinds, required, _ in _FIELDS[cls]:
        if name not in data:
            if required:
                raise RemoteProtocolError("bad_request", f"{event} needs {name}")
            continue
        value = data[name]
        if type(value) not in kinds:
            raise RemoteProtocolError("bad_request", f"{name} has the wrong type")
        args[name] = value
    req = data.get("req")
    if req is not None and req_of(data) is None:
        raise RemoteProtocolError("bad_request",
                                  f"req must be a string of at most {REQ_CHARS} chars")
    for name, _, _, check in _FIELDS[cls]:
        if check is not None and args.get(name) is not None:
            args[name] = check(args[name])
    return cls(req=req, **args)


def client_events() -> dict[str, frozenset[str]]:
    """What a tab may send, per channel (the frame decoder's table)."""
    out: dict[str, set[str]] = {}
    for channel, event in COMMANDS:
        out.setdefault(channel, set()).add(event)
    return {channel: frozenset(events) for channel, events in out.items()}


# --- value rules -------------------------------------------------------------------------


def check_node_id(value: object) -> str:
    if not _is_node_id(value):
        raise RemoteProtocolError("bad_request", "node_id must be a node id")
    return value


def check_turn_id(value: str) -> str:
    if not 0 < len(value) <= 64:
        raise RemoteProtocolError("bad_request", "turnId is 1..64 characters")
    return value


def check_client(value: str) -> str:
    """The name of the MCP client a command comes through (shown as who asked)."""
    if not 0 < len(value) <= 64 or not value.isprintable():
        raise RemoteProtocolError("bad_request", "client is 1..64 printable characters")
    return value


def check_seq(value: int) -> int:
    if value < 0:
        raise RemoteProtocolError("bad_request", "fromSeq is an integer >= 0")
    return value


def check_ttl(value: int) -> int:
    if value <= 0:
        raise RemoteProtocolError("bad_request", "ttl must be a positive number of seconds")
    return value


def check_lobby_url(value: str) -> str:
    if not value.startswith(("ws://", "wss://")):
        raise RemoteProtocolError("bad_request", "url is a ws:// or wss:// URL of /lobby-ws")
    return value


def check_base_rev(value: int) -> int:
    return _check_rev(value, "baseRev")


# --- the table ---------------------------------------------------------------------------
# Commands without fields: one class each, all alike.

_PLAIN = {
    "system": ("hello", "ping"),
    "network": ("list_peers", "invite_list", "list_metrics", "self", "lan_peers"),
    "collab": ("list",),
    "peerchat": ("unread", "conversations"),
    "lobby": ("state", "disconnect", "list_rooms"),
}


def _plain() -> None:
    for channel, events in _PLAIN.items():
        for event in events:
            name = "".join(w.title() for w in (channel, *event.split("_")))
            command(channel, event, long=(channel, event) == ("lobby", "list_rooms"))(
                type(name, (Command,), {"__slots__": ()}))


_plain()


# network (SPEC 3, 4, 6.4)

@command("network", "connect", long=True)
@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkConnect(Command):
    address: str = rule(check_peer_url)
    node_id: str | None = None


@command("network", "disconnect")
@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkDisconnect(Command):
    node_id: str


@command("network", "invite_create")
@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkInviteCreate(Command):
    ttl: int | None = rule(check_ttl, default=None)  # seconds


@command("network", "invite_revoke")
@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkInviteRevoke(Command):
    token_id: str


@command("network", "pair_redeem", long=True)
@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkPairRedeem(Command):
    invite: str


@command("network", "set_trust")
@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkSetTrust(Command):
    node_id: str
    trusted: bool
    blocked: bool | None = None


@command("network", "bench", long=True)
@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkBench(Command):
    node_id: str
    count: int | None = None
    size: int | None = None


@command("network", "rename")
@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkRename(Command):
    node_name: str  # trimmed and checked against the node's own limit by the node


@command("network", "forget")
@dataclass(frozen=True, slots=True, kw_only=True)
class NetworkForget(Command):
    node_id: str


# collab (SPEC 6.1)

@command("collab", "join")
@dataclass(frozen=True, slots=True, kw_only=True)
class CollabJoin(Command):
    paneKey: str = rule(check_pane_key)


@command("collab", "leave")
@dataclass(frozen=True, slots=True, kw_only=True)
class CollabLeave(Command):
    paneKey: str = rule(check_pane_key)


@command("collab", "op")
@dataclass(frozen=True, slots=True, kw_only=True)
class CollabOp(Command):
    paneKey: str = rule(check_pane_key)
    baseRev: int = rule(check_base_rev)
    text: str  # its size is the machine's limit


@command("collab", "share")
@dataclass(frozen=True, slots=True, kw_only=True)
class CollabShare(Command):
    paneKey: str = rule(check_pane_key)
    node_id: str = rule(check_node_id)


@command("collab", "unshare")
@dataclass(frozen=True, slots=True, kw_only=True)
class CollabUnshare(Command):
    paneKey: str = rule(check_pane_key)
    node_id: str = rule(check_node_id)


# peerchat (SPEC 6.2)

@command("peerchat", "open")
@dataclass(frozen=True, slots=True, kw_only=True)
class PeerchatOpen(Command):
    node_id: str = rule(check_node_id)
    before: int | None = None  # its range, and the limit's, are the machine's
    limit: int | None = None


@command("peerchat", "send")
@dataclass(frozen=True, slots=True, kw_only=True)
class PeerchatSend(Command):
    node_id: str = rule(check_node_id)
    text: str


@command("peerchat", "read")
@dataclass(frozen=True, slots=True, kw_only=True)
class PeerchatRead(Command):
    node_id: str = rule(check_node_id)


@command("peerchat", "close")
@dataclass(frozen=True, slots=True, kw_only=True)
class PeerchatClose(Command):
    node_id: str = rule(check_node_id)


# agent (SPEC 6.3)

@command("agent", "ask", long=True)
@dataclass(frozen=True, slots=True, kw_only=True)
class AgentAsk(Command):
    turnId: str = rule(check_turn_id)
    prompt: str
    client: str | None = rule(check_client, default=None)  # an MCP client asks through it


@command("agent", "ask_peer", long=True)
@dataclass(frozen=True, slots=True, kw_only=True)
class AgentAskPeer(Command):
    turnId: str = rule(check_turn_id)
    node_id: str = rule(check_node_id)
    prompt: str
    client: str | None = rule(check_client, default=None)


@command("agent", "cancel")
@dataclass(frozen=True, slots=True, kw_only=True)
class AgentCancel(Command):
    turnId: str = rule(check_turn_id)


@command("agent", "tasks")
@dataclass(frozen=True, slots=True, kw_only=True)
class AgentTasks(Command):
    pass


@command("agent", "follow")
@dataclass(frozen=True, slots=True, kw_only=True)
class AgentFollow(Command):
    taskId: str = rule(check_turn_id)
    fromSeq: int = rule(check_seq, default=0)


@command("agent", "unfollow")
@dataclass(frozen=True, slots=True, kw_only=True)
class AgentUnfollow(Command):
    taskId: str = rule(check_turn_id)


@command("agent", "cancel_task")
@dataclass(frozen=True, slots=True, kw_only=True)
class AgentCancelTask(Command):
    taskId: str = rule(check_turn_id)


# lobby (SPEC 7)

@command("lobby", "connect")
@dataclass(frozen=True, slots=True, kw_only=True)
class LobbyConnect(Command):
    url: str | None = rule(check_lobby_url, default=None)


@command("lobby", "create_room", long=True)
@dataclass(frozen=True, slots=True, kw_only=True)
class LobbyCreateRoom(Command):
    name: str
    visibility: str
    joinPolicy: str
    token: str | None = None


@command("lobby", "join_room", long=True)
@dataclass(frozen=True, slots=True, kw_only=True)
class LobbyJoinRoom(Command):
    roomId: str
    token: str | None = None


@command("lobby", "leave_room", long=True)
@dataclass(frozen=True, slots=True, kw_only=True)
class LobbyLeaveRoom(Command):
    roomId: str


__all__ = [
    "COMMANDS", "REQ_CHARS", "AgentAsk", "AgentAskPeer", "AgentCancel", "AgentCancelTask",
    "AgentFollow", "AgentTasks", "AgentUnfollow", "CollabJoin",
    "CollabLeave", "CollabOp", "CollabShare", "CollabUnshare", "Command", "LobbyConnect",
    "LobbyCreateRoom", "LobbyJoinRoom", "LobbyLeaveRoom", "NetworkBench", "NetworkConnect",
    "NetworkDisconnect", "NetworkForget", "NetworkInviteCreate", "NetworkInviteRevoke",
    "NetworkPairRedeem", "NetworkRename", "NetworkSetTrust", "PeerchatClose", "PeerchatOpen",
    "PeerchatRead", "PeerchatSend", "client_events", "command", "decode_command", "req_of",
    "rule",
]
