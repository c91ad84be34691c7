"""
Channel names (SPEC section 6, issue 12): what a name may hold and how a
header's list is split.
"""

import pytest

from lhttp.channels import channelList, checkChannel
from lhttp.errors import BadChannel

INVISIBLE = {
    "C1 control": "\u0085",
    "C1 CSI": "\u009b",
    "zero-width space": "\u200b",
    "zero-width joiner": "\u200d",
    "left-to-right mark": "\u200e",
    "right-to-left override": "\u202e",
    "first strong isolate": "\u2068",
    "BOM": "\ufeff",
    "line separator": "\u2028",
    "paragraph separator": "\u2029",
    "no-break space": "\u00a0",
    "ideographic space": "\u3000",
    "soft hyphen": "\u00ad",
    "private use": "\ue000",
}


@pytest.mark.parametrize("what", sorted(INVISIBLE))
def test_invisibleCharactersRefused(what):
    with pytest.raises(BadChannel):
        checkChannel(f"room{INVISIBLE[what]}42")


@pytest.mark.parametrize("name", ["room42", "chat.room-1", "комната", "房间", "café_☕", "a/b:c"])
def test_printableNamesTaken(name):
    assert checkChannel(name) == name


def test_listsSplitOnASCIISpaceAndTabOnly():
    assert channelList("a \t b\tc") == ["a", "b", "c"]
    long = " ".join(f"channel{i}" for i in range(200))
    assert len(long) > 1024 and channelList(long)[-1] == "channel199"
    # Another kind of space does not split: it is part of a (bad) name.
    for space in ("\u00a0", "\u2028", "\u3000", "\u0085", "\x0b", "\x0c"):
        with pytest.raises(BadChannel):
            channelList(f"a{space}b")
        with pytest.raises(BadChannel):
            channelList(f"a{space}b " + long)
