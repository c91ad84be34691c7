"""
The chat-room demo and the JavaScript SDK, served at C{/demo/} with
C{--demo}.

L{twisted.web.static.File} trusts its path segments more than a public
port can: a C{%00} in the URL reaches C{os.stat} ("embedded null byte",
a 500 and a CRITICAL traceback in the log), and a segment that is not
UTF-8 logs an error with a traceback. Both are just names that do not
exist here, so they get a quiet 404: a client must not be able to fill the
node's log.
"""

from importlib import resources

from twisted.web.static import File

from lhttp.processor import HeaderFilter


def demoDirectory():
    """
    @return: the directory of the demo page and the SDK, inside the package.
    """
    return str(resources.files("lhttp") / "web" / "static")


def _unservable(segment):
    """
    Whether a path segment could never name a file here: a NUL, or bytes
    that are not UTF-8 (what L{File} decodes them with).
    """
    if b"\x00" in segment:
        return True
    try:
        segment.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


class DemoFiles(File):
    """
    A L{File} that answers 404, without logging, for names no file can have.
    Its children are L{DemoFiles} too (L{File.createSimilarFile} builds them
    from the class).
    """

    def getChild(self, path, request):
        if isinstance(path, bytes) and _unservable(path):
            return self.childNotFound
        return File.getChild(self, path, request)


class DemoNicknames(HeaderFilter):
    """
    The demo's "who is here": a connection's presence user
    (C{connection.data["user"]}) is the C{nick} header of its messages.

    Nicknames are whatever a client says, unauthenticated: installed with
    C{--demo} only. A real application names users in its own filter,
    from what it has authenticated (docs/presence.rst).

    An authenticated connection (the demo's auth mode, a node with an
    C{--auth-*} option) is named by its credential only: its presence user
    is the node's, and the C{nick} header of what it publishes is replaced
    with its user, so no page can speak under another's name.
    """

    def beforeRequest(self, connection, message):
        nick = message.getHeader("nick")
        if connection.identity.authenticated:
            if nick is not None or message.getHeader("publish") is not None:
                connection.setHeader("nick", connection.identity.user)
            return
        if nick is None:
            return
        nick = "".join(c for c in nick if c.isprintable()).strip()[:32]
        if nick:
            connection.data["user"] = nick
