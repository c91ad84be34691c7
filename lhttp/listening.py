"""
A node's listening ports as services that fail loudly: a port that cannot
be opened (in use, no permission, a bad socket path) stops C{twistd lhttp}
at startup with one line saying which and why, instead of a logged
traceback and a process that runs on without its socket.
"""

import sys

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger

log = Logger()


class ListenFailed(SystemExit, Exception):
    """
    A port could not be opened; the process should exit with status 1.

    It is a L{SystemExit}, so the interpreter exits with status 1 and no
    traceback. It is also an L{Exception}, so twistd's handling of a failed
    start runs on its way out: twistd removes its pid file and, when
    daemonizing, tells the waiting parent through its status pipe (the
    parent prints C{str()} of it and exits with 1).

    @ivar message: the one-line explanation.
    """

    def __init__(self, message):
        SystemExit.__init__(self, 1)
        self.message = message

    def __str__(self):
        return self.message


def describeError(error):
    """
    @return: the short reason of a failed listen, e.g. C{"address already
        in use"}, without Twisted's wrapping.
    """
    socketError = getattr(error, "socketError", error)
    text = getattr(socketError, "strerror", None) or str(error)
    return text[:1].lower() + text[1:]


def checkEndpoint(description):
    """
    Parse an endpoint description without listening, so a typo is reported
    while options are read.

    @raise ValueError: with a one-line reason, if it is not a server
        endpoint description (or names files that cannot be read).
    """
    try:
        # No reactor is needed to parse: the endpoint only keeps it.
        serverFromString(None, description)
    except Exception as error:
        raise ValueError(f"{description!r} is not a server endpoint: {describeError(error)}") from None


class ListeningService(StreamServerEndpointService):
    """
    Listens on one endpoint; failing to is fatal, and reported in one line.

    twistd calls L{privilegedStartService} before the reactor runs, so the
    failure surfaces as L{ListenFailed} out of twistd's startup, for the
    endpoints that listen at once (C{tcp}, C{ssl}, C{unix}).

    @ivar description: the endpoint description, as the operator wrote it.
    @ivar port: the L{twisted.internet.interfaces.IListeningPort} once
        listening, else L{None}.
    """

    def __init__(self, description, endpoint, factory, stderr=None):
        """
        @param description: the endpoint description, for messages.
        @param endpoint: the L{twisted.internet.interfaces.IStreamServerEndpoint}.
        @param factory: the protocol factory to serve.
        @param stderr: where the one-line error goes; default: the
            process's original standard error (twistd redirects
            C{sys.stderr} into its log).
        """
        StreamServerEndpointService.__init__(self, endpoint, factory)
        self.description = description
        self.port = None
        self._stderr = stderr
        self._waiting = []

    def privilegedStartService(self):
        """
        Listen now; raise L{ListenFailed} if the endpoint cannot.
        """
        self._raiseSynchronously = True
        try:
            StreamServerEndpointService.privilegedStartService(self)
        except Exception as error:
            raise self._failed(error) from None
        self._waitingForPort.addCallback(self._listening)

    def _failed(self, error):
        reason = describeError(error)
        log.critical(
            "Cannot listen on {endpoint}: {reason}; exiting", endpoint=self.description, reason=reason
        )
        message = f"lhttp: cannot listen on {self.description}: {reason}"
        stderr = self._stderr if self._stderr is not None else sys.__stderr__
        if stderr is not None:
            stderr.write(message + "\n")
            stderr.flush()
        return ListenFailed(message)

    def _listening(self, port):
        self.port = port
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(port)
        return port

    def whenListening(self):
        """
        @return: a L{Deferred} that fires with the listening port once
            there is one.
        """
        if self.port is not None:
            return succeed(self.port)
        d = Deferred()
        self._waiting.append(d)
        return d
