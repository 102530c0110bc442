"""Atheris harness: every state of the handshake machines (SPEC 4) fed frames of every
type, signed by the real peer and sealed with the real keys where the step is sealed.

A machine takes only the type its state waits for, answering the right frame; in a
state that waits for none (admission pending, before ``start()``) anything fails it,
and a finished or refused machine ignores everything. See ``targets.handshake_state``.

Run: `python fuzz/fuzz_handshake_state.py -max_total_time=60` (or `make fuzz`).
"""

import atheris

with atheris.instrument_imports(include=["hd_protocol", "targets"]):
    import targets

import harness

if __name__ == "__main__":
    harness.run("handshake_state", targets.TARGETS["handshake_state"], targets.seeds())
