"""
Bases for the application's code: L{Processor} (one command) and
L{HeaderFilter} (a hook around every message). Override what you need; the
rest does nothing and, for filters, costs nothing per message.
"""

from zope.interface import implementer

from lhttp.interfaces import IHeaderFilter, IProcessor


@implementer(IProcessor)
class Processor:
    """
    A base for processors: every hook does nothing.
    """

    def onOpen(self, connection):
        pass

    def onMessage(self, connection, message):
        pass

    def onClose(self, connection):
        pass


@implementer(IHeaderFilter)
class HeaderFilter:
    """
    A base for header filters: every hook does nothing. Hooks left as they
    are are not called at all.

    @cvar headers: the names of the headers this filter acts on. A message
        whose command has no processor is answered with 404 unless it
        carries one of the headers some filter names (the reserved
        C{subscribe}, C{publish}, ... are named by the built-in filters).
    """

    headers = ()

    def onOpen(self, connection):
        pass

    def beforeRequest(self, connection, message):
        pass

    def afterRequest(self, connection, message):
        pass

    def onClose(self, connection):
        pass


def overrides(obj, name):
    """
    Whether C{obj} has a hook C{name} that does more than L{HeaderFilter}'s.
    """
    return getattr(type(obj), name, None) is not getattr(HeaderFilter, name)
