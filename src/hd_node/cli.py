"""``hd-node``: run a node, and talk to a running one (SPEC 9/10).

Commands: run, id, invite, pair, peers, ui. Errors print one clear line to stderr and
exit non-zero (2 for usage and configuration errors, 1 for everything else).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import httpx

from . import __version__, files
from .config import ConfigError, Settings, load_settings


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
    r.add_argument("--config", help="TOML config file ([network] table)")
    r.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")

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
                                              "peer_port", "advertise", "trust_mode")}
        config = args.config
    return load_settings(args.data_dir, config_file=config, cli=cli)


def _running(data_dir: Path) -> dict[str, Any]:
    info = files.read_node_json(data_dir)
    if info is None:
        raise CliError(f"no running node for {data_dir} (start one with: hd-node run "
                       f"--data-dir {data_dir})")
    return info


def _api(info: dict[str, Any], method: str, path: str, body: dict[str, Any] | None = None,
         timeout: float = 30.0) -> tuple[int, Any]:
    url = info["ui_url"].rstrip("/") + path
    try:
        resp = httpx.request(method, url, json=body,
                             headers={"Authorization": f"Bearer {info['token']}"},
                             timeout=timeout)
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach the node at {info['ui_url']}: {exc}") from None
    try:
        return resp.status_code, resp.json()
    except ValueError:
        raise CliError(f"unexpected answer from the node ({resp.status_code})") from None


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
        node = Node(settings)
    except files.DataDirBusy as exc:
        raise CliError(str(exc)) from None
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
    ident = files.load_or_create_identity(s.data_dir)
    _print({"node_id": ident.node_id, "public_key": ident.public_key,
            "name": s.node_name or f"node-{ident.node_id[:6]}"})
    return 0


def cmd_invite(args: argparse.Namespace) -> int:
    info = _running(_settings(args).data_dir)
    body = {} if args.ttl is None else {"ttl_s": args.ttl}
    status, out = _api(info, "POST", "/api/invites", body)
    if status != 200:
        raise CliError(f"invite failed: {out.get('error')}: {out.get('message')}")
    print(out["invite"])
    return 0


def cmd_pair(args: argparse.Namespace) -> int:
    info = _running(_settings(args).data_dir)
    status, out = _api(info, "POST", "/api/pair", {"invite": args.invite})
    _print(out)
    if status != 200 or not out.get("ok"):
        print(f"hd-node: pairing failed: {out.get('error')}: {out.get('message')}",
              file=sys.stderr)
        return 1
    return 0


def cmd_peers(args: argparse.Namespace) -> int:
    info = _running(_settings(args).data_dir)
    status, out = _api(info, "GET", "/api/peers")
    if status != 200:
        raise CliError(f"peers failed: {out.get('error')}")
    _print(out)
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    info = _running(_settings(args).data_dir)
    print(f"{info['ui_url']}?token={info['token']}")
    return 0


COMMANDS = {"run": cmd_run, "id": cmd_id, "invite": cmd_invite, "pair": cmd_pair,
            "peers": cmd_peers, "ui": cmd_ui}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"hd-node: {exc}", file=sys.stderr)
        return 2
    except CliError as exc:
        print(f"hd-node: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
