"""The atheris/libFuzzer driver every ``fuzz_*.py`` harness shares.

A harness imports its target inside ``atheris.instrument_imports`` (so hd_protocol gets
coverage feedback), then calls ``run``. ``run`` writes the target's generated seeds into
``fuzz/corpus/<name>/`` (gitignored; libFuzzer adds what it finds there too), sends crash
artifacts to ``fuzz/corpus/<name>-crash-*`` and hands every other argument to libFuzzer,
e.g. ``-max_total_time=60`` or ``-runs=1000``. Passing a file or directory runs (or
fuzzes from) that instead of the default corpus, which is how a crash is replayed:
``python fuzz/fuzz_envelope.py fuzz/corpus/envelope-crash-<hash>``. A finding exits
non-zero (libFuzzer's 77), which is what makes ``make fuzz`` fail.

A harness may pass ``mutator(data, seed, byte_mutate) -> bytes``: libFuzzer then builds
new inputs with it instead of its byte-level mutations (which ``byte_mutate`` still
offers), e.g. to change a decoded structure and encode it again.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import atheris

CORPUS_ROOT = Path(__file__).resolve().parent / "corpus"


def run(
    name: str,
    target: Callable[[bytes], object],
    seeds: dict[str, list[bytes]],
    argv: Sequence[str] | None = None,
    mutator: Callable[[bytes, int, Callable[[bytes], bytes]], bytes] | None = None,
) -> None:
    argv = list(sys.argv if argv is None else argv)
    corpus = CORPUS_ROOT / name
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(seeds.get(name, [])):
        (corpus / f"seed-{i:03d}").write_bytes(seed)
    flags = [a for a in argv[1:] if a.startswith("-")]
    paths = [a for a in argv[1:] if not a.startswith("-")]
    if not any(f.startswith("-artifact_prefix=") for f in flags):
        flags.append(f"-artifact_prefix={CORPUS_ROOT}/{name}-")
    args = [argv[0], *flags, *(paths or [str(corpus)])]

    def test_one_input(data: bytes) -> None:
        target(data)  # any exception is a finding; targets absorb ProtocolError

    print(f"fuzz {name}: {len(seeds.get(name, []))} seeds, corpus {args[-1]}", flush=True)
    if mutator is None:
        atheris.Setup(args, test_one_input)
    else:
        def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
            out = mutator(data, seed, lambda d: atheris.Mutate(d, max_size))
            return out[:max_size]

        atheris.Setup(args, test_one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()
