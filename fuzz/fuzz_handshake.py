"""Atheris harness: the handshake machines (SPEC 4) fed hostile frames.

Raw frames at each of the four waiting points of ``Acceptor`` and ``Dialer``, and frames
signed and sealed by a peer whose content is fuzzed. Only ``Failed`` may come of it,
never an exception or an admission under a key that did not sign. See
``targets.handshake_any``.

Run: `python fuzz/fuzz_handshake.py -max_total_time=60` (or `make fuzz`).
"""

import atheris

with atheris.instrument_imports(include=["hd_protocol", "targets"]):
    import targets

import harness

if __name__ == "__main__":
    harness.run("handshake", targets.TARGETS["handshake"], targets.seeds())
