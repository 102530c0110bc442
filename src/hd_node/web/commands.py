"""The one command layer: what a tab (``/ws``) or the CLI (``/api``) may ask of the node.

Both front doors hand a ``(channel, event, data)`` command to ``Commands.run``; it
decodes it once into a typed command (``hd_protocol.apps.tabcommands``: one table for
both, with each field's type and value rule), runs the handler and returns its answer;
handlers take the typed command as it is. Errors are ``HubError`` or ``ProtocolError`` with a
``code``; each front door renders them its own way (an ``error`` frame, an HTTP status).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from hd_protocol import ProtocolError
from hd_protocol.apps.tabcommands import (
    AgentAsk,
    AgentAskPeer,
    AgentCancel,
    AgentCancelTask,
    AgentFollow,
    AgentTasks,
    AgentUnfollow,
    Command,
    LobbyConnect,
    LobbyCreateRoom,
    LobbyJoinRoom,
    LobbyLeaveRoom,
    NetworkBench,
    NetworkConnect,
    NetworkDisconnect,
    NetworkForget,
    NetworkInviteCreate,
    NetworkInviteRevoke,
    NetworkPairRedeem,
    NetworkRename,
    NetworkSetTrust,
    decode_command,
)

from .. import __version__
from ..discovery.lobby import LobbyLink
from ..errors import HubError
from ..features import bench
from ..features.agent_tasks import AgentTasks as AgentTaskRunner
from ..features.collab import Features
from ..hub.connector import Connector
from ..hub.pairing import Pairing
from ..hub.peers import Peers
from ..hub.sessions import SessionRegistry
from ..hub.tabbus import Tab
from ..hub.trust import DialIntent

log = logging.getLogger("hd_node.commands")


@dataclass(frozen=True)
class Answer:
    """The direct answer to a command (the /ws frame; /api returns ``data``)."""

    channel: str
    event: str
    data: dict[str, Any]


# Each handler takes its own command class (``Any`` here: the table says which).
Handler = Callable[["Commands", Any, Tab | None], Awaitable[Answer | None]]


class Commands:
    def __init__(self, *, node_id: str, peers: Peers, pairing: Pairing, connector: Connector,
                 features: Features, sessions: SessionRegistry, lobby: LobbyLink,
                 agent_tasks: AgentTaskRunner,
                 lan_peers: Callable[[], dict[str, Any]] | None = None) -> None:
        """``lan_peers``: LAN discovery's view (SPEC 8.5), when it runs."""
        self.node_id = node_id
        self.agent_tasks = agent_tasks
        self.lobby = lobby
        self.peers = peers
        self.pairing = pairing
        self.connector = connector
        self.features = features
        self.sessions = sessions
        self.lan_peers = lan_peers

    async def run(self, channel: str, event: str, data: dict[str, Any],
                  tab: Tab | None = None) -> Answer | None:
        return await self.run_command(decode_command(channel, event, data), tab)

    async def run_command(self, cmd: Command, tab: Tab | None = None) -> Answer | None:
        return await HANDLERS[(cmd.channel, cmd.event)](self, cmd, tab)


# --- system ---------------------------------------------------------------------------


async def _hello(c: Commands, cmd: Command, tab: Tab | None) -> Answer:
    return Answer("system", "hello", {"node_id": c.node_id, "version": __version__})


async def _ping(c: Commands, cmd: Command, tab: Tab | None) -> Answer:
    return Answer("system", "pong", {})


# --- network --------------------------------------------------------------------------


async def _self(c: Commands, cmd: Command, tab: Tab | None) -> Answer:
    return Answer("network", "self", c.peers.self_info())


async def _list_peers(c: Commands, cmd: Command, tab: Tab | None) -> Answer:
    return Answer("network", "peers", {"self": c.peers.self_info(),
                                       "peers": c.peers.list_peers()})


async def _connect(c: Commands, cmd: NetworkConnect, tab: Tab | None) -> Answer:
    # The table checked the address: a typo never starts a ladder to nowhere.
    intent = DialIntent(expected_node_id=cmd.node_id)
    driver = await c.connector.dial_any([cmd.address], intent)
    assert driver.peer_id is not None
    return Answer("network", "peer_update", {"peer": c.peers.peer_info(driver.peer_id)})


async def _disconnect(c: Commands, cmd: NetworkDisconnect, tab: Tab | None) -> Answer:
    c.peers.disconnect(cmd.node_id)
    return Answer("network", "peer_update", {"peer": c.peers.peer_info(cmd.node_id)})


async def _invite_create(c: Commands, cmd: NetworkInviteCreate, tab: Tab | None) -> Answer:
    ttl = cmd.ttl
    return Answer("network", "invite",
                  c.pairing.create_invite(None if ttl is None else ttl * 1000))


async def _invite_list(c: Commands, cmd: Command, tab: Tab | None) -> Answer:
    return Answer("network", "invites", {"invites": c.pairing.list_invites()})


async def _invite_revoke(c: Commands, cmd: NetworkInviteRevoke, tab: Tab | None) -> Answer:
    c.pairing.revoke_invite(cmd.token_id)
    return Answer("network", "invites", {"invites": c.pairing.list_invites()})


async def _pair_redeem(c: Commands, cmd: NetworkPairRedeem, tab: Tab | None) -> Answer:
    try:
        peer = await c.pairing.pair_redeem(cmd.invite)
    except HubError as exc:
        return Answer("network", "pair_result",
                      {"ok": False, "error": exc.code, "message": exc.message})
    return Answer("network", "pair_result", {"ok": True, "peer": peer})


async def _set_trust(c: Commands, cmd: NetworkSetTrust, tab: Tab | None) -> Answer:
    info = c.peers.set_trust(cmd.node_id, cmd.trusted, cmd.blocked)
    return Answer("network", "peer_update", {"peer": info})


async def _rename(c: Commands, cmd: NetworkRename, tab: Tab | None) -> Answer:
    # Every tab (this one too) is also pushed ``network self``; peers get a presence.
    return Answer("network", "self", c.peers.rename(cmd.node_name))


async def _forget(c: Commands, cmd: NetworkForget, tab: Tab | None) -> Answer:
    # Pushed to every tab as well: the row goes everywhere at once.
    c.peers.forget(cmd.node_id)
    return Answer("network", "peer_removed", {"node_id": cmd.node_id})


async def _lan_peers(c: Commands, cmd: Command, tab: Tab | None) -> Answer:
    view = c.lan_peers() if c.lan_peers is not None else {"enabled": False, "peers": []}
    return Answer("network", "lan_peers", view)


async def _list_metrics(c: Commands, cmd: Command, tab: Tab | None) -> Answer:
    return Answer("network", "peer_metrics", {"metrics": c.peers.metrics_view()})


async def _bench(c: Commands, cmd: NetworkBench, tab: Tab | None) -> Answer:
    try:
        count, size = bench.check_args(cmd.count, cmd.size)
    except bench.BenchError as exc:
        raise HubError("bad_request", str(exc)) from None
    driver = c.sessions.get(cmd.node_id)
    if driver is None:
        raise HubError("not_found", "no session with that peer")
    log.info("bench started peer=%s count=%d size=%d", cmd.node_id, count, size)
    return Answer("network", "bench_result", await bench.run(driver, count, size))


# --- collab and peerchat (SPEC 6.1, 6.2, 9): answers go out as the machines say -----------


async def _collab(c: Commands, cmd: Command, tab: Tab | None) -> None:
    await c.features.collab_command(tab, cmd)


async def _peerchat(c: Commands, cmd: Command, tab: Tab | None) -> None:
    await c.features.chat_command(tab, cmd)


# --- lobby (SPEC 7, 9) ---------------------------------------------------------------------


async def _lobby_state(c: Commands, cmd: Command, tab: Tab | None) -> Answer:
    return Answer("lobby", "state", c.lobby.state())


async def _lobby_connect(c: Commands, cmd: LobbyConnect, tab: Tab | None) -> Answer:
    if cmd.url is None and not c.lobby.url:
        raise HubError("bad_request", "no lobby configured: give url")
    c.lobby.connect(cmd.url)
    return Answer("lobby", "state", c.lobby.state())


async def _lobby_disconnect(c: Commands, cmd: Command, tab: Tab | None) -> Answer:
    c.lobby.disconnect()
    return Answer("lobby", "state", c.lobby.state())


async def _lobby_rooms(c: Commands, cmd: Command, tab: Tab | None) -> Answer:
    return Answer("lobby", "rooms", {"rooms": await c.lobby.list_rooms()})


async def _lobby_create(c: Commands, cmd: LobbyCreateRoom, tab: Tab | None) -> Answer:
    room = await c.lobby.create_room(cmd.name, cmd.visibility, cmd.joinPolicy, cmd.token)
    return Answer("lobby", "room_created", {"room": room})


async def _lobby_join(c: Commands, cmd: LobbyJoinRoom, tab: Tab | None) -> Answer:
    return Answer("lobby", "joined", await c.lobby.join_room(cmd.roomId, cmd.token))


async def _lobby_leave(c: Commands, cmd: LobbyLeaveRoom, tab: Tab | None) -> Answer:
    await c.lobby.leave_room(cmd.roomId)
    return Answer("lobby", "room_closed", {"roomId": cmd.roomId})


# --- agent (SPEC 6.3, 9) -------------------------------------------------------------------
# A turn's events (token, tool_call, tool_result, answer, error) go to the asking tab as
# they happen; the command's own answer is ``done {turnId, ok}`` once the turn is over.


async def _agent_ask(c: Commands, cmd: AgentAsk, tab: Tab | None) -> Answer:
    ok = await c.agent_tasks.ask(tab, cmd.turnId, cmd.prompt, client=cmd.client)
    return Answer("agent", "done", {"turnId": cmd.turnId, "ok": ok})


async def _agent_ask_peer(c: Commands, cmd: AgentAskPeer, tab: Tab | None) -> Answer:
    ok = await c.agent_tasks.ask(tab, cmd.turnId, cmd.prompt, peer_id=cmd.node_id,
                                 client=cmd.client)
    return Answer("agent", "done", {"turnId": cmd.turnId, "ok": ok})


async def _agent_cancel(c: Commands, cmd: AgentCancel, tab: Tab | None) -> Answer:
    if not c.agent_tasks.cancel_turn(tab, cmd.turnId):
        raise HubError("not_found", "no such turn running in this tab")
    return Answer("agent", "cancelling", {"turnId": cmd.turnId})


async def _agent_tasks(c: Commands, cmd: AgentTasks, tab: Tab | None) -> Answer:
    return Answer("agent", "tasks", {"tasks": c.agent_tasks.book.summaries()})


async def _agent_follow(c: Commands, cmd: AgentFollow, tab: Tab | None) -> Answer:
    task = c.agent_tasks.follow(tab, cmd.taskId, cmd.fromSeq)
    return Answer("agent", "following", {"task": task, "fromSeq": cmd.fromSeq})


async def _agent_unfollow(c: Commands, cmd: AgentUnfollow, tab: Tab | None) -> Answer:
    c.agent_tasks.unfollow(tab, cmd.taskId)
    return Answer("agent", "unfollowed", {"taskId": cmd.taskId})


async def _agent_cancel_task(c: Commands, cmd: AgentCancelTask, tab: Tab | None) -> Answer:
    return Answer("agent", "task", c.agent_tasks.cancel(cmd.taskId))


# One handler for each command of the table (``tests/shell/test_commands_table.py``).
HANDLERS: dict[tuple[str, str], Handler] = {
    ("system", "hello"): _hello,
    ("system", "ping"): _ping,
    ("network", "self"): _self,
    ("network", "list_peers"): _list_peers,
    ("network", "connect"): _connect,
    ("network", "disconnect"): _disconnect,
    ("network", "invite_create"): _invite_create,
    ("network", "invite_list"): _invite_list,
    ("network", "invite_revoke"): _invite_revoke,
    ("network", "pair_redeem"): _pair_redeem,
    ("network", "set_trust"): _set_trust,
    ("network", "rename"): _rename,
    ("network", "forget"): _forget,
    ("network", "list_metrics"): _list_metrics,
    ("network", "lan_peers"): _lan_peers,
    ("network", "bench"): _bench,
    **{("collab", e): _collab for e in ("join", "leave", "op", "share", "unshare", "list")},
    **{("peerchat", e): _peerchat
       for e in ("open", "send", "read", "unread", "close", "conversations")},
    ("agent", "ask"): _agent_ask,
    ("agent", "ask_peer"): _agent_ask_peer,
    ("agent", "cancel"): _agent_cancel,
    ("agent", "tasks"): _agent_tasks,
    ("agent", "follow"): _agent_follow,
    ("agent", "unfollow"): _agent_unfollow,
    ("agent", "cancel_task"): _agent_cancel_task,
    ("lobby", "state"): _lobby_state,
    ("lobby", "connect"): _lobby_connect,
    ("lobby", "disconnect"): _lobby_disconnect,
    ("lobby", "list_rooms"): _lobby_rooms,
    ("lobby", "create_room"): _lobby_create,
    ("lobby", "join_room"): _lobby_join,
    ("lobby", "leave_room"): _lobby_leave,
}

__all__ = ["Answer", "Commands", "HubError", "ProtocolError"]
