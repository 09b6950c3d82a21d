"""The import rules, checked on the source with ``ast``: no cycles, no cross-module privates, layers kept.

- Cycles: no import cycle among the modules of ``chatcore/`` and ``storage/`` (imports inside functions
  count too: they run at call time, and a cycle through them is still a tangle).
- Privates: a name starting with ``_`` stays in its module: no ``from x import _y``, no ``x._y`` on an
  imported project module or name, no ``setattr(x, "_y", …)`` on one, anywhere in the repository's code.
- Layers: core <- engine <- services <- (web, api, cli); storage stands apart and imports no chatcore;
  only ``chatcore.web.server`` joins the page and the API; ``chatcore.testing`` is for tests, benches and
  scripts; torch stays in the engine (and the test helpers).

The checker runs on small synthetic trees first, so that each rule is shown to fail, then on the real one.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("chatcore", "storage", "bench", "tests", "scripts", "app.py")  # where privates are checked
LAYERED = ("chatcore", "storage")  # where cycles and layers are checked
PROJECT = ("chatcore", "storage", "bench", "tests", "scripts", "app")  # top-level names that are ours
# What each layer may import from chatcore and storage (its own layer always). "chatcore" is the package's
# own __init__ (the version), open to all. cli composes everything it serves, so it may start web and api.
MAY_IMPORT = {
    "storage": set(),
    "core": set(),
    "engine": {"core"},
    "services": {"core", "engine", "storage"},
    "web": {"core", "engine", "services", "storage"},
    "api": {"core", "engine", "services", "storage"},
    "cli": {"core", "engine", "services", "storage", "web", "api"},
    "testing": {"core", "engine", "services", "storage", "web", "api", "cli"},
}
COMPOSERS = {"chatcore.web.server": {"api"}}  # the one module that joins the page and the API
TORCH_LAYERS = {"engine", "testing"}  # the only layers of chatcore (and storage: none) that import torch
TESTING_USERS = ("tests", "bench", "scripts")  # who may import chatcore.testing, besides itself



@dataclass(frozen=True, order=True)
class Violation:
    """One broken rule: ``key`` names it stably, ``where`` says file and line."""

    key: str
    where: str = field(default="", compare=False)


@dataclass
class Module:
    """One source file: its dotted name, whether it is a package's __init__, and its parsed tree."""

    name: str
    path: Path  # relative to the tree's root
    is_package: bool
    tree: ast.Module


def modules(root: Path) -> dict[str, Module]:
    """Every Python file under SCANNED in ``root``, by dotted module name."""
    found: dict[str, Module] = {}
    for top in SCANNED:
        paths = [root / top] if top.endswith(".py") else sorted((root / top).rglob("*.py"))
        for path in paths:
            if not path.is_file() or ".venv" in path.parts:
                continue
            relative = path.relative_to(root)
            parts = list(relative.with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            name = ".".join(parts[:-1] if is_package else parts)
            found[name] = Module(name, relative, is_package, ast.parse(path.read_text(), str(relative)))
    return found


@dataclass(frozen=True)
class Import:
    """One imported thing: the module it lands in (``None``: not ours), what was named, and where."""

    module: str | None  # the project module the import loads, or None for a third-party one
    target: str  # the full dotted name imported (a module, or module.attribute)
    line: int


def _absolute(module: Module, node: ast.ImportFrom) -> str:
    """The dotted module an ``ImportFrom`` names, relative imports resolved against ``module``."""
    if not node.level:
        return node.module or ""
    base = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _known(name: str, known: set[str]) -> str | None:
    """The longest known module that ``name`` is or lies inside, if any."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in known:
            return ".".join(parts[:end])
    return None


def imports(module: Module, known: set[str]) -> Iterator[Import]:
    """Everything ``module`` imports, at module level or inside functions."""
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(_known(alias.name, known), alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, node)
            for alias in node.names:
                target = f"{source}.{alias.name}"
                yield Import(_known(target, known), target, node.lineno)


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _ours(dotted: str) -> bool:
    return dotted.split(".")[0] in PROJECT


# -- cycles ------------------------------------------------------------------------------------


def graph(found: dict[str, Module]) -> dict[str, set[str]]:
    """module -> the chatcore and storage modules it imports (itself left out)."""
    layered = {name for name in found if name.split(".")[0] in LAYERED}
    return {name: {i.module for i in imports(found[name], layered) if i.module and i.module != name}
            for name in layered}


def cycles(edges: dict[str, set[str]]) -> list[Violation]:
    """One violation per strongly connected group of two or more modules (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(edges.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            groups.append(group)

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return [Violation(f"cycle: {', '.join(sorted(group))}", "import cycle") for group in groups if len(group) > 1]


# -- privates ----------------------------------------------------------------------------------


def _bindings(module: Module, known: set[str]) -> dict[str, str]:
    """Local name -> the project module or attribute an import binds it to."""
    bound: dict[str, str] = {}
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                name = alias.asname or alias.name.split(".")[0]
                bound[name] = alias.name if alias.asname else alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, node)
            for alias in node.names:
                bound[alias.asname or alias.name] = f"{source}.{alias.name}"
    return {name: target for name, target in bound.items() if _ours(target)}


def _dotted(node: ast.expr) -> list[str] | None:
    """``a.b.c`` as ["a", "b", "c"]; None for anything but names and attributes."""
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return inner + [node.attr] if inner is not None else None
    return None


def _accessed(module: Module) -> Iterator[tuple[ast.expr, str, int]]:
    """(object, private name, line) for each ``obj._name`` and ``setattr/getattr/delattr(obj, "_name")``."""
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            yield node.value, node.attr, node.lineno
        elif (isinstance(node, ast.Call) and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
              and isinstance(node.args[1].value, str) and _is_private(node.args[1].value)
              and (_dotted(node.func) or [""])[-1] in ("setattr", "getattr", "delattr")):
            yield node.args[0], node.args[1].value, node.lineno


def defined_privates(module: Module) -> set[str]:
    """The private names ``module`` defines: functions, classes, assigned names and ``self._x`` attributes."""
    names: set[str] = set()
    for node in ast.walk(module.tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
    return {name for name in names if _is_private(name)}


def _private_uses(module: Module, bound: dict[str, str], owners: dict[str, set[str]]) -> Iterator[tuple[str, int]]:
    """(what, line) for each private reached from ``module``: ``owner._name`` through an imported project
    name, or ``._name`` on any other object (not self or cls) when only other project modules define it.

    The second is a guess without types, so it stays narrow: a name this module defines itself, or no
    project module does (a library's), passes.
    """
    mine = owners.get(module.name, set())
    for target, name, line in _accessed(module):
        chain = _dotted(target)
        if chain and chain[0] in bound:
            owner = ".".join([bound[chain[0]], *chain[1:]])
            if owner != module.name:
                yield f"{owner}.{name}", line
        elif chain and chain[0] in ("self", "cls") and len(chain) == 1:
            continue
        elif name not in mine and any(name in names for other, names in owners.items() if other != module.name):
            yield f".{name}", line


def privates(found: dict[str, Module]) -> list[Violation]:
    """Every use of another module's ``_private`` name: imported by name, or reached as an attribute."""
    known = set(found)
    owners = {name: defined_privates(module) for name, module in found.items()}
    violations = []
    for module in found.values():
        where = str(module.path)
        for item in imports(module, known):
            owner, _, name = item.target.rpartition(".")
            if _ours(item.target) and _is_private(name) and owner != module.name:
                violations.append(Violation(f"private: {module.name} -> {item.target}", f"{where}:{item.line}"))
        for target, line in _private_uses(module, _bindings(module, known), owners):
            violations.append(Violation(f"private: {module.name} -> {target}", f"{where}:{line}"))
    return violations


# -- layers ------------------------------------------------------------------------------------


def layer(name: str) -> str | None:
    """The layer a dotted module name belongs to: storage, a chatcore sub-package, "chatcore", or None."""
    parts = name.split(".")
    if parts[0] == "storage":
        return "storage"
    if parts[0] == "chatcore":
        return parts[1] if len(parts) > 1 else "chatcore"
    return None


def _refused(importer: str, item: Import) -> bool:
    """Whether ``importer`` may not import ``item`` under the layer rules."""
    mine = layer(importer)
    if item.module is not None and layer(item.module) == "testing":
        return mine != "testing" and importer.split(".")[0] not in TESTING_USERS
    if mine is None:  # tests, benches, scripts: anything but the rule above
        return False
    if item.module is None:
        return item.target.split(".")[0] == "torch" and mine not in TORCH_LAYERS
    theirs = layer(item.module)
    if theirs is None:  # chatcore and storage never reach into tests, benches or scripts
        return True
    if theirs in (mine, "chatcore"):
        return False
    return theirs not in MAY_IMPORT.get(mine, set()) | COMPOSERS.get(importer, set())


def layers(found: dict[str, Module]) -> list[Violation]:
    """Every import that crosses the layers the wrong way, or brings torch where it does not belong."""
    known = set(found)
    violations = []
    for module in found.values():
        for item in imports(module, known):
            if _refused(module.name, item):
                shown = item.module or item.target.split(".")[0]
                violations.append(Violation(f"layer: {module.name} -> {shown}", f"{module.path}:{item.line}"))
    return violations


def check(root: Path) -> list[Violation]:
    """Every broken rule in the tree at ``root``, each once, sorted."""
    found = modules(root)
    return sorted(set(cycles(graph(found)) + privates(found) + layers(found)))


# -- the checker on synthetic trees --------------------------------------------------------------

CLEAN = {
    "chatcore/__init__.py": "__version__ = '0'\n",
    "chatcore/core/__init__.py": "",
    "chatcore/core/settings.py": "import os\n_DEFAULT = 1\nVALUE = _DEFAULT\n",
    "chatcore/engine/__init__.py": "",
    "chatcore/engine/loader.py": "import torch\nfrom chatcore.core.settings import VALUE\nfrom chatcore import __version__\n",
    "chatcore/services/__init__.py": "",
    "chatcore/services/chat.py": "from chatcore.engine import loader\nfrom storage.store import Store\n",
    "chatcore/web/__init__.py": "",
    "chatcore/web/app.py": "from chatcore.services import chat\n",
    "chatcore/web/server.py": "from chatcore.web import app\n\ndef start():\n    from chatcore.api import server\n",
    "chatcore/api/__init__.py": "",
    "chatcore/api/server.py": "from . import routes\n",
    "chatcore/api/routes.py": "from chatcore.services.chat import loader\n",
    "chatcore/cli/__init__.py": "",
    "chatcore/cli/serve.py": "def serve():\n    from chatcore.web import server\n",
    "chatcore/testing/__init__.py": "",
    "chatcore/testing/tiny.py": "import torch\nfrom chatcore.engine.loader import VALUE\n",
    "storage/__init__.py": "from storage.store import Store\n",
    "storage/store.py": "class Store:\n    def _rows(self):\n        return self._rows\n",
    "tests/test_x.py": "import chatcore.core.settings as s\nfrom chatcore.testing import tiny\nprint(s.VALUE, s.__doc__)\n",
    "bench/run.py": "from chatcore.testing.tiny import VALUE\n",
}

BROKEN = {  # one file added to (or replacing one in) CLEAN, and the key the checker must report for it
    "cycle at module level": ({"chatcore/core/settings.py": "import chatcore.core.chat\n",
                               "chatcore/core/chat.py": "from chatcore.core.settings import X\n"},
                              "cycle: chatcore.core.chat, chatcore.core.settings"),
    "cycle through a function": ({"storage/store.py": "def f():\n    from storage import notes\n",
                                  "storage/notes.py": "from storage.store import f\n"},
                                 "cycle: storage.notes, storage.store"),
    "private imported by name": ({"bench/run.py": "from chatcore.core.settings import _DEFAULT\n"},
                                 "private: bench.run -> chatcore.core.settings._DEFAULT"),
    "private reached on a module": ({"tests/test_x.py": "from chatcore.core import settings\nsettings._DEFAULT\n"},
                                    "private: tests.test_x -> chatcore.core.settings._DEFAULT"),
    "private reached on a class": ({"storage/notes.py": "from storage.store import Store\nStore._rows\n"},
                                   "private: storage.notes -> storage.store.Store._rows"),
    "private reached on an object": ({"bench/run.py": "def f(store):\n    return store._rows()\n"},
                                     "private: bench.run -> ._rows"),
    "private patched by name": ({"tests/test_x.py": "import chatcore.core.settings as s\n"
                                                    "def test(monkeypatch):\n"
                                                    "    monkeypatch.setattr(s, '_DEFAULT', 2)\n"},
                                "private: tests.test_x -> chatcore.core.settings._DEFAULT"),
    "core imports the engine": ({"chatcore/core/chat.py": "def f():\n    from chatcore.engine import loader\n"},
                                "layer: chatcore.core.chat -> chatcore.engine.loader"),
    "core imports torch": ({"chatcore/core/chat.py": "import torch.nn\n"}, "layer: chatcore.core.chat -> torch"),
    "web imports torch": ({"chatcore/web/app.py": "def f():\n    import torch\n"}, "layer: chatcore.web.app -> torch"),
    "engine imports storage": ({"chatcore/engine/loader.py": "import storage.store\n"},
                               "layer: chatcore.engine.loader -> storage.store"),
    "engine imports services": ({"chatcore/engine/extra.py": "from chatcore.services.chat import x\n"},
                                "layer: chatcore.engine.extra -> chatcore.services.chat"),
    "services import the web": ({"chatcore/services/extra.py": "from chatcore.web import app\n"},
                                "layer: chatcore.services.extra -> chatcore.web.app"),
    "storage imports chatcore": ({"storage/store.py": "from chatcore.core.settings import VALUE\n"},
                                 "layer: storage.store -> chatcore.core.settings"),
    "web imports the api": ({"chatcore/web/app.py": "from chatcore.api import server\n"},
                            "layer: chatcore.web.app -> chatcore.api.server"),
    "api imports the web": ({"chatcore/api/routes.py": "from chatcore.web.app import x\n"},
                            "layer: chatcore.api.routes -> chatcore.web.app"),
    "a service imports testing": ({"chatcore/services/chat.py": "from chatcore.testing.tiny import x\n"},
                                  "layer: chatcore.services.chat -> chatcore.testing.tiny"),
    "the engine imports a bench": ({"chatcore/engine/loader.py": "from bench.run import VALUE\n"},
                                   "layer: chatcore.engine.loader -> bench.run"),
    "the app script imports testing": ({"app.py": "import chatcore.testing.tiny\n"},
                                       "layer: app -> chatcore.testing.tiny"),
}


def _write(root: Path, files: dict[str, str]) -> Path:
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    return root


def test_a_tree_that_keeps_every_rule_reports_nothing(tmp_path: Path) -> None:
    assert check(_write(tmp_path, CLEAN)) == []


@pytest.mark.parametrize("case", list(BROKEN))
def test_each_rule_reports_what_breaks_it(tmp_path: Path, case: str) -> None:
    files, key = BROKEN[case]
    assert [v.key for v in check(_write(tmp_path, {**CLEAN, **files}))] == [key]


# -- the real tree ------------------------------------------------------------------------------


def test_the_repository_keeps_the_import_rules() -> None:
    found = check(ROOT)
    assert not found, "\n".join(f"{v.key}  ({v.where})" for v in found)
