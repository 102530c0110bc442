"""hd_protocol is sans-IO (SPEC 0): no trio, asyncio, socket, threading, subprocess or
sqlite3; no clock reads; no randomness but the injected ``rng``.

Two independent checks, because each alone has a blind spot:

* an AST scan of every source file (sees code paths an import never executes, and
  clock reads, which no import hook can see);
* importing the package and every submodule in a fresh interpreter with the
  forbidden modules blocked (sees imports built in ways a scan might miss, and what
  the package's dependencies drag in).

What we found about dependencies: importing hd_protocol today loads none of trio,
asyncio, socket, threading, subprocess or sqlite3 even indirectly, so those are
blocked for the whole import closure. ``cryptography`` itself imports ``random``
(its RSA module), which is not hd_protocol drawing randomness; so ``random`` and
``secrets`` are refused only when hd_protocol's own modules import them. ``threading``
is refused the same way (direct imports only), because ``logging`` pulls it in and
logging would be a legitimate thing for a protocol core to do.

Each check is shown to fail on a copy of the package with a forbidden import added.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "src" / "hd_protocol"

# Modules whose job is I/O, concurrency, clocks or hidden randomness.
FORBIDDEN_MODULES = {
    "trio", "asyncio", "socket", "_socket", "selectors", "ssl", "threading", "_thread",
    "multiprocessing", "concurrent", "subprocess", "sqlite3", "random", "secrets", "uuid",
    "time",  # time's only jobs are reading clocks and sleeping: both belong to the shell
    "importlib",  # dynamic imports would escape this scan
}
# Clock and entropy reads reachable without a forbidden import.
CLOCK_ATTRS = {"now", "utcnow", "today"}  # on datetime / date
OS_ENTROPY = {"urandom", "getrandom"}
DYNAMIC_CALLS = {"__import__", "exec", "eval"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def scan_source(source: str, filename: str) -> list[str]:
    """Every forbidden import, clock read or entropy read in one module."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in FORBIDDEN_MODULES:
                    found.append(f"{where}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            top = node.module.split(".")[0]
            names = {a.name for a in node.names}
            if top in FORBIDDEN_MODULES:
                found.append(f"{where}: from {node.module} import ...")
            elif top == "os" and names & OS_ENTROPY:
                found.append(f"{where}: from os import {sorted(names & OS_ENTROPY)}")
        elif isinstance(node, ast.Attribute):
            base = _dotted(node.value)
            if node.attr in CLOCK_ATTRS and base.split(".")[-1] in ("datetime", "date"):
                found.append(f"{where}: {base}.{node.attr}")
            elif node.attr in OS_ENTROPY and base == "os":
                found.append(f"{where}: os.{node.attr}")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in DYNAMIC_CALLS
        ):
            found.append(f"{where}: {node.func.id}()")
    return found


def scan_package(root: Path) -> list[str]:
    files = sorted(root.rglob("*.py"))
    assert files, f"no sources under {root}"
    return [v for f in files for v in scan_source(f.read_text("utf-8"), f.name)]


# Run in a fresh interpreter so the blocking cannot leak into other tests.
GUARD = r"""
import builtins, importlib, importlib.abc, json, pkgutil, sys

root = sys.argv[1]
sys.path.insert(0, root)
# Nothing hd_protocol loads, directly or through a dependency, may need these.
CLOSURE = {"trio", "asyncio", "socket", "_socket", "selectors", "subprocess", "sqlite3",
           "_sqlite3", "multiprocessing"}
# Only hd_protocol's own modules are refused these (dependencies may use them).
DIRECT = CLOSURE | {"threading", "random", "secrets", "time", "uuid"}

for name in list(sys.modules):
    if name.split(".")[0] in CLOSURE | {"random", "secrets", "uuid"}:
        del sys.modules[name]

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in CLOSURE:
            raise ImportError(f"blocked import of {fullname}")
        return None

sys.meta_path.insert(0, Block())

# The finder is not asked about modules already in sys.modules (threading, time),
# so hd_protocol's own import statements are also checked at __import__.
real_import = builtins.__import__

def guarded(name, globals=None, locals=None, fromlist=(), level=0):
    importer = (globals or {}).get("__name__") or ""
    if level == 0 and importer.split(".")[0] == "hd_protocol" and name.split(".")[0] in DIRECT:
        raise ImportError(f"{importer} imports {name}")
    return real_import(name, globals, locals, fromlist, level)

builtins.__import__ = guarded

import hd_protocol
assert hd_protocol.__file__.startswith(root), hd_protocol.__file__
loaded = ["hd_protocol"]
for info in pkgutil.walk_packages(hd_protocol.__path__, "hd_protocol."):
    importlib.import_module(info.name)
    loaded.append(info.name)
print(json.dumps({"loaded": loaded,
                  "closure": sorted(m for m in sys.modules if m.split(".")[0] in CLOSURE)}))
"""


def run_guard(src_root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", GUARD, str(src_root)],
        capture_output=True, text=True, timeout=60, check=False,
    )


def package_copy(tmp_path: Path, injected: str) -> Path:
    """A copy of hd_protocol with ``injected`` appended to one module."""
    dest = tmp_path / "src"
    shutil.copytree(PKG, dest / "hd_protocol",
                    ignore=shutil.ignore_patterns("__pycache__"))
    target = dest / "hd_protocol" / "limits.py"
    target.write_text(target.read_text("utf-8") + "\n" + injected + "\n", "utf-8")
    return dest


# --- the real package ------------------------------------------------------------------


def test_sources_have_no_forbidden_import_clock_or_entropy_read() -> None:
    assert scan_package(PKG) == []


def test_package_imports_with_io_and_concurrency_modules_blocked() -> None:
    proc = run_guard(PKG.parent)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    expected = {"hd_protocol." + ".".join(p.relative_to(PKG).with_suffix("").parts)
                for p in PKG.rglob("*.py") if p.stem != "__init__"}
    assert "hd_protocol.brokers.relay" in expected
    assert expected <= set(report["loaded"])
    assert report["closure"] == []


# --- the checks catch what they claim to catch ---------------------------------------------


@pytest.mark.parametrize(
    "snippet",
    [
        "import socket", "import trio", "import asyncio.events", "from threading import Lock",
        "import subprocess", "import sqlite3 as db", "import random",
        "from secrets import token_bytes", "import time", "from time import monotonic",
        "import uuid", "import importlib", "from os import urandom",
        "import os\nx = os.urandom(8)", "from datetime import datetime\nt = datetime.now()",
        "import datetime\nt = datetime.datetime.utcnow()",
        "from datetime import date\nd = date.today()", "m = __import__('socket')",
        "def f():\n    import socket\n    return socket",
    ],
)
def test_scan_flags_each_kind_of_violation(snippet: str) -> None:
    assert scan_source(snippet, "x.py") != []


@pytest.mark.parametrize(
    "snippet",
    [
        "def f(now: int) -> int:\n    return now + 1",
        "class M:\n    def g(self):\n        return self.now",
        "import os.path\nfrom datetime import timedelta",
        "from .session import Session",
        "import hashlib, json, re",
    ],
)
def test_scan_leaves_pure_code_alone(snippet: str) -> None:
    assert scan_source(snippet, "x.py") == []


@pytest.mark.parametrize("injected", ["import socket", "import trio", "import threading",
                                      "import random"])
def test_guard_fails_when_a_module_adds_a_forbidden_import(tmp_path: Path, injected: str) -> None:
    src = package_copy(tmp_path, injected)
    assert scan_package(src / "hd_protocol") != []
    proc = run_guard(src)
    assert proc.returncode != 0
    assert "ImportError" in proc.stderr and injected.split()[-1] in proc.stderr
