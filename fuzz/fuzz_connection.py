"""Atheris harness: an open ``Connection`` (handshake -> session -> keepalive) fed
hostile frames, replays and the passage of time. See ``targets.connection``.

Run: `python fuzz/fuzz_connection.py -max_total_time=60` (or `make fuzz`).
"""

import atheris

with atheris.instrument_imports(include=["hd_protocol", "targets"]):
    import targets

import harness

if __name__ == "__main__":
    harness.run("connection", targets.TARGETS["connection"], targets.seeds())
