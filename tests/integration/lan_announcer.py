"""A stand-alone mDNS announcer for the LAN tests: registers the services it is given
(forged ones, usually) with zeroconf on 127.0.0.1, prints ``registered``, and stays
until its stdin closes — then unregisters (goodbye) and exits 0.

    python lan_announcer.py '[{"name": "x", "port": 1234, "txt": {"v": "1", ...}}]'

Run as its own process, as a foreign host on the LAN would be: nothing of the node
under test is imported.
"""

from __future__ import annotations

import json
import socket
import sys

from zeroconf import IPVersion, ServiceInfo, Zeroconf

SERVICE_TYPE = "_hd-peer._tcp.local."


def main() -> int:
    specs = json.loads(sys.argv[1])
    zc = Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    try:
        infos = [ServiceInfo(SERVICE_TYPE, f"{s['name']}.{SERVICE_TYPE}", port=s["port"],
                             properties=s["txt"], server=f"{s['name']}.local.",
                             addresses=[socket.inet_aton("127.0.0.1")]) for s in specs]
        for info in infos:
            zc.register_service(info)
        print("registered", flush=True)
        sys.stdin.read()  # until the test closes our stdin
        for info in infos:
            zc.unregister_service(info)
    finally:
        zc.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
