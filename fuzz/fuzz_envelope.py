"""Atheris harness: ``decode_envelope`` on arbitrary bytes and text (SPEC 3).

Decoding is total: any input is an ``Envelope`` that re-encodes to itself, or a
``ProtocolError``. See ``targets.envelope``.

Run: `python fuzz/fuzz_envelope.py -max_total_time=60` (or `make fuzz`).
"""

import atheris

with atheris.instrument_imports(include=["hd_protocol", "targets"]):
    import targets

import harness

if __name__ == "__main__":
    harness.run("envelope", targets.TARGETS["envelope"], targets.seeds())
