"""The shape of the code, checked: no import cycles in the node, small modules, and a
hub that never names a transport (new transports plug into the seam, not the hub)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGES = ("hd_node", "hd_protocol", "hd_shell")
MAX_LINES = 420  # "about 400": a file much longer is usually two concerns

# The modules that make up the hub: they may know links, candidates and transports
# only through the seam (hd_node.transport), never one by name.
HUB_MODULES = ("hub", "sessions", "connector", "linkdriver", "features", "peers", "pairing",
               "reconnect", "commands", "tabs", "tabbus", "trust", "bench")
TRANSPORT_MODULES = {"direct"}
# The carriers the shell kit provides: the hub never imports them either.
SHELL_CARRIERS = ("hd_shell.ws", "hd_shell.http")
TRANSPORT_KINDS = {"direct", "lan", "relay", "webrtc"}


def _modules(package: str) -> dict[str, Path]:
    return {p.stem: p for p in sorted((SRC / package).glob("*.py")) if p.stem != "__main__"}


def _absolute_imports(path: Path) -> set[str]:
    """The dotted names of every absolute import in ``path`` (TYPE_CHECKING ones too)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def _imports(package: str, path: Path) -> set[str]:
    """Every module of ``package`` that ``path`` imports, TYPE_CHECKING imports included."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                if node.module:
                    out.add(node.module.split(".")[0])
                else:
                    out.update(a.name for a in node.names)
            elif node.module and node.module.split(".")[0] == package:
                parts = node.module.split(".")
                if len(parts) > 1:
                    out.add(parts[1])
                else:
                    out.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == package and len(parts) > 1:
                    out.add(parts[1])
    return out


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if state.get(m) is None:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if state.get(n) is None:
            found = visit(n)
            if found:
                return found
    return None


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_cycle_among_the_modules_of(package: str) -> None:
    mods = _modules(package)
    graph = {name: {m for m in _imports(package, path) if m in mods and m != "__init__"}
             for name, path in mods.items() if name != "__init__"}
    assert _find_cycle(graph) is None, f"import cycle: {' -> '.join(_find_cycle(graph) or [])}"


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_is_much_over_400_lines(package: str) -> None:
    long = {name: n for name, path in _modules(package).items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


@pytest.mark.parametrize("module", HUB_MODULES)
def test_the_hub_never_names_a_transport(module: str) -> None:
    path = SRC / "hd_node" / f"{module}.py"
    tree = ast.parse(path.read_text())
    imported = _imports("hd_node", path)
    assert not imported & TRANSPORT_MODULES, f"{module} imports {imported & TRANSPORT_MODULES}"
    carriers = {m for m in _absolute_imports(path) if m.startswith(SHELL_CARRIERS)}
    assert not carriers, f"{module} imports the shell's carriers {carriers}"
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef
                                | ast.AsyncFunctionDef)
                  and n.body and isinstance(n.body[0], ast.Expr)
                  and isinstance(n.body[0].value, ast.Constant)}
    named = {n.value for n in ast.walk(tree)
             if isinstance(n, ast.Constant) and isinstance(n.value, str)
             and id(n) not in docstrings and n.value in TRANSPORT_KINDS}
    assert not named, f"{module} names transport kinds {named}"


# The package graph: hd_protocol < hd_shell < {hd_node, hd_lobby, hd_relay}. Each
# package may import only the packages listed for it. KNOWN_DEBT lists the upward
# imports that remain from before hd_shell existed (issue 18): the list may only shrink.
ALLOWED = {
    "hd_protocol": set(),
    "hd_shell": {"hd_protocol"},
    "hd_node": {"hd_protocol", "hd_shell"},
    "hd_relay": {"hd_protocol", "hd_shell"},
    "hd_lobby": {"hd_protocol", "hd_shell", "hd_relay"},
}
KNOWN_DEBT = {
    ("hd_relay", "hd_node.dbfile"), ("hd_relay", "hd_node.files"),
}
OURS = tuple(ALLOWED)


def _package_imports(package: str) -> set[tuple[str, str]]:
    """(package, imported module) for every import of one of our packages but its own."""
    out: set[tuple[str, str]] = set()
    for path in sorted((SRC / package).rglob("*.py")):
        for name in _absolute_imports(path):
            top = name.split(".")[0]
            if top in OURS and top != package:
                out.add((package, name))
    return out


def _covered(package: str, name: str) -> bool:
    """``name`` is a known-debt module, a name inside one, or the package that
    ``from hd_node import files`` records next to ``hd_node.files``."""
    return any(pkg == package and (name == mod or name.startswith(mod + ".")
                                   or mod.startswith(name + "."))
               for pkg, mod in KNOWN_DEBT)


def _upward(package: str) -> set[tuple[str, str]]:
    return {(pkg, name) for pkg, name in _package_imports(package)
            if name.split(".")[0] not in ALLOWED[package] and not _covered(pkg, name)}


@pytest.mark.parametrize("package", OURS)
def test_the_package_graph_has_only_the_allowed_arrows(package: str) -> None:
    assert not _upward(package), f"{package} imports upward: {sorted(_upward(package))}"


def test_the_known_debt_is_still_debt() -> None:
    """An entry that no longer holds must leave KNOWN_DEBT (the list only shrinks)."""
    present = set().union(*(_package_imports(p) for p in OURS))
    assert present >= KNOWN_DEBT, f"no longer imported: {sorted(KNOWN_DEBT - present)}"


def test_the_layer_check_sees_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "m.py"
    bad.write_text("from hd_node.hub import Hub\nimport hd_lobby.cli\n")
    names = _absolute_imports(bad)
    assert {"hd_node.hub", "hd_node.hub.Hub", "hd_lobby.cli"} <= names
