"""A stand-alone mDNS flooder for the LAN attack tests: a foreign host on the LAN that
announces as many ``_hd-peer._tcp.local.`` services as it is told to, as fast as
zeroconf sends them, and withdraws them (goodbyes) on command.

It reads one JSON command per line on stdin and answers each with one line on stdout:

    {"op": "add", "services": [SPEC, ...]}     -> "added N"     (all announced)
    {"op": "remove", "names": [NAME, ...]}     -> "removed N"   (goodbyes sent)
    {"op": "remove", "names": "all"}           -> "removed N"

    SPEC: {"name": "x", "port": 1234, "txt": {"v": "1", ...},
           "addresses": ["127.0.0.1"]}         # [] : an SRV/TXT with no address record

A TXT value may be ``null`` (a key without a value) or ``{"hex": "..."}`` (raw bytes,
e.g. not UTF-8). At EOF it withdraws everything still announced and exits 0.

Registration skips probing (``cooperating_responders``): an attacker does not wait for
the network's permission, and 400 services probed one by one would take minutes. Run as
its own process, as a foreign host would be: nothing of the node under test is imported.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from typing import Any

from zeroconf import IPVersion, ServiceInfo, Zeroconf

SERVICE_TYPE = "_hd-peer._tcp.local."


def _value(v: Any) -> bytes | str | None:
    if isinstance(v, dict):
        return bytes.fromhex(v["hex"])
    return v  # type: ignore[no-any-return]


def _info(spec: dict[str, Any]) -> ServiceInfo:
    name = spec["name"]
    return ServiceInfo(
        SERVICE_TYPE, f"{name}.{SERVICE_TYPE}", port=spec["port"],
        properties={k: _value(v) for k, v in spec["txt"].items()},
        server=f"{name}.local.",
        addresses=[socket.inet_aton(a) for a in spec.get("addresses", ["127.0.0.1"])])


class Flooder:
    def __init__(self) -> None:
        self.zc = Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
        self.infos: dict[str, ServiceInfo] = {}

    def _run(self, coro: Any, timeout: float = 60.0) -> Any:
        assert self.zc.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.zc.loop).result(timeout)

    async def _add(self, infos: list[ServiceInfo]) -> None:
        sent = [await self.zc.async_register_service(i, cooperating_responders=True,
                                                     strict=False) for i in infos]
        await asyncio.gather(*sent)  # every announcement broadcast

    async def _remove(self, infos: list[ServiceInfo]) -> None:
        sent = [await self.zc.async_unregister_service(i) for i in infos]
        await asyncio.gather(*sent)

    def add(self, specs: list[dict[str, Any]]) -> int:
        infos = [_info(s) for s in specs]
        self._run(self._add(infos))
        for info in infos:
            self.infos[info.name] = info
        return len(infos)

    def remove(self, names: list[str] | str) -> int:
        if names == "all":
            infos = list(self.infos.values())
        else:
            infos = [self.infos[f"{n}.{SERVICE_TYPE}"] for n in names]
        self._run(self._remove(infos))
        for info in infos:
            del self.infos[info.name]
        return len(infos)

    def close(self) -> None:
        try:
            if self.infos:
                self.remove("all")
        finally:
            self.zc.close()


def main() -> int:
    flooder = Flooder()
    try:
        print("ready", flush=True)
        for line in sys.stdin:
            cmd = json.loads(line)
            if cmd["op"] == "add":
                print(f"added {flooder.add(cmd['services'])}", flush=True)
            elif cmd["op"] == "remove":
                print(f"removed {flooder.remove(cmd['names'])}", flush=True)
            else:
                print(f"unknown op {cmd['op']!r}", flush=True)
    finally:
        flooder.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
