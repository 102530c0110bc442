"""The shape of the code, checked: no import cycles in the node, small modules, and a
hub that never names a transport (new transports plug into the seam, not the hub)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGES = ("hd_node", "hd_protocol", "hd_shell", "hd_relay", "hd_lobby")
MAX_LINES = 450  # a file much longer is usually two concerns

MAX_FOLDER = 15  # modules in one folder at most: past that, it holds two concerns

# The wings of hd_node, top to bottom: a module may import its own wing and the wings
# below it, never one above it or beside it (features and discovery know nothing of each
# other). The bottom wing is the package's top-level modules other than cli and node.
WINGS = ("cli", "node", "web", "features|discovery", "hub", "transports", "base")
# The same for the core: its face (``__init__``) over what runs on a session, the other
# carriers and the two brokers (which know nothing of each other), over two nodes and one
# link (``peer``), over the codecs and records everything shares (the top-level modules).
PROTOCOL_WINGS = ("__init__", "apps|reach|brokers", "peer", "base")

# The hub knows links, candidates and transports only through the seam
# (hd_node.transports.seam), never one by name.
TRANSPORT_MODULES = {"transports.direct", "transports.relay", "transports.webrtc",
                     "transports.webrtc_link", "transports.webrtc_peer"}
# The carriers the shell kit provides: the hub never imports them either.
SHELL_CARRIERS = ("hd_shell.ws", "hd_shell.http")
TRANSPORT_KINDS = {"direct", "lan", "relay", "webrtc"}


def _modules(package: str) -> dict[str, Path]:
    """Every module of ``package`` by its dotted name inside it (``ws.link``); a
    subpackage's ``__init__`` is the subpackage's own name."""
    out: dict[str, Path] = {}
    root = SRC / package
    for p in sorted(root.rglob("*.py")):
        parts = list(p.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__main__":
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1] or ["__init__"]
        out[".".join(parts)] = p
    return out


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
    """Every module of ``package`` that ``path`` imports, by dotted name inside the
    package (relative and absolute imports, TYPE_CHECKING ones too). ``from .x import
    y`` names ``x.y`` when that is a module, else ``x``."""
    root = SRC / package
    mods = _modules(package)
    here = list(path.relative_to(root).with_suffix("").parts)
    base = here[:-1]  # the package the module is in (its own, for an __init__)
    out: set[str] = set()

    def add(parts: list[str], names: list[str]) -> None:
        for n in names:
            if ".".join([*parts, n]) in mods:
                out.add(".".join([*parts, n]))
            elif parts:
                out.add(".".join(parts))

    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = base[:len(base) - (node.level - 1)] if node.level > 1 else list(base)
                parts += node.module.split(".") if node.module else []
            elif node.module and node.module.split(".")[0] == package:
                parts = node.module.split(".")[1:]
            else:
                continue
            add(parts, [a.name for a in node.names])
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == package and len(parts) > 1:
                    out.add(".".join(parts[1:]))
    return {m for m in out if m in mods}


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
def test_no_module_is_over_450_lines(package: str) -> None:
    long = {name: n for name, path in _modules(package).items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def _wing(module: str, wings: tuple[str, ...] = WINGS) -> str:
    """A module's wing: its subpackage, a top-level module a wing names (``cli``,
    ``node``, ``__init__``), else the package's base."""
    top = module.split(".")[0]
    if "." in module or top in {w for ws in wings for w in ws.split("|")}:
        return top
    return "base"


def _rank(wing: str, wings: tuple[str, ...] = WINGS) -> int:
    return next(i for i, w in enumerate(wings) if wing in w.split("|"))


def _against_the_wings(package: str = "hd_node", wings: tuple[str, ...] = WINGS) -> list[str]:
    bad = []
    for name, path in _modules(package).items():
        me = _wing(name, wings)
        for dep in sorted(_imports(package, path)):
            other = _wing(dep, wings)
            if other != me and _rank(other, wings) <= _rank(me, wings):
                bad.append(f"{name} ({me}) imports {dep} ({other})")
    return bad


def test_each_wing_of_the_node_imports_only_the_wings_below_it() -> None:
    assert not _against_the_wings(), "\n".join(_against_the_wings())


def test_each_part_of_the_core_imports_only_the_parts_below_it() -> None:
    bad = _against_the_wings("hd_protocol", PROTOCOL_WINGS)
    assert not bad, "\n".join(bad)
    assert {_wing(m, PROTOCOL_WINGS) for m in _modules("hd_protocol")} == {
        w for ws in PROTOCOL_WINGS for w in ws.split("|")}


def test_the_wing_check_sees_each_kind_of_wrong_arrow() -> None:
    assert _rank(_wing("hub.sessions")) > _rank(_wing("web.app")) > _rank(_wing("node"))
    assert _rank(_wing("features.collab")) == _rank(_wing("discovery.lan"))
    assert _wing("store") == "base" and _rank("base") > _rank("transports")
    assert {_wing(m) for m in _modules("hd_node")} <= {w for ws in WINGS for w in ws.split("|")}


@pytest.mark.parametrize("package", PACKAGES)
def test_no_folder_holds_more_than_15_modules(package: str) -> None:
    folders: dict[Path, int] = {}
    for path in _modules(package).values():
        if path.name != "__init__.py":
            folders[path.parent] = folders.get(path.parent, 0) + 1
    big = {str(f.relative_to(SRC)): n for f, n in folders.items() if n > MAX_FOLDER}
    assert not big, f"folders over {MAX_FOLDER} modules: {big}"


HUB_MODULES = sorted(m for m in _modules("hd_node") if _wing(m) == "hub")


@pytest.mark.parametrize("module", HUB_MODULES)
def test_the_hub_never_names_a_transport(module: str) -> None:
    path = _modules("hd_node")[module]
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
# package may import only the packages listed for it; hd_lobby uses the relay it
# bundles only through hd_relay's package face (``hd_relay.__all__``).
ALLOWED = {
    "hd_protocol": set(),
    "hd_shell": {"hd_protocol"},
    "hd_node": {"hd_protocol", "hd_shell"},
    "hd_relay": {"hd_protocol", "hd_shell"},
    "hd_lobby": {"hd_protocol", "hd_shell", "hd_relay"},
}
FACES = {"hd_relay"}
OURS = tuple(ALLOWED)


def _face(package: str) -> set[str]:
    tree = ast.parse((SRC / package / "__init__.py").read_text())
    for node in tree.body:
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.List)
                and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)):
            return {package, *(f"{package}.{e.value}" for e in node.value.elts
                               if isinstance(e, ast.Constant))}
    return {package}


def _package_imports(package: str) -> set[tuple[str, str]]:
    """(package, imported module) for every import of one of our packages but its own."""
    out: set[tuple[str, str]] = set()
    for path in sorted((SRC / package).rglob("*.py")):
        for name in _absolute_imports(path):
            top = name.split(".")[0]
            if top in OURS and top != package:
                out.add((package, name))
    return out


def _upward(package: str) -> set[tuple[str, str]]:
    """Imports of another package that ``package`` may not make: a package it may not
    import at all, or a module behind the face of one it may use only by its face."""
    return {(pkg, name) for pkg, name in _package_imports(package)
            if name.split(".")[0] not in ALLOWED[package]
            or (name.split(".")[0] in FACES and name not in _face(name.split(".")[0]))}


@pytest.mark.parametrize("package", OURS)
def test_the_package_graph_has_only_the_allowed_arrows(package: str) -> None:
    assert not _upward(package), f"{package} imports upward: {sorted(_upward(package))}"


def test_the_layer_check_sees_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "m.py"
    bad.write_text("from hd_node.hub.peerhub import Hub\nimport hd_lobby.cli\n")
    names = _absolute_imports(bad)
    assert {"hd_node.hub.peerhub", "hd_node.hub.peerhub.Hub", "hd_lobby.cli"} <= names
    assert _face("hd_relay") >= {"hd_relay", "hd_relay.RelayService", "hd_relay.PATH"}
    assert "hd_relay.queue" not in _face("hd_relay")


def test_module_names_resolve_inside_subpackages() -> None:
    mods = _modules("hd_shell")
    assert {"ws.link", "http.server", "server.frames", "datadir"} <= set(mods)
    assert {"link", "clock", "ws.link"} <= _imports("hd_shell", mods["server.frames"])
    assert "datadir" in _imports("hd_shell", mods["sqlitefile"])


# --- one composition root: no wiring by assigning another object's attributes ---------

# A library patched where it offers no setting (aioice gathers no loopback address).
PATCHES = {"aioice.ice.get_host_addresses"}


def _methods(package: str) -> set[str]:
    """The names of the functions and methods defined in ``package`` (no properties)."""
    names: set[str] = set()
    for path in _modules(package).values():
        for fn in ast.walk(ast.parse(path.read_text())):
            if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef) and not any(
                    isinstance(d, ast.Name) and d.id == "property" for d in fn.decorator_list):
                names.add(fn.name)
    return names


def _wiring(path: Path, methods: set[str]) -> list[str]:
    """Assignments that wire parts together behind their constructors' backs: to an
    attribute of an attribute (``self.peers.chat = ...``, ``hub.lobby.on_signal = ...``),
    of a constructor's parameter (``trust.directory_listed = ...`` in ``__init__``), or
    of a callable to another object's attribute (``transport.send_signal = f``)."""
    bad: list[str] = []
    tree = ast.parse(path.read_text())

    def targets(node: ast.AST) -> list[ast.expr]:
        if isinstance(node, ast.Assign):
            found = []
            for t in node.targets:
                found += t.elts if isinstance(t, ast.Tuple) else [t]
            return found
        if isinstance(node, ast.AugAssign | ast.AnnAssign):
            return [node.target]
        return []

    def check(node: ast.AST, params: set[str]) -> None:
        for t in targets(node):
            if not isinstance(t, ast.Attribute):
                continue
            name = ast.unparse(t)
            if name in PATCHES:
                continue
            root = t.value
            own = isinstance(root, ast.Name) and root.id == "self"
            nested = isinstance(root, ast.Attribute)
            private = nested and isinstance(root, ast.Attribute) and root.attr.startswith("_") \
                and isinstance(root.value, ast.Name) and root.value.id == "self"
            value = getattr(node, "value", None)
            callable_value = isinstance(value, ast.Lambda) or (
                isinstance(value, ast.Attribute) and value.attr in methods)
            if nested and not private:
                bad.append(f"{path.name}:{node.lineno} {name}")
            elif isinstance(root, ast.Name) and root.id in params:
                bad.append(f"{path.name}:{node.lineno} {name} (a parameter, in __init__)")
            elif not own and not private and callable_value:
                bad.append(f"{path.name}:{node.lineno} {name} = {ast.unparse(value)}")

    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            params = ({a.arg for a in fn.args.args + fn.args.kwonlyargs} - {"self"}
                      if fn.name == "__init__" else set())
            for node in ast.walk(fn):
                check(node, params)
    return bad


@pytest.mark.parametrize("package", ("hd_node", "hd_shell", "hd_relay", "hd_lobby"))
def test_no_part_is_wired_by_assigning_another_objects_attributes(package: str) -> None:
    methods = _methods(package)
    bad = [b for path in _modules(package).values() for b in _wiring(path, methods)]
    assert not bad, "wired by assignment:\n" + "\n".join(bad)


def test_the_wiring_check_sees_each_kind(tmp_path: Path) -> None:
    src = tmp_path / "m.py"
    src.write_text(
        "class A:\n"
        "    def __init__(self, hub, trust):\n"
        "        self.peers = hub.peers\n"  # fine: a reference kept
        "        trust.directory_listed = self.listed\n"
        "    def run(self, hub, t):\n"
        "        self.peers.chat = 1\n"
        "        hub.lobby.on_signal = t.on_signal\n"
        "        t.send_signal = hub.send\n"
        "        t.count = 3\n"  # state, not wiring
        "        t.name = hub.name\n"
        "        self._box.n = 1\n"  # its own record
    )
    found = _wiring(src, {"listed", "send", "on_signal"})
    assert [b.split()[1] for b in found] == [
        "trust.directory_listed", "self.peers.chat", "hub.lobby.on_signal", "t.send_signal"]
