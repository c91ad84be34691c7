"""
Processors as Twisted plugins: a user adds a processor to C{twistd lhttp}
by dropping a module into a C{twisted/plugins/} folder on the Python path::

    # myapp/twisted/plugins/myapp_processors.py
    from lhttp.plugin import ProcessorPlugin

    echo = ProcessorPlugin("echo", "myapp.echo.EchoProcessor")

The processor's module is imported only when C{twistd lhttp} starts.
Plugins installed with your package are found, and so are those in a
C{twisted/plugins/} folder of the directory C{twistd lhttp} runs in (which
is put on the Python path for that, as C{python -m} does).
"""

import importlib
import os
import sys


from twisted.plugin import IPlugin, getPlugins
from twisted.python.reflect import InvalidName, ModuleNotFound, ObjectNotFound, namedAny
from zope.interface import implementer

from lhttp.interfaces import IHeaderFilter, IProcessor, IProcessorPlugin


@implementer(IPlugin, IProcessorPlugin)
class ProcessorPlugin:
    """
    @param command: the command the processor handles.
    @param processor: the dotted name of an L{IProcessor} class or factory
        (called with no arguments), or of a ready provider.
    """

    def __init__(self, command, processor, description=""):
        self.command = command
        self.processor = processor
        self.description = description

    def load(self):
        return loadProcessor(self.processor)


def loadProvider(name, interface):
    """
    Import by dotted name a provider of C{interface}, or a class or factory
    that makes one when called with no arguments.

    @raise LookupError: if the name does not name an object, saying which
        part is missing.
    @raise TypeError: if what is found is neither.
    """
    try:
        found = namedAny(name)
    except (InvalidName, ModuleNotFound, ObjectNotFound) as e:
        raise LookupError(_whyNotFound(name, e)) from None
    if interface.providedBy(found):
        return found
    if callable(found):
        made = found()
        if interface.providedBy(made):
            return made
    raise TypeError(f"{name} is not an {interface.__name__}, nor makes one")


def _whyNotFound(name, error):
    module, _, attribute = name.rpartition(".")
    if not module:
        return str(error)
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as missing:
        return (f"no module named {missing.name!r} (searched the current directory "
                f"{os.getcwd()} and the installed packages)")
    return f"module {module!r} has no {attribute!r}"


def loadProcessor(name):
    """
    Import a processor by dotted name (see L{loadProvider}).
    """
    return loadProvider(name, IProcessor)


def loadFilter(name):
    """
    Import a header filter by dotted name (see L{loadProvider}).
    """
    return loadProvider(name, IHeaderFilter)


def addWorkingDirectory():
    """
    Put the current directory on the Python path (last, so it shadows
    nothing installed), where twistd, unlike C{python -m}, does not.
    """
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.append(here)


def processorPlugins():
    """
    @return: the L{IProcessorPlugin}s installed in C{twisted.plugins}, and
        those in C{./twisted/plugins}.
    """
    import twisted.plugins

    local = os.path.join(os.getcwd(), "twisted", "plugins")
    paths = [p for p in twisted.plugins.__path__ if os.path.isdir(p)]
    if os.path.isdir(local) and not any(os.path.samefile(local, p) for p in paths):
        # What importing twisted.plugins would have done had the current
        # directory been on the path then (twisted.plugins.pluginPackagePaths).
        twisted.plugins.__path__.append(local)
    return list(getPlugins(IProcessorPlugin, twisted.plugins))
