"""
The documentation site builds as CI and a reader build it: the pages in
docs/ with Sphinx, warnings as errors, and the API reference pydoctor
generates from the lhttp package in the same build.
"""

import os
import shutil
import subprocess
import sys

import pytest

from docsnippets import blockWith
from procs import ROOT

BUILD = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html"]


def build(source, output, *options):
    """
    Build the site in C{source} into C{output}.

    @return: the finished L{subprocess.CompletedProcess}.
    """
    return subprocess.run(
        [*BUILD, *options, str(source), str(output)],
        capture_output=True, text=True, timeout=600,
    )


def copyOfDocs(tmp_path):
    """
    A copy of docs/ to break, beside the package it documents (the
    configuration finds the package next to its own folder).

    @return: the copy's docs folder.
    """
    (tmp_path / "lhttp").symlink_to(ROOT / "lhttp")
    shutil.copytree(ROOT / "docs", tmp_path / "docs", ignore=shutil.ignore_patterns("_build"))
    return tmp_path / "docs"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """
    The site, built once from docs/ as it is, with the command
    docs/development.rst gives, pasted (into a temporary folder).
    """
    output = tmp_path_factory.mktemp("site")
    command = blockWith("sh", "sphinx-build", ["docs/development.rst"])
    assert command.strip() == "sphinx-build " + " ".join(BUILD[3:]) + " docs docs/_build/html"
    result = subprocess.run(
        ["bash", "-c", command.replace("docs/_build/html", str(output))],
        capture_output=True, text=True, timeout=600, cwd=str(ROOT),
        env={**os.environ, "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]])},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return output


def test_everyPageIsBuilt(site):
    """
    Every page of docs/ is in the site and reachable from the index.
    """
    pages = sorted(p.stem for p in (ROOT / "docs").glob("*.rst"))
    assert "performance" in pages and "api" in pages
    for page in pages:
        assert (site / f"{page}.html").exists(), page
    index = (site / "index.html").read_text()
    for page in pages:
        if page != "index":
            assert f'href="{page}.html"' in index, page


def test_apiReferenceIsGeneratedFromThePackage(site):
    """
    The API reference is pydoctor's, with a page for C{lhttp.codec}, and
    the narrative pages link into it.
    """
    api = site / "api"
    assert (api / "index.html").exists()
    codec = (api / "lhttp.codec.html").read_text()
    assert "parse" in codec and "serialize" in codec
    assert 'href="api/lhttp.codec.html"' in (site / "api.html").read_text()


def test_everyModuleHasAPage(site):
    """
    Every public module of the package has its page: the reference is
    generated from the package, not from a list.
    """
    missing = []
    for path in (ROOT / "lhttp").rglob("*.py"):
        dotted = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        if not any(part.startswith("_") for part in dotted.split(".")):
            if not (site / "api" / f"{dotted}.html").exists():
                missing.append(dotted)
    assert missing == []


@pytest.mark.parametrize(
    "broken, complaint",
    [
        (":py:class:`lhttp.codec.NoSuchThing`", "lhttp.codec.NoSuchThing"),
        (":doc:`no-such-page`", "no-such-page"),
        ("`a link to nowhere`_", "a link to nowhere"),
    ],
)
def test_brokenReferenceFailsTheBuild(tmp_path, broken, complaint):
    """
    A reference that does not resolve (into the API, to a page, to a
    target) fails the build.
    """
    docs = copyOfDocs(tmp_path)
    with (docs / "api.rst").open("a") as page:
        page.write(f"\nSee {broken}.\n")
    result = build(docs, tmp_path / "out")
    assert result.returncode != 0
    assert complaint in result.stderr, result.stderr


def test_pageOutsideTheTreeFailsTheBuild(tmp_path):
    """
    A page no toctree reaches fails the build: every page is reachable.
    """
    docs = copyOfDocs(tmp_path)
    (docs / "orphan.rst").write_text("Orphan\n======\n\nNobody links here.\n")
    result = build(docs, tmp_path / "out")
    assert result.returncode != 0
    assert "orphan" in result.stderr and "toctree" in result.stderr, result.stderr


def test_unreadablePackageFailsTheBuild(tmp_path):
    """
    A module pydoctor cannot parse is an error, not a docstring problem.
    """
    docs = copyOfDocs(tmp_path)
    (tmp_path / "lhttp").unlink()
    shutil.copytree(ROOT / "lhttp", tmp_path / "lhttp",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "lhttp" / "broken.py").write_text("def (:\n")
    result = build(docs, tmp_path / "out")
    assert result.returncode != 0
    assert "broken.py" in result.stderr, result.stderr


def test_docstringsAreClean(site):
    """
    pydoctor has nothing to say about the package's docstrings, apart
    from links to names outside lhttp (their inventories need the
    network): what C{-D lhttp_api_strict=1} makes an error.
    """
    import re

    log = (site / ".doctrees" / "pydoctor.log").read_text().splitlines()
    problems = [line for line in log if not re.search(r'Cannot find link target for "(?!lhttp\b)', line)]
    assert problems == []
