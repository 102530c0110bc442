"""Atheris harness: the bytes a client sends on /peer-ws before its handshake, read under
the peer listener's pre-authentication budget. See ``targets.preauth_ws``.

Run: `python fuzz/fuzz_preauth.py -max_total_time=60` (or `make fuzz`).
"""

import atheris

with atheris.instrument_imports(include=["hd_node", "wsproto", "targets"]):
    import targets

import harness

if __name__ == "__main__":
    harness.run("preauth_ws", targets.TARGETS["preauth_ws"], targets.seeds())
