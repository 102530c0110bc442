"""Run a real node that already holds one pending guest admission (test helper).

SPEC 7.4: a room host records a guest admission for a joiner's node id **and key**
when the lobby announces ``peer_joining``. The lobby and rooms are not built yet, so
nothing in the node can produce a guest today; this launcher is the node binary
(``hd_node.node.Node``, the same code ``hd-node run`` runs) with that one record put
where the lobby client will put it (``PeerHub.guest_admissions``). Everything after
that — handshake, admission, session, the collab rules, the ``error`` reply — is the
real node.

    python guest_host.py --data-dir D --ui-port 0 --peer-port 0 --name N \
        --guest NODE_ID:PUBLIC_KEY
"""

from __future__ import annotations

import argparse
import logging
import sys

import trio

from hd_node.config import load_settings
from hd_node.node import Node


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", required=True)
    p.add_argument("--ui-port", type=int, default=0)
    p.add_argument("--peer-port", type=int, default=0)
    p.add_argument("--peer-host", default="127.0.0.1")
    p.add_argument("--name", default="host")
    p.add_argument("--guest", action="append", default=[], help="NODE_ID:PUBLIC_KEY")
    args = p.parse_args(argv)
    settings = load_settings(args.data_dir, cli={
        "node_name": args.name, "ui_port": args.ui_port, "peer_port": args.peer_port,
        "peer_host": args.peer_host, "ui_host": "127.0.0.1",
    })
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    node = Node(settings)
    for item in args.guest:
        node_id, public_key = item.split(":", 1)  # base64 has no ':'
        node.hub.guest_admissions.add((node_id, public_key))
    try:
        trio.run(node.run)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
