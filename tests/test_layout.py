"""
The layout of the L{lhttp} package: every module imports alone, no two
modules import each other (even through others), the interfaces' optional
parts are attributes every implementation has (no C{getattr} on them).
"""

import ast
import subprocess
import sys

import pytest
from zope.interface.verify import verifyObject

from lhttp.brokers.embedded import EmbeddedBroker
from lhttp.interfaces import IBroker, IPresence
from lhttp.presence import MemoryPresence
from lhttp.testing import RecordingBroker
from procs import ROOT

PACKAGE = ROOT / "lhttp"


def moduleName(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = sorted(moduleName(p) for p in PACKAGE.rglob("*.py"))


def topLevelImports(module, lazy=False):
    """
    The L{lhttp} modules C{module} imports when it is imported (its
    module-level imports; those inside functions run later, if ever).

    @param lazy: count the imports inside functions too.
    """
    path = PACKAGE.parent / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = PACKAGE.parent / module.replace(".", "/") / "__init__.py"
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree) if lazy else tree.body:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            # "from lhttp.history import wire": a module, not a name.
            names += [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in MODULES and name != module)
    return found


def cycle(graph):
    """
    @return: a list of modules that import each other in a loop, or
        L{None}.
    """
    state = {}

    def visit(node, path):
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state:
                found = visit(target, path + [target])
                if found:
                    return found
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [node])
            if found:
                return found
    return None


def importGraph(lazy):
    """
    C{{module: modules it imports}}. A package's face (its C{__init__}
    re-exporting its modules) is no node: its modules import their
    siblings by their full names, and an import of a module through the
    face counts as one of the module.
    """
    graph = {}
    for module in MODULES:
        targets = topLevelImports(module, lazy)
        graph[module] = {t for t in targets if t not in PACKAGES}
    return graph


PACKAGES = {moduleName(p.parent) for p in PACKAGE.rglob("__init__.py")} - {"lhttp"}


def test_noImportCycle():
    """
    No module imports one that imports it back, even through others, and
    even inside a function (an import put off so that a cycle does not
    fail at import time is still a cycle).
    """
    assert cycle(importGraph(lazy=True)) is None


def test_configImportsLeaves():
    """
    L{lhttp.config} imports only leaves: modules that import nothing of
    lhttp but other leaves (no engine, no broker, no web server), at the
    top of the module (not put off inside a function).
    """
    graph = importGraph(lazy=True)
    assert topLevelImports("lhttp.config", lazy=True) - PACKAGES == topLevelImports("lhttp.config")
    reached, todo = set(), ["lhttp.config"]
    while todo:
        for target in graph[todo.pop()]:
            if target not in reached:
                reached.add(target)
                todo.append(target)
    assert reached == {
        "lhttp.auth.keys", "lhttp.auth.permissions", "lhttp.codec", "lhttp.errors",
        "lhttp.history.policy", "lhttp.names", "lhttp.patterns", "lhttp.upstream.urls", "lhttp.web.hosts",
    }


@pytest.mark.parametrize("module", MODULES)
def test_importsAlone(module):
    """
    Every module imports first, alone, in a fresh interpreter.
    """
    subprocess.run(
        [sys.executable, "-c", f"import {module}"], check=True, cwd=ROOT, timeout=60)


def test_brokersHaveHistory():
    """
    C{IBroker.history} is always there (L{None} without history): nobody
    needs C{getattr} to ask for it.
    """
    for broker in (EmbeddedBroker(), RecordingBroker()):
        assert verifyObject(IBroker, broker)
        assert broker.history is None


def test_presenceDescribes():
    assert verifyObject(IPresence, MemoryPresence())
    assert MemoryPresence().describe()["kind"] == "memory"


def test_noGetattrForHistory():
    """
    No module asks for the broker's history as if it could be missing.
    """
    for path in PACKAGE.rglob("*.py"):
        assert 'getattr(self.broker, "history"' not in path.read_text(), path
        assert 'getattr(broker, "history"' not in path.read_text(), path


def test_brokersDoNotImportHistory():
    """
    The history engines build on the NATS connection (L{lhttp.brokers}),
    not the other way round: L{lhttp.engines} makes the JetStream history
    and gives it to the broker, so the two folders do not depend on each
    other.
    """
    for module in MODULES:
        if module.startswith("lhttp.brokers"):
            imported = topLevelImports(module, lazy=True)
            assert not [m for m in imported if m.startswith("lhttp.history")], module
