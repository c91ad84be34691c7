"""
How much a client that stopped reading may still be sent: a slow
consumer's accounting, apart from the socket so it can be tested alone.

The WebSocket protocol is its transport's push producer: the transport
says C{pauseProducing} when the kernel stops taking the client's bytes and
C{resumeProducing} when it takes them again. What is written while paused
waits in memory; past the limit the client is a slow consumer: it is told
once (the C{onExhausted} callback of L{SendBudget}, which may still write its close frame)
and everything after that is refused.
"""


class SendBudget:
    """
    @ivar limit: bytes that may wait, written while paused.
    @ivar paused: the kernel does not take this client's bytes.
    @ivar exhausted: the client is a slow consumer; nothing more is
        written.
    """

    __slots__ = ("limit", "paused", "unsent", "exhausted", "_onExhausted")

    def __init__(self, limit, onExhausted):
        """
        @param onExhausted: called once, with no arguments, when the limit
            is passed; writes made while it runs are admitted (the close
            frame saying why).
        """
        self.limit = limit
        self.paused = False
        self.unsent = 0
        self.exhausted = False
        self._onExhausted = onExhausted

    def pause(self):
        # The transport says this on every write while its buffer is full:
        # count from the first.
        if not self.paused:
            self.paused = True
            self.unsent = 0

    def resume(self):
        self.paused = False

    def admit(self, size):
        """
        @param size: the bytes about to be written.
        @return: whether to write them.
        """
        if self.exhausted:
            return False
        if self.paused:
            self.unsent += size
            if self.unsent > self.limit:
                self.paused = False
                self._onExhausted()
                self.exhausted = True
                return False
        return True
