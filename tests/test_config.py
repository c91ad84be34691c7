"""
One source of truth for options: L{lhttp.config.Config} makes the twistd
options and the option table of docs/options.rst.
"""

import re

import attr
import pytest
from twisted.python import usage

from lhttp.config import Config, optionTable, options
from lhttp.options import Options
from procs import ROOT


def readmeTable():
    """
    The option table of the docs (C{docs/options.rst}; the README links
    to it).
    """
    page = (ROOT / "docs" / "options.rst").read_text()
    found = re.search(r"\.\. BEGIN OPTIONS[^\n]*\n\n(.*?)\n\.\. END OPTIONS", page, re.DOTALL)
    assert found, "docs/options.rst has no BEGIN/END OPTIONS table"
    return found.group(1)


def test_readmeTableIsTheGeneratedOne():
    """
    The docs' option table is what C{python -m lhttp.options} prints now: an
    option added, renamed or given another default shows up here.
    """
    assert readmeTable() == optionTable()


def test_readmeTableListsEveryOption():
    table = readmeTable()
    for field in options():
        assert f"``{field.metadata['flag']}" in table, field.name


def test_everyOptionIsATwistdFlag():
    text = str(Options())
    for field in options():
        assert field.metadata["flag"] in text, field.name


def test_frozenWithCheckedValues():
    config = Config()
    with pytest.raises(attr.exceptions.FrozenInstanceError):
        config.maxSubscriptions = 5
    with pytest.raises(ValueError, match="max-message-size"):
        Config(maxMessageSize=0)
    with pytest.raises(TypeError):
        Config(1000)  # keyword-only


def test_optionsMakeTheConfig():
    options = Options()
    options.parseOptions(["--max-subscriptions", "7", "--allow-host", "a.example", "--allow-host", "b.example"])
    assert options.config == Config(maxSubscriptions=7, allowHosts=("a.example", "b.example"))
    with pytest.raises(usage.UsageError):
        Options().parseOptions(["--max-subscriptions", "lots"])
