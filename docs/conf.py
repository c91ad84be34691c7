"""
Sphinx configuration for lhttp's documentation: the pages in this folder
and, in C{api/} beside them, the API reference pydoctor generates from the
C{lhttp} package's epytext docstrings (as Twisted's documentation does).

C{sphinx-build -W --keep-going -b html docs docs/_build/html} builds both.
The API reference is generated from the package as it is, module by module,
so it follows the package's layout without a list to keep up to date; the
pages link into it with the C{py} roles (C{:py:mod:`lhttp.codec`}), checked
against the inventory pydoctor writes.
"""

import re
import subprocess
import sys
from pathlib import Path

from sphinx.util import logging

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "lhttp"

project = "lhttp"
author = "the lhttp authors"
copyright = "the lhttp authors"
exclude_patterns = ["_build"]
extensions = ["sphinx.ext.intersphinx"]
html_theme = "alabaster"
# Every cross-reference must resolve: a broken one is a warning, and -W
# makes it an error.
nitpicky = True
# Filled in by linkAPIReference once the build directory is known.
intersphinx_mapping = {}

log = logging.getLogger("lhttp.docs")

# pydoctor's complaints about what a docstring says (as opposed to a failure
# to read the package). A link to a name outside lhttp cannot be resolved
# without the Python, Twisted, treq and Autobahn inventories, which need the
# network, so those are never build errors.
EXTERNAL_LINK = re.compile(r': Cannot find link target for "(?!lhttp\b)')
DOCSTRING_PROBLEM = re.compile(
    r": (bad docstring|Cannot find link target)"
    r"|^these \d+ objects' docstrings contain syntax errors:$"
    r"|^    lhttp(\.\w+)*$"
)


def apiOutput(app):
    return Path(app.outdir) / "api"


def linkAPIReference(app, config):
    """
    Point the C{py} roles at the inventory pydoctor writes into the build.
    """
    config.intersphinx_mapping["lhttp"] = ("api/", str(apiOutput(app) / "objects.inv"))


def buildAPIReference(app):
    """
    Run pydoctor on the package into C{api/} of the HTML build, before the
    pages are read (their references need its inventory).

    What pydoctor reports is kept in C{pydoctor.log} of the doctree folder.
    A report that is not about a docstring (a module it cannot parse, say)
    is a Sphinx warning. Docstring problems are warnings too when
    C{lhttp_api_strict} is set (C{-D lhttp_api_strict=1}), and otherwise
    only logged; links to names outside lhttp are always only logged.
    """
    if app.builder.name not in ("html", "dirhtml"):
        return
    output = apiOutput(app)
    arguments = [
        "--make-html", "--quiet",
        "--docformat=epytext",
        "--project-name=lhttp",
        f"--project-base-dir={ROOT}",
        f"--html-output={output}",
        str(PACKAGE),
    ]
    # In a process of its own: importing pydoctor registers docutils
    # directives (deprecated, versionadded) over Sphinx's.
    run = subprocess.run(
        [sys.executable, "-m", "pydoctor", *arguments],
        capture_output=True, text=True, check=False,
    )
    if run.returncode not in (0, 2):  # 2: docstrings with syntax errors
        raise RuntimeError(f"pydoctor failed ({run.returncode}):\n{run.stderr}")
    lines = run.stdout.splitlines() + run.stderr.splitlines()
    Path(app.doctreedir).mkdir(parents=True, exist_ok=True)
    (Path(app.doctreedir) / "pydoctor.log").write_text("".join(line + "\n" for line in lines))
    for line in lines:
        if EXTERNAL_LINK.search(line) or (
            DOCSTRING_PROBLEM.search(line) and not app.config.lhttp_api_strict
        ):
            log.info("pydoctor: %s", line)
        else:
            log.warning("pydoctor: %s", line)


def setup(app):
    app.add_config_value("lhttp_api_strict", True, "env", bool)
    # Before intersphinx checks its mapping (800) and loads it (500).
    app.connect("config-inited", linkAPIReference, priority=400)
    app.connect("builder-inited", buildAPIReference, priority=400)
