"""
L{ChannelGuard}: channel permissions enforced on a node. A header filter
that runs before the built-in ones, so a message naming a channel its
connection may not use is refused whole (403, the channel named) before
anything happens; the node's C{history}, C{presence} and
C{presence-stats} processors and C{POST /publish} ask it too.

It is installed only when permissions are on (L{permissionsOn}): a node
without C{--channel} rules and without authentication pays nothing per
message.

Subscription tokens (C{channel-token:<JWT> [<JWT>...]} on a subscribe
message) are verified by the callable the guard is given
(C{verifySubscriptionToken(token) -> Deferred[claims]}); a valid one
grants C{token} for its channel on that connection until its C{exp}. Then
a subscription that only the token allowed ends, and the client is told::

    LHTTP/1.0 unsubscribed
    lhttp-node:reply
    channel:private.x
    reason:subscription token expired
"""

import jwt
from twisted.internet.defer import maybeDeferred, succeed

from lhttp.auth.identity import ANONYMOUS
from lhttp.auth.permissions import ChannelPermissions
from lhttp.errors import BadHeader, ChannelForbidden
from lhttp.processor import HeaderFilter
from lhttp.word import nodeMessage

TOKEN_HEADER = "channel-token"
EXPIRED = "subscription token expired"
NO_LONGER_ALLOWED = "no longer allowed"


def permissionsOn(config, authenticated=False):
    """
    Whether a node enforces channel permissions: once it has any
    C{--channel} rule or authenticates its connections (deny by default);
    never otherwise (Go-compatible).

    @param authenticated: an authentication method is configured.
    """
    return bool(config.channels) or authenticated


class ChannelGuard(HeaderFilter):
    """
    @ivar permissions: the node's L{ChannelPermissions}.
    """

    headers = ("subscribe", "publish", TOKEN_HEADER)

    def __init__(self, permissions, verifySubscriptionToken=None, clock=None):
        """
        @param permissions: a L{ChannelPermissions} (or the rules' texts).
        @param verifySubscriptionToken: C{token -> Deferred[claims]},
            failing with L{lhttp.errors.Unauthorized} (what is wrong, never
            the token) for a bad signature, a wrong key or algorithm, an
            expired token; L{None}: the node verifies no subscription
            tokens (each one is refused).
        @param clock: an L{twisted.internet.interfaces.IReactorTime} (when
            a token's grant ends); default: the global reactor.
        """
        if clock is None:
            from twisted.internet import reactor as clock
        if not isinstance(permissions, ChannelPermissions):
            permissions = ChannelPermissions(permissions)
        self.permissions = permissions
        self._verify = verifySubscriptionToken
        self._clock = clock
        # Connection -> {channel: the exp of the token that granted it}.
        self._grants = {}
        # Connection -> {channel: the call that ends the grant}.
        self._expiries = {}

    # Asking.

    def require(self, connection, channels, action, pending=None):
        """
        Refuse unless C{connection} may do C{action} on each of C{channels}.

        @param connection: an L{lhttp.interfaces.IConnection}, or L{None}
            for an anonymous caller (C{POST /publish} without a publish
            token).
        @param pending: channels whose subscription token this message
            shows (verified, not granted yet).
        @raise ChannelForbidden: naming the first channel refused.
        """
        if connection is None:
            self.permissions.require(ANONYMOUS, channels, action)
            return
        self.permissions.require(
            connection.identity, channels, action, self._tokenCheck(connection, pending)
        )

    def _tokenCheck(self, connection, pending=None):
        grants = self._grants.get(connection)
        if not grants and not pending:
            return None
        grants = grants or {}
        pending = pending or {}
        now = self._clock.seconds()
        return lambda channel: max(grants.get(channel, 0), pending.get(channel, 0)) > now

    def granted(self, connection):
        """
        @return: a new L{dict} of the channels C{connection} holds an
            unexpired subscription token for, and when each expires.
        """
        now = self._clock.seconds()
        return {c: exp for c, exp in self._grants.get(connection, {}).items() if exp > now}

    # The filter.

    def beforeRequest(self, connection, message):
        getHeader = message.getHeader
        tokens = getHeader(TOKEN_HEADER)
        if tokens is not None:
            subscribe = getHeader("subscribe")
            if subscribe is None:
                raise BadHeader(f"'{TOKEN_HEADER}' goes on a message with a 'subscribe' header")
            names = connection.checkChannels(subscribe)
            tokens = tokens.split()
            if not tokens or len(tokens) > len(names):
                raise BadHeader(
                    f"'{TOKEN_HEADER}' holds one token per subscribed channel, "
                    f"at most {len(names)} here"
                )
            return self._verifyAll(connection, names, tokens).addCallback(
                self._checkHeaders, connection, message
            )
        self._checkHeaders(None, connection, message)

    def _checkHeaders(self, pending, connection, message):
        """
        @param pending: channel -> exp of the message's verified
            subscription tokens: granted only if the whole message is
            allowed (a refused message changes nothing).
        """
        subscribe = message.getHeader("subscribe")
        if subscribe is not None:
            self.require(connection, connection.checkChannels(subscribe), "sub", pending)
        publish = message.getHeader("publish")
        if publish is not None:
            self.require(connection, connection.checkChannels(publish), "pub", pending)
        if pending:
            self._grant(connection, pending)

    def onClose(self, connection):
        self._grants.pop(connection, None)
        for call in self._expiries.pop(connection, {}).values():
            if call.active():
                call.cancel()

    def _expire(self, connection, channel):
        """
        A grant's C{exp} passed: it ends, and so does the subscription if
        nothing else allows it.
        """
        expiries = self._expiries.get(connection)
        if expiries is not None:
            expiries.pop(channel, None)
            if not expiries:
                del self._expiries[connection]
        grants = self._grants.get(connection, {})
        if grants.get(channel, 0) > self._clock.seconds():
            return
        grants.pop(channel, None)
        if not grants:
            self._grants.pop(connection, None)
        if (
            connection.connected
            and connection.isSubscribed(channel)
            and not self.permissions.allows(connection.identity, channel, "sub")
        ):
            connection.unsubscribe(channel)
            connection.sendMessage(
                nodeMessage("unsubscribed", [("channel", channel), ("reason", EXPIRED)])
            )

    def recheck(self, connection):
        """
        The connection's credential changed (a C{refresh}, the connect
        proxy asked again): end each subscription it no longer allows
        (its subscription tokens still count), and tell the client::

            LHTTP/1.0 unsubscribed
            lhttp-node:reply
            channel:room.2
            reason:no longer allowed
        """
        if not connection.connected:
            return
        granted = self.granted(connection)
        identity = connection.identity
        for channel in sorted(connection.subscriptions):
            if not self.permissions.allows(identity, channel, "sub", channel in granted):
                connection.unsubscribe(channel)
                connection.sendMessage(nodeMessage(
                    "unsubscribed", [("channel", channel), ("reason", NO_LONGER_ALLOWED)]))

    # Subscription tokens.

    def _verifyAll(self, connection, names, tokens):
        """
        Verify every token.

        @return: a L{Deferred} firing with channel -> exp, or failing with
            L{ChannelForbidden} if any token is refused.
        """
        found = {}

        def keep(verified):
            channel, expires = verified
            found[channel] = max(expires, found.get(channel, 0))

        d = succeed(None)
        for token in tokens:
            d.addCallback(lambda ignored, token=token: self._verifyOne(connection, names, token))
            d.addCallback(keep)
        return d.addCallback(lambda ignored: found)

    def _grant(self, connection, verified):
        """
        Grant C{token} on each channel of C{verified} (channel -> exp)
        until its exp, and end it then.
        """
        if not connection.connected:
            # Closed while its tokens were verified: onClose ran already,
            # and nothing would forget a grant made now.
            return
        grants = self._grants.setdefault(connection, {})
        expiries = self._expiries.setdefault(connection, {})
        now = self._clock.seconds()
        for channel, expires in verified.items():
            if expires <= grants.get(channel, 0):
                continue
            grants[channel] = expires
            call = expiries.get(channel)
            if call is not None and call.active():
                call.reset(expires - now)
            else:
                expiries[channel] = self._clock.callLater(
                    expires - now, self._expire, connection, channel)

    def _verifyOne(self, connection, names, token):
        """
        @return: a L{Deferred} firing with C{(channel, exp)} or failing
            with L{ChannelForbidden}.
        """
        if self._verify is None:
            return _refuse(names, token, "this node verifies no subscription tokens")
        user = connection.identity.user

        def check(claims):
            channel = claims.get("channel")
            if not isinstance(channel, str) or channel not in names:
                where = channel if isinstance(channel, str) and channel else names[0]
                raise ChannelForbidden(
                    where, "sub",
                    f"the subscription token is for {channel!r}, not a channel of this subscribe",
                )
            sub = claims.get("sub") or None
            if sub != user:
                raise ChannelForbidden(channel, "sub", "the subscription token is for another user")
            expires = claims.get("exp")
            if not isinstance(expires, (int, float)) or isinstance(expires, bool):
                raise ChannelForbidden(channel, "sub", "the subscription token has no exp")
            if expires <= self._clock.seconds():
                raise ChannelForbidden(channel, "sub", "the subscription token expired")
            return (channel, expires)

        def failed(failure):
            if failure.check(ChannelForbidden):
                return failure
            return _refuse(names, token, failure.getErrorMessage())

        return maybeDeferred(self._verify, token).addCallbacks(check, failed)


def _refuse(names, token, why):
    """
    A token that did not verify: refused, naming the channel it claims if
    that is one of C{names} (its claims are not trusted for anything
    else), else the first of C{names}.
    """
    try:
        claimed = jwt.decode(token, options={"verify_signature": False}).get("channel")
    except Exception:
        claimed = None
    channel = claimed if claimed in names else names[0]
    raise ChannelForbidden(channel, "sub", f"the subscription token for {channel!r} is not valid: {why}")
