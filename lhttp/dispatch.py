"""
Dispatch: each incoming message runs through the header filters and the
processor registered for its command, one message of a connection at a time.

The pipeline for a message (SPEC section 2) is::

    parse -> filters' beforeRequest -> processor (onOpen once, onMessage)
          -> filters' afterRequest

Steps run synchronously; a step that returns a L{Deferred} pauses that
connection's pipeline (later messages wait in its queue) until it fires, so
per-connection order holds without a Deferred on the fast path.

The queue is bounded: once it holds more than C{maxQueuedBytes} bytes or
C{maxQueuedMessages} messages, the node stops reading from that client's
socket (TCP pushes back on the client) until the queue is down to half.
"""

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from lhttp.codec import parse
from lhttp.errors import LHTTPError, errorFor
from lhttp.interfaces import IHeaderFilter, IProcessor
from lhttp.metrics import UNREGISTERED, Metrics

DEFAULT_MAX_QUEUED_BYTES = 1024 * 1024
DEFAULT_MAX_QUEUED_MESSAGES = 1000


@implementer(IProcessor)
class Processor:
    """
    A base for processors: every hook does nothing, override what you need.
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
    A base for header filters: every hook does nothing, override what you
    need. Hooks left as they are cost nothing per message.
    """

    def onOpen(self, connection):
        pass

    def beforeRequest(self, connection, message):
        pass

    def afterRequest(self, connection, message):
        pass

    def onClose(self, connection):
        pass


def _overridden(obj, name):
    """
    Whether C{obj} has a hook C{name} that does more than L{HeaderFilter}'s.
    """
    return getattr(type(obj), name, None) is not getattr(HeaderFilter, name)


class Dispatcher:
    """
    The registry of processors (by command) and header filters, and the
    pipeline that runs them.
    """

    log = Logger()

    def __init__(
        self, metrics=None, maxQueuedBytes=DEFAULT_MAX_QUEUED_BYTES,
        maxQueuedMessages=DEFAULT_MAX_QUEUED_MESSAGES,
    ):
        """
        @param metrics: the L{lhttp.metrics.Metrics} that counts connections
            and messages (default: its own).
        @param maxQueuedBytes: bytes of messages one connection may have
            waiting (while an earlier one waits for a Deferred) before the
            node stops reading from it.
        @param maxQueuedMessages: the same, in messages.
        """
        self.metrics = metrics if metrics is not None else Metrics()
        self.maxQueuedBytes = maxQueuedBytes
        self.maxQueuedMessages = maxQueuedMessages
        self._processors = {}
        self._filters = []
        self._pipelines = {}

    def addProcessor(self, command, processor):
        """
        Register C{processor} for messages whose command is C{command}.

        @raise TypeError: if it does not provide L{IProcessor}.
        @raise ValueError: if the command has a processor already.
        """
        if not IProcessor.providedBy(processor):
            raise TypeError(f"{processor!r} does not provide IProcessor")
        if command in self._processors:
            raise ValueError(f"command {command!r} already has a processor")
        self._processors[command] = processor
        self._pipelines.clear()

    def getProcessor(self, command):
        return self._processors.get(command)

    def addFilter(self, headerFilter, index=None):
        """
        Add a header filter; hooks run in list order.

        @param index: where to insert it (default: at the end).
        """
        if not IHeaderFilter.providedBy(headerFilter):
            raise TypeError(f"{headerFilter!r} does not provide IHeaderFilter")
        if index is None:
            self._filters.append(headerFilter)
        else:
            self._filters.insert(index, headerFilter)
        self._pipelines.clear()

    @property
    def filters(self):
        return list(self._filters)

    def _pipeline(self, command):
        # Cached per registered command, and once (under None) for every
        # command without a processor: clients choose commands, so caching
        # each would let them grow this dict without bound.
        key = command if command in self._processors else None
        steps = self._pipelines.get(key)
        if steps is None:
            steps = [f.beforeRequest for f in self._filters if _overridden(f, "beforeRequest")]
            processor = self._processors.get(key)
            if processor is not None:
                steps.append(_opener(processor))
                steps.append(processor.onMessage)
            steps.extend(f.afterRequest for f in self._filters if _overridden(f, "afterRequest"))
            steps = self._pipelines[key] = tuple(steps)
        return steps

    # Connection events.

    def connectionOpened(self, connection):
        self.metrics.connections += 1
        for headerFilter in self._filters:
            self._guard(connection, headerFilter.onOpen)

    def messageReceived(self, connection, data, isBinary=False):
        """
        Queue one WebSocket message's payload and handle what can be handled.
        """
        queue = connection.queue
        queue.append((data, isBinary))
        connection.queuedBytes += len(data)
        if not connection.busy and not connection.draining:
            self._drain(connection)
        if queue and not connection.readingPaused and (
            connection.queuedBytes > self.maxQueuedBytes or len(queue) > self.maxQueuedMessages
        ):
            connection.readingPaused = True
            connection.transport.pauseReading()

    def connectionClosed(self, connection):
        self.metrics.connections -= 1
        connection.connected = False
        connection.queue.clear()
        connection.queuedBytes = 0
        connection.unsubscribeAll()
        for processor in connection.opened:
            self._guard(connection, processor.onClose)
        del connection.opened[:]
        for headerFilter in self._filters:
            self._guard(connection, headerFilter.onClose)

    # The pipeline.

    def _drain(self, connection):
        queue = connection.queue
        connection.draining = True
        try:
            while queue and not connection.busy and connection.connected:
                data, isBinary = queue.popleft()
                connection.queuedBytes -= len(data)
                self._handle(connection, data, isBinary)
        finally:
            connection.draining = False
        if connection.readingPaused and (
            connection.queuedBytes <= self.maxQueuedBytes // 2
            and len(queue) <= self.maxQueuedMessages // 2
        ):
            connection.readingPaused = False
            if connection.connected:
                connection.transport.resumeReading()

    def _handle(self, connection, data, isBinary):
        try:
            server = connection.server
            message = parse(data, server.maxHeaders, server.maxHeaderLength)
        except LHTTPError as error:
            self.metrics.messageReceived(None)
            connection.begin(None, isBinary)
            connection.sendError(error)
            connection.end()
            return
        command = message.command
        self.metrics.messageReceived(command if command in self._processors else UNREGISTERED)
        connection.begin(message, isBinary)
        self._run(connection, message, self._pipeline(command), 0)

    def _run(self, connection, message, steps, index):
        while index < len(steps):
            step = steps[index]
            index += 1
            try:
                result = step(connection, message)
            except Exception:
                self._failed(connection, Failure())
                return
            # Most steps return None; isinstance on Deferred (an Awaitable,
            # so an ABC check) is only worth paying for anything else.
            if result is not None and isinstance(result, Deferred):
                connection.busy = True
                result.addCallbacks(
                    self._resume,
                    self._resumeFailed,
                    callbackArgs=(connection, message, steps, index),
                    errbackArgs=(connection,),
                )
                return
        connection.end()

    def _resume(self, ignored, connection, message, steps, index):
        connection.busy = False
        self._run(connection, message, steps, index)
        if not connection.busy and not connection.draining:
            self._drain(connection)

    def _resumeFailed(self, failure, connection):
        connection.busy = False
        self._failed(connection, failure)
        if not connection.draining:
            self._drain(connection)

    def _failed(self, connection, failure):
        error = errorFor(failure)
        if not isinstance(failure.value, LHTTPError):
            self.log.failure(
                "Processing a message from {peer} failed",
                failure,
                peer=connection.getPeer(),
            )
        connection.sendError(error)
        connection.end()

    def _guard(self, connection, hook):
        """
        Run an open/close hook; user code raising is logged, never fatal.
        """
        try:
            result = hook(connection)
        except Exception:
            self.log.failure("{hook} failed", hook=hook)
            return
        if isinstance(result, Deferred):
            result.addErrback(lambda f: self.log.failure("{hook} failed", f, hook=hook))


def _opener(processor):
    """
    A pipeline step that runs C{processor.onOpen} the first time a
    connection sends it a message.
    """

    def openOnce(connection, message):
        if processor not in connection.opened:
            connection.opened.append(processor)
            return processor.onOpen(connection)

    return openOnce
