"""Atheris harness: ``decode_invite`` on arbitrary text (SPEC 4.2).

A pasted invite is either a checked invite that re-encodes to itself — exactly the
invites an independent reading of SPEC 4.2 accepts — or a ``ProtocolError('bad_invite')``.
See ``targets.invite``. New inputs come from ``targets.mutate_invite``: it changes the
*decoded* invite (a field at an edge value, an address, the shape) and encodes it
again, so nearly every input reaches the field checks; now and then it changes the
text, or lets libFuzzer mutate the raw bytes.

Run: `python fuzz/fuzz_invite.py -max_total_time=60` (or `make fuzz`).
"""

import atheris

with atheris.instrument_imports(include=["hd_protocol", "targets"]):
    import targets

import harness

if __name__ == "__main__":
    harness.run("invite", targets.TARGETS["invite"], targets.seeds(),
                mutator=targets.mutate_invite)
