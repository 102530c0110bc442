"""Atheris harness: any datagram as a STUN message, decoded with and without a key and
handed to a waiting client. See ``targets.stun``.

Run: `python fuzz/fuzz_stun.py -max_total_time=60` (or `make fuzz`).
"""

import atheris

with atheris.instrument_imports(include=["hd_protocol", "targets"]):
    import targets

import harness

if __name__ == "__main__":
    harness.run("stun", targets.TARGETS["stun"], targets.seeds())
