"""Per-module mutation scores of ``make mutation``, message-only mutants set apart.

Reads mutmut's results in ``mutants/`` (run it from the repository root, after
``mutmut run``). A mutant counts as *message-only* when all it changes is the human
message of an error or failure (the message argument of ``RemoteProtocolError``,
``HandshakeError(message=...)``, ``Failed``, ``Dropped``... or that argument dropped):
such a mutant cannot change what the protocol does, so it is left out of the score.
Everything else counts; a mutant no test reaches counts as a survivor.

    python tools/mutation_score.py            # one line per module
    python tools/mutation_score.py -v         # and every counted survivor, with its diff
    python tools/mutation_score.py handshake  # only these modules
"""

from __future__ import annotations

import ast
import difflib
import json
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path("mutants/src/hd_protocol")
# callee -> positional arguments that are only a message for people
MESSAGE_ARGS: dict[str, set[int]] = {
    "RemoteProtocolError": {1}, "LocalProtocolError": {1}, "ProtocolError": {1},
    "CanonicalError": {1}, "HandshakeError": {1}, "ValueError": {0}, "TypeError": {0},
    "_bad": {0, 1}, "_int": {1}, "_check_rev": {1}, "b64decode_strict": {2},
    "Failed": {1}, "Dropped": {1}, "HandshakeFailed": {1}, "_fail": {1}, "_failure": {1},
    "_error_reply": {1}, "reply_error": {1}, "PeerErrorReply": {3},
    "StunError": {0}, "_text": {1},
}
# ... of which these may also be left out (the argument has a default), when last
DROPPABLE = {"RemoteProtocolError", "LocalProtocolError", "ProtocolError", "CanonicalError",
             "HandshakeError", "ValueError", "TypeError", "Failed", "Dropped",
             "b64decode_strict"}
KILLED = {1, 3, 37, -9, -11}  # a test failed (or the type checker refused it)
TIMEOUT = {24, -24, 36, 152}
NO_TESTS = {33, 5}


def _name(call: ast.Call) -> str:
    f = call.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""


def _diffs(a: Any, b: Any, path: list[tuple[ast.AST, str]]) -> Iterator[tuple[Any, ...]]:
    """The smallest differing pieces of two trees, each with its path from the root."""
    if type(a) is not type(b):
        yield path, a, b
    elif isinstance(a, list):
        if len(a) != len(b):
            yield path, a, b
        else:
            for x, y in zip(a, b, strict=True):
                yield from _diffs(x, y, path)
    elif isinstance(a, ast.AST):
        for field in a._fields:
            yield from _diffs(getattr(a, field), getattr(b, field), [*path, (a, field)])
    elif a != b:
        yield path, a, b


def _in_message_slot(path: list[tuple[ast.AST, str]], a: Any, b: Any) -> bool:
    for i in range(len(path) - 1, -1, -1):
        node, field = path[i]
        if isinstance(node, ast.Call):
            slots = MESSAGE_ARGS.get(_name(node))
            if slots is None:
                if isinstance(a, list) and i == len(path) - 1:
                    return False  # an argument of this (non-message) call was dropped
                continue  # a call inside an argument: the outer call decides
            if field == "keywords":
                kw = path[i + 1][0] if i + 1 < len(path) else None
                return isinstance(kw, ast.keyword) and kw.arg == "message"
            if field != "args":
                return False
            if isinstance(a, list) and i == len(path) - 1:  # an argument was dropped:
                # was it a trailing message?
                return (_name(node) in DROPPABLE and len(a) == len(b) + 1
                        and len(a) - 1 in slots
                        and [ast.dump(x) for x in a[:-1]] == [ast.dump(y) for y in b])
            child = path[i + 1][0] if i + 1 < len(path) else a
            return next((j for j, x in enumerate(node.args) if x is child), None) in slots
        if isinstance(node, ast.stmt | ast.Compare | ast.BoolOp):
            return False
    return False


def message_only(orig: ast.FunctionDef, mutant: ast.FunctionDef) -> bool:
    found = list(_diffs(orig.body, mutant.body, []))
    return bool(found) and all(_in_message_slot(*d) for d in found)


def _functions(tree: ast.Module) -> dict[str, ast.FunctionDef]:
    return {n.name: n for n in ast.walk(tree)
            if isinstance(n, ast.FunctionDef) and "__mutmut_" in n.name}


def score(module: str, verbose: bool) -> tuple[int, int, Counter[str]]:
    source = (ROOT / f"{module}.py").read_text("utf-8")
    funcs = _functions(ast.parse(source))
    codes = json.loads((ROOT / f"{module}.py.meta").read_text("utf-8"))["exit_code_by_key"]
    counts: Counter[str] = Counter()
    for key, code in sorted(codes.items()):
        short = key.rsplit(".", 1)[-1]
        orig = funcs.get(short.rsplit("__mutmut_", 1)[0] + "__mutmut_orig")
        mutant = funcs.get(short)
        if orig is not None and mutant is not None and message_only(orig, mutant):
            counts["message-only"] += 1
            continue
        kind = ("killed" if code in KILLED else "timeout" if code in TIMEOUT
                else "not run" if code is None else "no tests" if code in NO_TESTS
                else "survived")
        counts[kind] += 1
        if verbose and kind not in ("killed", "timeout"):
            print(f"  {kind}: {key}")
            if orig is not None and mutant is not None:
                a = (ast.get_source_segment(source, orig) or "").splitlines()[1:]
                b = (ast.get_source_segment(source, mutant) or "").splitlines()[1:]
                for line in difflib.unified_diff(a, b, lineterm="", n=0):
                    if not line.startswith(("---", "+++", "@@")):
                        print("     " + line.strip())
    counted = sum(v for k, v in counts.items() if k != "message-only")
    return counts["killed"] + counts["timeout"], counted, counts


def main(argv: list[str]) -> int:
    verbose = "-v" in argv
    wanted = {a for a in argv if not a.startswith("-")}
    if not ROOT.is_dir():
        print("no mutants/ here: run `make mutation` first", file=sys.stderr)
        return 2
    for meta in sorted(ROOT.glob("*.py.meta")):
        module = meta.name.removesuffix(".py.meta")
        if wanted and module not in wanted:
            continue
        killed, counted, counts = score(module, verbose)
        if not counted and not counts:
            continue
        pct = 100.0 * killed / counted if counted else 100.0
        rest = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if k != "killed")
        print(f"{module:14s} {killed:5d}/{counted:<5d} {pct:6.2f} %  ({rest})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
