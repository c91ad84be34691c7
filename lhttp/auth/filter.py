"""
L{AuthFilter}: the node's own first filter once an authentication method
is configured (docs/authentication.rst). It answers C{connect} and
C{refresh}, refuses every other message of a connection that has not
authenticated (401, unless C{--auth-anonymous}), closes a connection that
does not authenticate in time (4401), and keeps each connection's
L{lhttp.auth.Identity} current: its expiry, the C{refresh} notice, the
grace, the close (4419).

A C{connect} whose keys must be fetched (JWKS) or a connection waiting
for the connect proxy pauses that connection's pipeline only.
"""

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from lhttp.codec import errorReply
from lhttp.errors import (
    AlreadyConnected,
    AuthenticationUnavailable,
    Forbidden,
    LHTTPError,
    Unauthorized,
)
from lhttp.processor import HeaderFilter
from lhttp.word import nodeMessage

# Close codes (docs/authentication.rst, docs/protocol.rst).
UNAUTHORIZED_CLOSE = 4401
EXPIRED_CLOSE = 4419
UNAVAILABLE_CLOSE = 4503

log = Logger()

BEFORE_CONNECT = "send 'LHTTP/1.0 connect' with a 'token' header first"
PROXY_EXPIRED = "the connect proxy's answer has already expired"


def closeCodeOf(error):
    """
    The close code a failed C{connect} ends its connection with.
    """
    return UNAVAILABLE_CLOSE if error.status == 503 else UNAUTHORIZED_CLOSE


def _asAuthError(failure):
    error = failure.value
    if isinstance(error, LHTTPError):
        return error
    # A bug, not a bad credential: logged (the traceback, never the
    # message or its token), and the client may try again.
    log.failure("Checking a credential failed", failure)
    return AuthenticationUnavailable("the server could not check this credential")


class _State:
    """
    What the filter keeps per connection.

    @ivar deadline: the call closing it unless it authenticates in time.
    @ivar expiry: the call telling it its credential expired.
    @ivar grace: the call closing it once the grace is over.
    @ivar waiting: while the connect proxy is asked at open: the
        L{Deferred}s of its messages, which wait for the answer.
    @ivar checking: its C{connect} token is being checked (the node
        fetching its keys).
    """

    __slots__ = ("deadline", "expiry", "grace", "waiting", "checking")

    def __init__(self):
        self.deadline = self.expiry = self.grace = None
        self.waiting = None
        self.checking = False

    def cancel(self, *names):
        for name in names:
            call = getattr(self, name)
            if call is not None and call.active():
                call.cancel()
            setattr(self, name, None)


class AuthFilter(HeaderFilter):
    """
    @ivar authenticator: the L{lhttp.interfaces.IAuthenticator}.
    @ivar users: the node's L{lhttp.auth.Users}.
    @ivar guard: the node's L{lhttp.auth.guard.ChannelGuard} (set by the
        server once made), which re-checks a connection's subscriptions
        when its credential changes; L{None}: no permissions.
    """

    guard = None

    headers = ("token",)

    def __init__(self, authenticator, users, clock, grace=10.0, handshakeTimeout=10.0,
                 anonymous=False):
        """
        @param clock: an L{IReactorTime}.
        @param grace: seconds a connection whose credential expired keeps
            working, waiting for a C{refresh}.
        @param handshakeTimeout: seconds a connection has to authenticate.
        @param anonymous: connections that never authenticate are
            anonymous instead of refused.
        """
        self.authenticator = authenticator
        self.users = users
        self.grace = grace
        self.handshakeTimeout = handshakeTimeout
        self.anonymous = anonymous
        self._clock = clock
        self._states = {}

    # Opening and closing.

    def onOpen(self, connection):
        state = self._states[connection] = _State()
        if self.authenticator.fromHandshake:
            state.waiting = []
            d = self.authenticator.authenticate(connection, None, False)
            d.addCallbacks(self._proxyAnswered, self._proxyRefused,
                           callbackArgs=(connection,), errbackArgs=(connection,))
        elif not self.anonymous:
            state.deadline = self._clock.callLater(self.handshakeTimeout, self._tooLate, connection)

    def onClose(self, connection):
        state = self._states.pop(connection, None)
        if state is not None:
            state.cancel("deadline", "expiry", "grace")
        identity = connection.identity
        if identity.authenticated:
            self.users.remove(identity.user, connection)

    def _tooLate(self, connection):
        state = self._states.get(connection)
        if state is not None:
            state.deadline = None
        if not connection.identity.authenticated:
            if state is not None and state.checking:
                # It sent its token in time; the node is the slow one
                # (its JWKS): the client may retry, with backoff.
                connection.close(UNAVAILABLE_CLOSE, "authentication unavailable")
            else:
                connection.close(UNAUTHORIZED_CLOSE, "unauthorized")

    # Messages.

    def beforeRequest(self, connection, message):
        state = self._states.get(connection)
        if state is not None and state.waiting is not None:
            # The connect proxy has not answered yet: this message waits.
            waiter = Deferred()
            state.waiting.append(waiter)
            return waiter.addCallback(lambda ignored: self._check(connection, message))
        return self._check(connection, message)

    def _check(self, connection, message):
        command = message.command
        if command == "connect":
            return self._connect(connection, message)
        if command == "refresh":
            return self._refresh(connection, message)
        if not connection.identity.authenticated and not self.anonymous:
            raise Unauthorized(BEFORE_CONNECT)

    def _connect(self, connection, message):
        if connection.identity.authenticated:
            raise AlreadyConnected(
                "this connection is authenticated already; 'refresh' renews its token")
        if self.authenticator.fromHandshake:
            raise Unauthorized("this server authenticates connections through the "
                               "application (the handshake's cookies), not with a token")
        token = message.getHeader("token")
        if not token:
            error = Unauthorized("no 'token' header")
            error.closeCode = UNAUTHORIZED_CLOSE
            raise error
        d = self.authenticator.authenticate(connection, token, False)
        state = self._states.get(connection)
        if state is not None and not d.called:
            state.checking = True

            def checked(result):
                state.checking = False
                return result

            d.addBoth(checked)
        return d.addCallbacks(self._connected, self._connectFailed,
                              callbackArgs=(connection,))

    def _connected(self, identity, connection):
        if connection in self._states and connection.connected:
            self._authenticated(connection, identity)
            connection.sendMessage(self._reply("connect", identity))

    def _connectFailed(self, failure):
        error = _asAuthError(failure)
        error.closeCode = closeCodeOf(error)
        raise error

    def _refresh(self, connection, message):
        if self.authenticator.fromHandshake:
            raise Unauthorized("this server renews credentials through the application "
                               "by itself; it takes no token")
        if not connection.identity.authenticated:
            raise Unauthorized(BEFORE_CONNECT)
        token = message.getHeader("token")
        if not token:
            raise Unauthorized("no 'token' header")
        d = self.authenticator.authenticate(connection, token, True)
        return d.addCallbacks(self._refreshed, self._refreshFailed, callbackArgs=(connection,))

    def _refreshed(self, identity, connection):
        if identity.user != connection.identity.user:
            raise Forbidden("token is for another user")
        if connection in self._states and connection.connected:
            self._authenticated(connection, identity)
            connection.sendMessage(self._reply("refresh", identity))
            self._recheck(connection)

    def _refreshFailed(self, failure):
        # The connection keeps its credential, its expiry and its grace.
        raise _asAuthError(failure)

    @staticmethod
    def _reply(command, identity):
        headers = [("status", "200"), ("user", identity.user)]
        if identity.expires is not None:
            headers.append(("expires", str(identity.expires)))
        return nodeMessage(command, headers)

    # The connect proxy (at open and at expiry).

    def _pastExpiry(self, identity):
        """
        Whether the connect proxy's answer expired already: a refusal
        (else its renewal would be due at once, and so on, forever).
        """
        return identity.expires is not None and identity.expires <= self._clock.seconds()

    def _proxyAnswered(self, identity, connection):
        state = self._states.get(connection)
        if state is None or not connection.connected:
            return
        if self._pastExpiry(identity):
            self._proxyRefused(Failure(Unauthorized(PROXY_EXPIRED)), connection)
            return
        self._authenticated(connection, identity)
        connection.sendMessage(self._reply("connect", identity))
        self._release(state)

    def _proxyRefused(self, failure, connection):
        state = self._states.get(connection)
        if state is None or not connection.connected:
            return
        error = _asAuthError(failure)
        connection.sendMessage(errorReply(error, "connect"))
        if not (self.anonymous and error.status != 503):
            connection.close(closeCodeOf(error), error.reason)
        self._release(state)

    @staticmethod
    def _release(state):
        waiting, state.waiting = state.waiting, None
        for waiter in waiting or ():
            waiter.callback(None)

    def _renewThroughProxy(self, connection):
        d = self.authenticator.authenticate(connection, None, True)

        def renewed(identity):
            if connection not in self._states or not connection.connected:
                return
            if identity.user != connection.identity.user:
                connection.sendMessage(errorReply(
                    Forbidden("the application names another user now"), "refresh"))
                connection.close(UNAUTHORIZED_CLOSE, "unauthorized")
                return
            if self._pastExpiry(identity):
                connection.sendMessage(errorReply(Unauthorized(PROXY_EXPIRED), "refresh"))
                connection.close(EXPIRED_CLOSE, "token expired")
                return
            self._authenticated(connection, identity)
            connection.sendMessage(self._reply("refresh", identity))
            self._recheck(connection)

        def refused(failure):
            if connection not in self._states or not connection.connected:
                return
            error = _asAuthError(failure)
            connection.sendMessage(errorReply(error, "refresh"))
            if error.status == 503:
                connection.close(UNAVAILABLE_CLOSE, error.reason)
            else:
                connection.close(EXPIRED_CLOSE, "token expired")

        d.addCallbacks(renewed, refused)

    def _recheck(self, connection):
        """
        A new credential may allow less: the subscriptions it does not
        allow end (the guard tells the client, C{reason:no longer allowed}).
        """
        if self.guard is not None:
            self.guard.recheck(connection)

    # The identity and its expiry.

    def _authenticated(self, connection, identity):
        old = connection.identity
        if old.user != identity.user:
            if old.authenticated:
                self.users.remove(old.user, connection)
            self.users.add(identity.user, connection)
        connection.identity = identity
        connection.data["user"] = identity.user
        state = self._states[connection]
        state.cancel("deadline", "expiry", "grace")
        if identity.expires is not None:
            delay = max(0.0, identity.expires - self._clock.seconds())
            state.expiry = self._clock.callLater(delay, self._expired, connection)

    def _expired(self, connection):
        state = self._states.get(connection)
        if state is None:
            return
        state.expiry = None
        if self.authenticator.fromHandshake:
            self._renewThroughProxy(connection)
            return
        connection.sendMessage(nodeMessage("refresh", [
            ("status", "401"), ("reason", "token expired"), ("grace", f"{self.grace:g}"),
        ]))
        state.grace = self._clock.callLater(self.grace, self._graceOver, connection)

    def _graceOver(self, connection):
        state = self._states.get(connection)
        if state is not None:
            state.grace = None
        connection.close(EXPIRED_CLOSE, "token expired")


def install(server, authenticator=None):
    """
    Add authentication to a node, as its L{lhttp.config.Config} says:
    L{AuthFilter}, first of all filters.

    @param server: an L{lhttp.server.LHTTPServer}.
    @param authenticator: an L{lhttp.interfaces.IAuthenticator} (default:
        the one the config describes).
    @return: the L{AuthFilter}, or L{None} when no method is configured.
    """
    config = server.config
    clock = server.factory.reactor
    if authenticator is None:
        method = config.authMethod
        if method is None:
            return None
        if method == "proxy":
            from lhttp.auth.proxy import makeProxy

            authenticator = makeProxy(config, clock)
        else:
            from lhttp.auth.jwt import makeVerifier

            authenticator = makeVerifier(config, clock)
    authFilter = AuthFilter(
        authenticator, server.users, clock, config.authRefreshGrace, config.handshakeTimeout,
        config.authAnonymous,
    )
    server.dispatcher.addFilter(authFilter, 0)
    return authFilter

