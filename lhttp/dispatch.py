"""
Dispatch: each incoming message runs through the header filters and the
processor registered for its command, one message of a connection at a
time.

The pipeline for a message (SPEC section 2) is::

    parse (the node's ingress) -> filters' beforeRequest
          -> processor (onOpen once, onMessage) -> filters' afterRequest

Steps run synchronously; a step that returns a L{Deferred} pauses that
connection's L{Pipeline} (later messages wait in its queue) until it
fires, so per-connection order holds without a Deferred on the fast path.

The queue is bounded: once it holds more than C{maxQueuedBytes} bytes or
C{maxQueuedMessages} messages, the node stops reading from that client's
socket (TCP pushes back on the client) until the queue is down to half.

A message whose command has no processor and that carries none of the
headers the node acts on (the reserved ones and those the filters name)
would do nothing: it gets a 404 error reply.
"""

from collections import deque

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from lhttp.errors import LHTTPError, NoProcessor, errorFor
from lhttp.interfaces import IHeaderFilter, IProcessor
from lhttp.processor import overrides


class Pipeline:
    """
    One connection's place in the dispatcher: the messages it sent that
    wait their turn, and what is under way.

    @ivar connection: the L{lhttp.connection.Connection}.
    @ivar queue: C{(payload, isBinary)} waiting their turn.
    @ivar busy: a step returned a L{Deferred} that has not fired.
    """

    __slots__ = (
        "connection", "queue", "queuedBytes", "busy", "draining", "readingPaused",
        "opened", "_dispatcher", "_reader", "_onClosed",
    )

    def __init__(self, dispatcher, connection, reader, onClosed):
        self.connection = connection
        self.queue = deque()
        self.queuedBytes = 0
        self.busy = False
        self.draining = False
        self.readingPaused = False
        # Processors whose onOpen ran on this connection.
        self.opened = []
        self._dispatcher = dispatcher
        self._reader = reader
        self._onClosed = onClosed

    def receive(self, data, isBinary=False):
        """
        One WebSocket message from the client: queue it, handle what can
        be handled, stop reading past the queue's bounds.
        """
        queue = self.queue
        queue.append((data, isBinary))
        self.queuedBytes += len(data)
        dispatcher = self._dispatcher
        if not self.busy and not self.draining:
            dispatcher._drain(self)
        if queue and not self.readingPaused and (
            self.queuedBytes > dispatcher.maxQueuedBytes
            or len(queue) > dispatcher.maxQueuedMessages
        ):
            self.readingPaused = True
            self._reader.pauseReading()

    def drained(self):
        """
        The queue shrank: read again once it is down to half its bounds.
        """
        dispatcher = self._dispatcher
        if self.readingPaused and (
            self.queuedBytes <= dispatcher.maxQueuedBytes // 2
            and len(self.queue) <= dispatcher.maxQueuedMessages // 2
        ):
            self.readingPaused = False
            if self.connection.connected:
                self._reader.resumeReading()

    def stop(self):
        """
        Nothing more is handled or sent (the client is being dropped).
        """
        self.connection.connected = False

    def close(self):
        """
        The WebSocket closed: leave every channel, run the close hooks.
        """
        self.stop()
        self.queue.clear()
        self.queuedBytes = 0
        self._dispatcher._closed(self)
        self._onClosed(self.connection)


class Dispatcher:
    """
    The registry of processors (by command) and header filters, and the
    pipeline that runs them.
    """

    log = Logger()

    def __init__(self, parse, metrics, maxQueuedBytes, maxQueuedMessages):
        """
        @param parse: the node's ingress: C{parse(data)} turns a client's
            bytes into a L{lhttp.codec.Message}, with the node's limits, or
            raises an L{LHTTPError}.
        @param metrics: the L{lhttp.metrics.Metrics} that counts connections.
        @param maxQueuedBytes: bytes of messages one connection may have
            waiting before the node stops reading from it.
        @param maxQueuedMessages: the same, in messages.
        """
        self.metrics = metrics
        self.maxQueuedBytes = maxQueuedBytes
        self.maxQueuedMessages = maxQueuedMessages
        self._parse = parse
        self._processors = {}
        self._builtins = set()
        self._filters = []
        self._pipelines = {}
        # Connection -> its Pipeline, while open.
        self._open = {}
        self._known = frozenset()

    # The registry.

    def addProcessor(self, command, processor, builtin=False):
        """
        Register C{processor} for messages whose command is C{command}.

        @param builtin: it is the node's own (C{history}...): an
            application's processor for the command replaces it.
        @raise TypeError: if it does not provide L{IProcessor}.
        @raise ValueError: if the command has a processor already.
        """
        if not IProcessor.providedBy(processor):
            raise TypeError(f"{processor!r} does not provide IProcessor")
        if command in self._processors and command not in self._builtins:
            raise ValueError(f"command {command!r} already has a processor")
        self._builtins.discard(command)
        if builtin:
            self._builtins.add(command)
        self._processors[command] = processor
        self._pipelines.clear()

    def getProcessor(self, command):
        return self._processors.get(command)

    @property
    def processors(self):
        """
        @return: a L{dict} of command to processor.
        """
        return dict(self._processors)

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
        self._known = frozenset(
            name.lower() for f in self._filters for name in getattr(f, "headers", ())
        )
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
            # Filters first, so one may refuse (an authentication filter's
            # 401) before anything else is said about the message.
            steps = [f.beforeRequest for f in self._filters if overrides(f, "beforeRequest")]
            processor = self._processors.get(key)
            if processor is not None:
                steps.append(_opener(processor, self._open))
                steps.append(processor.onMessage)
            else:
                steps.append(self._requireKnownHeader)
            steps.extend(f.afterRequest for f in self._filters if overrides(f, "afterRequest"))
            steps = self._pipelines[key] = tuple(steps)
        return steps

    def _requireKnownHeader(self, connection, message):
        known = self._known
        for name, _ in message.headers:
            if name.lower() in known:
                return
        raise NoProcessor(
            f"no processor handles {message.command!r} here, and the message has none of "
            "the headers the server acts on (subscribe, publish, unsubscribe, upstream...)"
        )

    # Connections.

    def open(self, connection, reader, onClosed):
        """
        A connection opened: run the filters' C{onOpen}.

        @param reader: what the pipeline pauses and resumes reading from
            (C{pauseReading}, C{resumeReading}).
        @param onClosed: called with the connection once it closed.
        @rtype: L{Pipeline}
        """
        self.metrics.connections += 1
        for headerFilter in self._filters:
            self._guard(connection, headerFilter.onOpen)
        pipeline = self._open[connection] = Pipeline(self, connection, reader, onClosed)
        return pipeline

    def _closed(self, pipeline):
        self.metrics.connections -= 1
        connection = pipeline.connection
        self._open.pop(connection, None)
        connection.unsubscribeAll()
        for processor in pipeline.opened:
            self._guard(connection, processor.onClose)
        del pipeline.opened[:]
        for headerFilter in self._filters:
            self._guard(connection, headerFilter.onClose)

    # The pipeline.

    def _drain(self, pipeline):
        queue = pipeline.queue
        connection = pipeline.connection
        pipeline.draining = True
        try:
            while queue and not pipeline.busy and connection.connected:
                data, isBinary = queue.popleft()
                pipeline.queuedBytes -= len(data)
                self._handle(pipeline, data, isBinary)
        finally:
            pipeline.draining = False
        pipeline.drained()

    def _handle(self, pipeline, data, isBinary):
        connection = pipeline.connection
        try:
            message = self._parse(data)
        except LHTTPError as error:
            connection.begin(None, isBinary)
            connection.sendError(error)
            connection.end()
            return
        connection.begin(message, isBinary)
        self._run(pipeline, message, self._pipeline(message.command), 0)

    def _run(self, pipeline, message, steps, index):
        connection = pipeline.connection
        while index < len(steps):
            step = steps[index]
            index += 1
            try:
                result = step(connection, message)
            except Exception:
                self._failed(pipeline, Failure())
                return
            # Most steps return None; isinstance on Deferred (an Awaitable,
            # so an ABC check) is only worth paying for anything else.
            if result is not None and isinstance(result, Deferred):
                pipeline.busy = True
                result.addCallbacks(
                    self._resume,
                    self._resumeFailed,
                    callbackArgs=(pipeline, message, steps, index),
                    errbackArgs=(pipeline,),
                )
                return
        connection.end()

    def _resume(self, ignored, pipeline, message, steps, index):
        pipeline.busy = False
        if not pipeline.connection.connected:
            # It closed while the step was under way (a credential or a
            # subscription token being checked): nothing more of this
            # message happens, above all no subscription after its close.
            pipeline.connection.end()
            return
        self._run(pipeline, message, steps, index)
        if not pipeline.busy and not pipeline.draining:
            self._drain(pipeline)

    def _resumeFailed(self, failure, pipeline):
        pipeline.busy = False
        self._failed(pipeline, failure)
        if not pipeline.draining:
            self._drain(pipeline)

    def _failed(self, pipeline, failure):
        connection = pipeline.connection
        error = errorFor(failure)
        if not isinstance(failure.value, LHTTPError):
            self.log.failure(
                "Processing a message from {peer} failed",
                failure,
                peer=connection.getPeer(),
            )
        connection.sendError(error)
        connection.end()
        if error.closeCode is not None:
            # The error ends the connection (a failed authentication):
            # the reply says why, the close code tells the client's SDK.
            connection.close(error.closeCode, error.reason)

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


def _opener(processor, pipelines):
    """
    A pipeline step that runs C{processor.onOpen} the first time a
    connection sends it a message.

    @param pipelines: the dispatcher's connection -> L{Pipeline}.
    """

    def openOnce(connection, message):
        opened = pipelines[connection].opened
        if processor not in opened:
            opened.append(processor)
            return processor.onOpen(connection)

    return openOnce
