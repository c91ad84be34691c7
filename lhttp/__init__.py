"""
lhttp: an LHTTP server on Twisted and Autobahn.

The public API::

    from lhttp import LHTTPServer, Processor, HeaderFilter, Message

    server = LHTTPServer()
    server.addProcessor("echo", EchoProcessor())
    root.putChild(b"lhttp", server.resource())
    site = LHTTPSite(root, server)
"""

__version__ = "0.1.0"

from lhttp.codec import Message, Part, parse, parseMultipart, serialize, serializeMultipart
from lhttp.dispatch import HeaderFilter, Processor
from lhttp.errors import LHTTPError
from lhttp.server import LHTTPServer
from lhttp.site import LHTTPSite


def resource(**kwargs):
    """
    Make an L{LHTTPServer} with C{kwargs} and return its Resource tree, to
    mount in your own L{twisted.web.server.Site}. The server is the tree's
    C{server} attribute (to add processors, or publish from code).
    """
    server = LHTTPServer(**kwargs)
    root = server.resource()
    root.server = server
    return root


__all__ = [
    "HeaderFilter",
    "LHTTPError",
    "LHTTPServer",
    "LHTTPSite",
    "Message",
    "Part",
    "Processor",
    "parse",
    "parseMultipart",
    "resource",
    "serialize",
    "serializeMultipart",
]
