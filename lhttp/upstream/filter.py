"""
The C{upstream} header as a header filter (SPEC section 5): the allow-list
check before the processor, the request after unsubscribe, its answer to
the sender.
"""

import re

from twisted.internet.defer import DeferredSemaphore

from lhttp.word import nodeMessage
from lhttp.errors import BadGateway, GatewayTimeout, LHTTPError
from lhttp.processor import HeaderFilter
from lhttp.upstream.agent import UpstreamResponse


class UpstreamFilter(HeaderFilter):
    """
    The C{upstream} header as a filter, run last: the allow-list check
    before the processor, the request after unsubscribe.

    Requests run concurrently; a connection may have C{maxPending} in
    flight, and a message beyond that waits for a slot, holding back that
    connection's later messages (never other connections). The sender gets
    a 502/504 error reply if a request fails, and with relaying on, an
    C{LHTTP/1.0 upstream} reply (C{status}, C{command}, C{upstream},
    C{content-type}) with the backend's body.
    """

    headers = ("upstream",)

    def __init__(self, upstream, clock, metrics):
        """
        @param upstream: the L{lhttp.interfaces.IUpstream} to call.
        @param clock: an L{twisted.internet.interfaces.IReactorTime}, to
            time requests.
        @param metrics: the L{lhttp.metrics.Metrics} the times go to.
        """
        self.upstream = upstream
        self._clock = clock
        self._metrics = metrics
        self._slots = {}

    def beforeRequest(self, connection, message):
        value = message.getHeader("upstream")
        if value is not None:
            self.upstream.check(value)

    def afterRequest(self, connection, message):
        value = message.getHeader("upstream")
        if value is None:
            return None
        request = self.upstream.check(value)
        sent = connection.getRelayed()
        slots = self._slots.get(connection)
        if slots is None:
            slots = self._slots[connection] = DeferredSemaphore(self.upstream.maxPending)
        args = (connection, request, sent, connection.getPeer(), slots)
        if slots.tokens:
            slots.acquire()
            self._start(*args)
            return None
        return slots.acquire().addCallback(lambda _: self._start(*args))

    def _start(self, connection, request, message, peer, slots):
        clock = self._clock
        d = self.upstream.call(request, peer, message)
        d.addBoth(_observed, self._metrics, clock, clock.seconds())
        d.addCallbacks(self._answered, self._refused,
                       callbackArgs=(connection, request, message),
                       errbackArgs=(connection, request, message))
        d.addBoth(lambda _: slots.release())

    def _answered(self, response, connection, request, message):
        if response is None:
            return
        headers = [("status", str(response.code)), ("command", message.command),
                   ("upstream", request.value)]
        if response.contentType and not re.search(r"[\x00\r\n]", response.contentType):
            headers.append(("content-type", response.contentType))
        connection.sendMessage(nodeMessage("upstream", headers, response.body))

    def _refused(self, failure, connection, request, message):
        error = failure.value if failure.check(LHTTPError) else BadGateway("the upstream request failed")
        connection.sendError(error, message.command, [("upstream", request.value)])

    def onClose(self, connection):
        self._slots.pop(connection, None)


def _observed(result, metrics, clock, started):
    """
    Time one upstream request into C{lhttp_upstream_request_seconds}: by
    the backend's status when it is kept (relaying on), C{ok} when it is
    not, C{timeout} or C{error} when the request failed.
    """
    if isinstance(result, UpstreamResponse):
        status = result.code
    elif result is None:
        status = "ok"
    elif result.check(GatewayTimeout):
        status = "timeout"
    else:
        status = "error"
    metrics.observeUpstream(clock.seconds() - started, status)
    return result
