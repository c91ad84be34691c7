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


def topLevelImports(module):
    """
    The L{lhttp} modules C{module} imports when it is imported (its
    module-level imports; those inside functions run later, if ever).
    """
    path = PACKAGE.parent / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = PACKAGE.parent / module.replace(".", "/") / "__init__.py"
    tree = ast.parse(path.read_text())
    found = set()
    for node in tree.body:
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


def test_noImportCycle():
    """
    No module imports, at import time, one that imports it back (a
    package's own C{__init__} re-exporting its modules is no cycle: its
    modules import their siblings by their full names).
    """
    graph = {}
    for module in MODULES:
        targets = topLevelImports(module)
        # A module of a package does not depend on the package's face.
        graph[module] = {t for t in targets if not module.startswith(t + ".")}
    assert cycle(graph) is None


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
