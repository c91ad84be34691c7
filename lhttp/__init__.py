"""
lhttp: an LHTTP server on Twisted and Autobahn.

The public API::

    from lhttp import Config, LHTTPServer, Processor, HeaderFilter, Message

    server = LHTTPServer(Config(maxSubscriptions=100))
    server.addProcessor("echo", EchoProcessor())
    root.putChild(b"lhttp", server.resource())
    reactor.listenTCP(8080, server.site(root))
"""

from lhttp.codec import Message, Part, parse, parseMultipart, serialize, serializeMultipart
from lhttp.config import Config
from lhttp.errors import LHTTPError
from lhttp.processor import HeaderFilter, Processor
from lhttp.server import LHTTPServer
from lhttp.version import __version__

__all__ = [
    "Config",
    "HeaderFilter",
    "LHTTPError",
    "LHTTPServer",
    "Message",
    "Part",
    "Processor",
    "parse",
    "parseMultipart",
    "serialize",
    "serializeMultipart",
]
