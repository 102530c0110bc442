"""``hd-node``: run a node, and talk to a running one (SPEC 9/10).

Commands: run, id, invite, pair, peers, ui. Errors print one clear line to stderr and
exit non-zero (2 for usage and configuration errors and for a data directory the node
refuses to start on — a file where the directory should be included —, 1 for everything
else: a data directory another node runs on, a port in use, no running node).

A command that talks to a running node trusts node.json only once the process on its
port proves to be the node that wrote it (``/healthz``: node id, per-start nonce and an
HMAC of a fresh challenge keyed with the token): after a kill -9 the file stays behind,
and the port may belong to anyone by then. Only then is the token sent.
"""

from __future__ import annotations

import argparse
import hmac
import json
import logging
import os
import secrets
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from hd_shell.errors import find

from . import __version__, files
from .config import ConfigError, Settings, load_settings
from .dbfile import stored_peer_count
from .store import stored_setting

HEALTH_TIMEOUT = 3.0  # s: a live node answers /healthz at once


class CliError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hd-node", description="hd fabric node")
    p.add_argument("--version", action="version", version=f"hd-node {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def data_dir(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--data-dir", help="node data directory (or HD_DATA_DIR)")

    r = sub.add_parser("run", help="run the node in the foreground")
    data_dir(r)
    r.add_argument("--name", dest="node_name", help="display name (≤ 64 chars)")
    r.add_argument("--ui-host", help="local listener host (default 127.0.0.1)")
    r.add_argument("--ui-port", type=int, help="local listener port (default 8765; 0 = any)")
    r.add_argument("--peer-host", help="peer listener host (default 0.0.0.0)")
    r.add_argument("--peer-port", type=int, help="peer listener port (default 8766; 0 = any)")
    r.add_argument("--advertise", help="ws://host:port/peer-ws URL to put in invites")
    r.add_argument("--trust-mode", choices=["manual", "open-lan", "directory"])
    r.add_argument("--lobby", dest="lobby_url",
                   help="ws://…/lobby-ws of a lobby to join (several instances of one "
                        "lobby: comma-separated, tried in order)")
    r.add_argument("--directory-key", dest="directory_key",
                   help="trust mode directory: the lobby key whose directory we trust")
    r.add_argument("--relay", dest="relay_url",
                   help="ws://…/relay-ws of a relay (default: the one beside the lobby; "
                        "several instances of one relay: comma-separated)")
    r.add_argument("--ice", dest="ice_enabled", action="store_true", default=None,
                   help="learn our public address from --stun-server and offer it to "
                        "peers (a srflx candidate; off by default)")
    r.add_argument("--stun-server", dest="stun_server",
                   help="host:port of a STUN server, for --ice and WebRTC (none by "
                        "default: nothing public is asked)")
    r.add_argument("--agent-backend", dest="agent_backend",
                   help="the node's agent: demo | openai:URL[#model] (key in "
                        "HD_OPENAI_API_KEY) | command:CMD (JSON lines on stdin/stdout)")
    r.add_argument("--allow-remote-agent", dest="allow_remote_agent", action="store_true",
                   default=None, help="let trusted peers ask this node's agent (off by default)")
    r.add_argument("--remote-agent-mode", dest="remote_agent_mode",
                   choices=["plan", "acceptEdits", "autonomous"],
                   help="tools a peer's request may use: plan (read-only, default), "
                        "acceptEdits, autonomous")
    r.add_argument("--lan", dest="enable_lan_discovery", action="store_true", default=None,
                   help="LAN discovery (mDNS): announce this node, list and reconnect to "
                        "peers seen on the LAN (enableLanDiscovery; off by default)")
    r.add_argument("--webrtc", dest="enable_webrtc", action="store_true", default=None,
                   help="WebRTC links signalled through the lobby (enableWebRtc; off by "
                        "default; needs the webrtc extra). TURN: turnUrls, turnUsername, "
                        "turnCredential in the config file or HD_TURN_* (never on argv)")
    r.add_argument("--ice-policy", dest="ice_policy", choices=["all", "relay"],
                   help="WebRTC ICE policy: all (default) or relay (only through TURN)")
    r.add_argument("--config", help="TOML config file ([network] table)")
    r.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    r.add_argument("--new-identity", action="store_true",
                   help="identity.key is missing: make a new one even though node.db holds "
                        "peers (a new node id; they must pair again)")

    i = sub.add_parser("id", help="print this node's identity (works offline)")
    data_dir(i)
    inv = sub.add_parser("invite", help="create an invite on the running node")
    data_dir(inv)
    inv.add_argument("--ttl", type=int, default=None, help="lifetime in seconds (default 24 h)")
    pr = sub.add_parser("pair", help="redeem an invite on the running node")
    data_dir(pr)
    pr.add_argument("invite", help="the hd1:… invite string")
    pe = sub.add_parser("peers", help="list peers of the running node as JSON")
    data_dir(pe)
    u = sub.add_parser("ui", help="print the UI URL with its token")
    data_dir(u)
    m = sub.add_parser("mcp", help="serve the running node to an MCP client on stdio "
                                   "(tools list_peers, ask_peer, ask_agent)")
    data_dir(m)
    return p


def _settings(args: argparse.Namespace, with_cli: bool = False) -> Settings:
    cli: dict[str, Any] = {}
    config = None
    if with_cli:
        cli = {k: getattr(args, k) for k in ("node_name", "ui_host", "ui_port", "peer_host",
                                              "peer_port", "advertise", "trust_mode", "lobby_url",
                                              "relay_url", "directory_key", "agent_backend",
                                              "allow_remote_agent", "remote_agent_mode",
                                              "ice_enabled", "stun_server",
                                              "enable_lan_discovery", "enable_webrtc",
                                              "ice_policy")}
        config = args.config
    s = load_settings(args.data_dir, config_file=config, cli=cli)
    if s.data_dir.exists() and not s.data_dir.is_dir():
        raise files.DataError(f"the data directory {s.data_dir} is not a directory")
    return s


class RunningNode:
    """The node named by node.json, checked to be the process that wrote it."""

    def __init__(self, info: dict[str, Any], client: httpx.Client) -> None:
        self.info = info
        self.client = client  # keeps the checked connection for the token's request

    def api(self, method: str, path: str, body: dict[str, Any] | None = None,
            timeout: float = 30.0) -> tuple[int, Any]:
        url = self.info["ui_url"].rstrip("/") + path
        try:
            resp = self.client.request(
                method, url, json=body, timeout=timeout,
                headers={"Authorization": f"Bearer {self.info['token']}"})
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach the node at {self.info['ui_url']}: {exc}") from None
        try:
            return resp.status_code, resp.json()
        except ValueError:
            raise CliError(f"unexpected answer from the node ({resp.status_code})") from None


@contextmanager
def _running(data_dir: Path) -> Iterator[RunningNode]:
    info = files.read_node_json(data_dir)
    if info is None:
        raise CliError(f"no running node for {data_dir} (start one with: hd-node run "
                       f"--data-dir {data_dir})")
    if not all(isinstance(info.get(k), str) and info[k]
               for k in ("ui_url", "node_id", "nonce", "token")):
        raise CliError(f"no running node for {data_dir} (node.json lacks the fields to check "
                       f"the node; restart it with this version)")
    # No proxy from the environment may see the token, and no redirect may carry it.
    client = httpx.Client(trust_env=False, follow_redirects=False)
    try:
        _check_node(data_dir, info, client)
        yield RunningNode(info, client)
    finally:
        client.close()


def _check_node(data_dir: Path, info: dict[str, Any], client: httpx.Client) -> None:
    """Ask the port of node.json, without the token, whether it is the node that wrote
    the file: same node id, same per-start nonce, and the HMAC of our fresh challenge
    keyed with the token (the nonce alone could be repeated by a process that asked
    /healthz before the node died)."""
    ui_url = info["ui_url"]
    challenge = secrets.token_hex(32)
    stale = f"no running node for {data_dir} (node.json is stale"
    try:
        resp = client.get(ui_url.rstrip("/") + "/healthz", params={"challenge": challenge},
                          timeout=HEALTH_TIMEOUT)
    except httpx.HTTPError as exc:
        why = str(exc) or type(exc).__name__
        raise CliError(f"{stale}: cannot reach the node at {ui_url}: {why})") from None
    try:
        health = resp.json()
    except ValueError:
        health = None
    expected = files.healthz_proof(info["token"], info["node_id"], info["nonce"], challenge)
    if not (resp.status_code == 200 and isinstance(health, dict)
            and health.get("node_id") == info["node_id"] and health.get("nonce") == info["nonce"]
            and isinstance(health.get("proof"), str)
            and hmac.compare_digest(health["proof"].encode(), expected.encode())):
        try:
            where = f"port {urlsplit(ui_url).port}"
        except ValueError:
            where = ui_url
        raise CliError(f"{stale}: another process answers on {where})")


def _print(obj: Any) -> None:
    print(json.dumps(obj, indent=2))


def _stop_signal(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def cmd_run(args: argparse.Namespace) -> int:
    import trio

    from .node import ListenError, Node

    # Ctrl-C (or SIGTERM) must end the node whenever it comes: before the node takes the
    # signals over, as a KeyboardInterrupt (trio's own handling once it runs) — also
    # when a shell started us as a background job with SIGINT ignored (`make run`).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _stop_signal)
    try:
        settings = _settings(args, with_cli=True)
        logging.basicConfig(
            level=getattr(logging, str(args.log_level).upper(), logging.INFO),
            format="%(asctime)s %(levelname)s %(name)s %(message)s",
        )
        try:
            node = Node(settings, new_identity=args.new_identity)
        except files.DataDirBusy as exc:
            raise CliError(_busy(settings.data_dir, exc)) from None
        except OSError as exc:  # files.DataError covers what we can name; this is the rest
            raise files.DataError(f"cannot use the data directory {settings.data_dir}: "
                                  f"{exc}") from None
        trio.run(node.run)
    except BaseException as exc:
        # trio wraps what a task raised (a port in use) in exception groups.
        err = find(exc, ListenError)
        if err is not None:
            raise CliError(str(err)) from None
        if find(exc, KeyboardInterrupt) is None:
            raise
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the node is down: nothing to stop
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return 0


def _busy(data_dir: Path, exc: Exception) -> str:
    """The data directory is locked: say by whom, and how to reach it instead."""
    info = files.read_node_json(data_dir) or {}
    pid = f" (pid {info['pid']})" if isinstance(info.get("pid"), int) else ""
    return (f"another node{pid} is running with data directory {data_dir}; its UI: "
            f"hd-node ui --data-dir {data_dir}" if pid else str(exc))



def cmd_id(args: argparse.Namespace) -> int:
    s = _settings(args)
    ident = files.load_identity(s.data_dir)
    if ident is None:
        # Created under the node's lock and by the node's rule: never while node.db
        # holds peers that pinned a key that went missing.
        try:
            fd = files.lock_data_dir(s.data_dir)
        except files.DataDirBusy:
            raise CliError(f"a node is starting with data directory {s.data_dir}; "
                           f"try again in a moment") from None
        try:
            ident = files.load_identity(s.data_dir) or files.start_new_identity(
                s.data_dir, stored_peers=stored_peer_count(s.data_dir / files.DB_FILE),
                allowed=False)
        finally:
            os.close(fd)
    # The name the node goes by (hub.node_name_for), without opening its store.
    name = (s.node_name or stored_setting(s.data_dir / files.DB_FILE, "node_name")
            or f"node-{ident.node_id[:6]}")
    _print({"node_id": ident.node_id, "public_key": ident.public_key, "name": name})
    return 0


def cmd_invite(args: argparse.Namespace) -> int:
    body = {} if args.ttl is None else {"ttl_s": args.ttl}
    with _running(_settings(args).data_dir) as node:
        status, out = node.api("POST", "/api/invites", body)
    if status != 200:
        raise CliError(f"invite failed: {out.get('error')}: {out.get('message')}")
    print(out["invite"])
    return 0


def cmd_pair(args: argparse.Namespace) -> int:
    with _running(_settings(args).data_dir) as node:
        status, out = node.api("POST", "/api/pair", {"invite": args.invite})
    _print(out)
    if status != 200 or not out.get("ok"):
        print(f"hd-node: pairing failed: {out.get('error')}: {out.get('message')}",
              file=sys.stderr)
        return 1
    return 0


def cmd_peers(args: argparse.Namespace) -> int:
    with _running(_settings(args).data_dir) as node:
        status, out = node.api("GET", "/api/peers")
    if status != 200:
        raise CliError(f"peers failed: {out.get('error')}")
    _print(out)
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    # Checked too: a URL with the token that points at an impostor would hand it over
    # as soon as it is opened.
    with _running(_settings(args).data_dir) as node:
        print(f"{node.info['ui_url']}?token={node.info['token']}")
    return 0


def cmd_mcp(args: argparse.Namespace) -> int:
    # The node is checked first (as for `ui`): the token goes only to the node that
    # wrote node.json. stdout is the MCP channel from here on; anything else is stderr.
    settings = _settings(args)
    with _running(settings.data_dir) as node:
        ui_url, token = node.info["ui_url"], node.info["token"]
    from .mcpface import serve  # the SDK loads only for this command

    try:
        serve(ui_url, token, agent_timeout_s=settings.agent_timeout_s)
    except KeyboardInterrupt:
        return 130
    return 0


COMMANDS = {"run": cmd_run, "id": cmd_id, "invite": cmd_invite, "pair": cmd_pair,
            "peers": cmd_peers, "ui": cmd_ui, "mcp": cmd_mcp}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, files.DataError) as exc:
        print(f"hd-node: {exc}", file=sys.stderr)
        return 2
    except CliError as exc:
        print(f"hd-node: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
