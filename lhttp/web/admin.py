"""
The admin page: a live view of the cluster for operators, served with
C{--admin-listen} on a port of its own (never on the clients' ports).

  - C{GET /admin/}: the page (C{lhttp/web/admin-page/}: HTML, CSS and a
    script that draws its charts in SVG, no library, nothing fetched from
    elsewhere).
  - C{GET /admin/api/cluster}: the JSON the page polls, and C{lhttp top}
    prints: L{lhttp.roster.Roster.document}, shape in
    docs/operations.rst.

With C{--admin-token} the JSON needs C{Authorization: Bearer <token>}; the
page's files do not (they hold no data), and the page sends the token it
finds in its URL's fragment (C{/admin/#token=T}). The JSON answers only to
the node's own names in C{Host} (as the clients' ports do), so a web page
elsewhere cannot read it through DNS rebinding.
"""

from importlib import resources

from twisted.web.pages import notFound
from twisted.web.resource import Resource
from twisted.web.util import Redirect

from lhttp.errors import LHTTPError
from lhttp.web.bearer import checkBearer
from lhttp.web.demo import DemoFiles
from lhttp.web.resource import checkHost, errorResponse, jsonResponse

POLICY = (b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
          b"connect-src 'self'; frame-ancestors 'none'")


def pageDirectory():
    """
    @return: the directory of the admin page's files, inside the package.
    """
    return str(resources.files("lhttp") / "web" / "admin-page")


class AdminFiles(DemoFiles):
    """
    The page's files, with headers that keep it from being framed or
    running anything from elsewhere.
    """

    def render(self, request):
        request.setHeader(b"content-security-policy", POLICY)
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"referrer-policy", b"no-referrer")
        return DemoFiles.render(self, request)


class ClusterResource(Resource):
    """
    C{GET /admin/api/cluster}: the roster's document.
    """

    isLeaf = True

    def __init__(self, roster, hostPolicy, token=None):
        """
        @param roster: the node's L{lhttp.roster.Roster}.
        @param hostPolicy: the node's L{lhttp.web.hosts.HostPolicy}.
        @param token: the bearer token the JSON needs, or L{None}.
        """
        Resource.__init__(self)
        self._roster = roster
        self._hostPolicy = hostPolicy
        self._token = token

    def render_GET(self, request):
        try:
            checkHost(request, self._hostPolicy)
            checkBearer(request, self._token, "admin", "/admin/api")
        except LHTTPError as error:
            return errorResponse(request, error)
        return jsonResponse(request, 200, self._roster.document())


class _AdminRoot(Resource):
    def getChild(self, name, request):
        if name == b"":
            return Redirect(b"/admin/")
        return notFound("Not found", "This port serves the admin page, at /admin/.")


def adminRoot(roster, hostPolicy, token=None):
    """
    The tree of the admin port.

    @param roster: the node's L{lhttp.roster.Roster}.
    @param hostPolicy: the node's L{lhttp.web.hosts.HostPolicy}.
    @param token: the bearer token the JSON needs, if any.
    """
    root = _AdminRoot()
    files = AdminFiles(pageDirectory())
    api = Resource()
    api.putChild(b"cluster", ClusterResource(roster, hostPolicy, token))
    files.putChild(b"api", api)
    root.putChild(b"admin", files)
    return root
