"""``hd-node``: run a node, and talk to a running one (SPEC 9/10).

Commands: run, id, invite, pair, peers, ui. Errors print one clear line to stderr and
exit non-zero (2 for usage and configuration errors and for a data directory the node
refuses to start on, 1 for everything else).

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
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from . import __version__, files
from .config import ConfigError, Settings, load_settings
from .dbfile import stored_peer_count

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
    r.add_argument("--lobby", dest="lobby_url", help="ws://…/lobby-ws of a lobby to join")
    r.add_argument("--directory-key", dest="directory_key",
                   help="trust mode directory: the lobby key whose directory we trust")
    r.add_argument("--relay", dest="relay_url",
                   help="ws://…/relay-ws of a relay (default: the one beside the lobby)")
    r.add_argument("--agent-backend", dest="agent_backend",
                   help="the node's agent: demo | openai:URL[#model] (key in "
                        "HD_OPENAI_API_KEY) | command:CMD (JSON lines on stdin/stdout)")
    r.add_argument("--allow-remote-agent", dest="allow_remote_agent", action="store_true",
                   default=None, help="let trusted peers ask this node's agent (off by default)")
    r.add_argument("--remote-agent-mode", dest="remote_agent_mode",
                   choices=["plan", "acceptEdits", "autonomous"],
                   help="tools a peer's request may use: plan (read-only, default), "
                        "acceptEdits, autonomous")
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
    return p


def _settings(args: argparse.Namespace, with_cli: bool = False) -> Settings:
    cli: dict[str, Any] = {}
    config = None
    if with_cli:
        cli = {k: getattr(args, k) for k in ("node_name", "ui_host", "ui_port", "peer_host",
                                              "peer_port", "advertise", "trust_mode", "lobby_url",
                                              "relay_url", "directory_key", "agent_backend",
                                              "allow_remote_agent", "remote_agent_mode")}
        config = args.config
    return load_settings(args.data_dir, config_file=config, cli=cli)


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


def cmd_run(args: argparse.Namespace) -> int:
    import trio

    from .node import Node

    settings = _settings(args, with_cli=True)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    try:
        node = Node(settings, new_identity=args.new_identity)
    except files.DataDirBusy as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:  # files.DataError covers what we can name; this is the rest
        raise files.DataError(f"cannot use the data directory {settings.data_dir}: "
                              f"{exc}") from None
    try:
        trio.run(node.run)
    except KeyboardInterrupt:
        pass
    except (OSError, ExceptionGroup) as exc:
        # trio wraps a bind failure (port taken) in exception groups.
        err = _os_error(exc)
        if err is None:
            raise
        raise CliError(f"cannot start: {err}") from None
    return 0


def _os_error(exc: BaseException) -> OSError | None:
    if isinstance(exc, OSError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for sub in exc.exceptions:
            found = _os_error(sub)
            if found is not None:
                return found
    return None


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
    _print({"node_id": ident.node_id, "public_key": ident.public_key,
            "name": s.node_name or f"node-{ident.node_id[:6]}"})
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


COMMANDS = {"run": cmd_run, "id": cmd_id, "invite": cmd_invite, "pair": cmd_pair,
            "peers": cmd_peers, "ui": cmd_ui}


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
