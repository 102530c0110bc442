"""Atheris harness: ``decode_ws_frame`` on arbitrary bytes and text (SPEC 9).

A bad frame from a tab is a ``ProtocolError`` the node answers with ``error``; nothing
else may escape. See ``targets.ws_frame``.

Run: `python fuzz/fuzz_ws.py -max_total_time=60` (or `make fuzz`).
"""

import atheris

with atheris.instrument_imports(include=["hd_protocol", "targets"]):
    import targets

import harness

if __name__ == "__main__":
    harness.run("ws", targets.TARGETS["ws"], targets.seeds())
