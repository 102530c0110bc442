"""Atheris harness: an established ``Session`` (SPEC 5) fed hostile frames.

Raw frames, and messages sealed and signed by the real peer with fuzzed types and
payloads; replays are never delivered twice. See ``targets.session``.

Run: `python fuzz/fuzz_session.py -max_total_time=60` (or `make fuzz`).
"""

import atheris

with atheris.instrument_imports(include=["hd_protocol", "targets"]):
    import targets

import harness

if __name__ == "__main__":
    harness.run("session", targets.TARGETS["session"], targets.seeds())
