"""
What a history engine answers (L{Recovery}), and a stream's epoch.
"""

import os
import time

import attr

def newEpoch():
    """
    A new epoch: different for every stream (re)creation or node start.
    """
    return "%x%s" % (int(time.time()), os.urandom(3).hex())


@attr.s(frozen=True, slots=True)
class Recovery:
    """
    What a channel's history holds after an offset.

    @ivar epoch: the stream's epoch now.
    @ivar complete: whether every message after the offset is among
        C{messages} (false: the offset is older than what is retained, or
        its epoch is not the stream's).
    @ivar messages: C{(offset, payload)} in offset order.
    @ivar top: the newest offset of the channel (0: none yet).
    """

    epoch = attr.ib()
    complete = attr.ib()
    messages = attr.ib()
    top = attr.ib()
    # The history could not be read (the engine is not ready): nothing is
    # known of what was missed, which the reply says.
    unavailable = attr.ib(default=False)
    # For L{IHistory.last}: older retained messages were left out (by the
    # count, C{maxBytes}, or C{before}'s page).
    more = attr.ib(default=False)
    # The offset of the channel's message before the first of C{messages}
    # (0: none, or not known).
    prev = attr.ib(default=0)
