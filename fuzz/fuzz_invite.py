"""Atheris harness: ``decode_invite`` on arbitrary text (SPEC 4.2).

A pasted invite is either a checked invite that re-encodes to itself or a
``ProtocolError('bad_invite')``. See ``targets.invite``.

Run: `python fuzz/fuzz_invite.py -max_total_time=60` (or `make fuzz`).
"""

import atheris

with atheris.instrument_imports(include=["hd_protocol", "targets"]):
    import targets

import harness

if __name__ == "__main__":
    harness.run("invite", targets.TARGETS["invite"], targets.seeds())
