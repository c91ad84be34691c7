"""
Processors as Twisted plugins: a user adds a processor to C{twistd lhttp}
by dropping a module into a C{twisted/plugins/} folder on the Python path::

    # myapp/twisted/plugins/myapp_processors.py
    from lhttp.plugin import ProcessorPlugin

    echo = ProcessorPlugin("echo", "myapp.echo.EchoProcessor")

The processor's module is imported only when C{twistd lhttp} starts.
"""

from twisted.plugin import IPlugin, getPlugins
from twisted.python.reflect import namedAny
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

    @raise TypeError: if what is found is neither.
    """
    found = namedAny(name)
    if interface.providedBy(found):
        return found
    if callable(found):
        made = found()
        if interface.providedBy(made):
            return made
    raise TypeError(f"{name} is not an {interface.__name__}, nor makes one")


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


def processorPlugins():
    """
    @return: the L{IProcessorPlugin}s installed in C{twisted.plugins}.
    """
    import twisted.plugins

    return list(getPlugins(IProcessorPlugin, twisted.plugins))
