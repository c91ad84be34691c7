"""
The names a node checks before it uses them: channel names, the NATS
subject prefix, a JetStream key-value bucket's name. A leaf: it imports
only L{lhttp.errors}, so L{lhttp.config} can check options with it.
"""

import re

from lhttp.errors import BadChannel

DEFAULT_MAX_CHANNEL_LENGTH = 256

# No spaces and no NATS wildcards; dots split tokens, none empty. (And
# printable: str.isprintable refuses every control, format, separator,
# private-use and unassigned code point but the ASCII space.)
_isChannel = re.compile(r"[^\s*>.\x00-\x1f\x7f]+(?:\.[^\s*>.\x00-\x1f\x7f]+)*").fullmatch


def checkChannel(name, maxLength=DEFAULT_MAX_CHANNEL_LENGTH):
    """
    @raise BadChannel: if C{name} is empty, longer than C{maxLength}, holds
        a space, a character that is not printable (controls, C1 controls,
        zero-width and bidi format characters, a BOM, line separators), a
        wildcard (C{*}, C{>}), or an empty dot-separated token.
    """
    if len(name) > maxLength:
        raise BadChannel(f"channel name longer than {maxLength} characters")
    if not _isChannel(name) or not name.isprintable():
        raise BadChannel(
            f"bad channel name {name[:64]!r}: no spaces, control or invisible characters, "
            "wildcards ('*', '>') or empty '.'-separated tokens"
        )
    return name


def subjectPrefix(prefix):
    """
    What every channel's NATS subject starts with under C{--nats-prefix}
    C{prefix} (C{""} without one).
    """
    return f"{prefix}." if prefix else ""


def checkPrefix(prefix):
    """
    A subject prefix is a channel-like name: dot-separated tokens, no
    wildcards. Subjects are then C{<prefix>.<channel>}.

    @raise ValueError: if it is not.
    """
    try:
        checkChannel(prefix)
    except Exception as e:
        raise ValueError(f"bad NATS subject prefix {prefix!r}: {e}") from None
    return prefix


_BUCKET = re.compile(r"[A-Za-z0-9_-]+").fullmatch


def checkBucket(name, flag="--presence-bucket"):
    """
    @raise ValueError: not a JetStream key-value bucket name (letters,
        digits, C{_} and C{-}).
    """
    if not isinstance(name, str) or not _BUCKET(name):
        raise ValueError(f"{flag} {name!r}: a bucket name is letters, digits, '_' and '-'")
    return name
