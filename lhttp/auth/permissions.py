"""
Who may do what on which channel: the C{--channel} grammar
(C{PATTERN=ACTION:WHO[|WHO...][,ACTION:WHO...]}), the decision for one
connection, one channel and one action, and the 403 a refusal is.

A leaf, like L{lhttp.history.policy}: it imports only L{lhttp.patterns} and
L{lhttp.errors}, so L{lhttp.config} can check options with it.

The decision (docs/security.rst, "Channel permissions"):

  1. the connection's capabilities (C{caps} of its credential): for a
     channel any of their patterns matches, the union of their actions
     decides, and the rules are not consulted;
  2. else the first rule whose pattern matches the channel: the action is
     allowed if one of the rule's C{WHO}s for it holds;
  3. else: refused (deny by default).
"""

import unicodedata
from functools import lru_cache

import attr

from lhttp.errors import ChannelForbidden
from lhttp.patterns import PatternTable, checkPattern, matches

ACTIONS = ("sub", "pub", "history", "presence")
WHOS = ("anyone", "users", "members", "owner", "token", "nobody")

# The pattern token that matches one channel token and names its owner.
SUB_TOKEN = "{sub}"

GRAMMAR = "PATTERN=ACTION:WHO[|WHO...][,ACTION:WHO...] (e.g. 'user.{sub}=sub:owner,pub:nobody')"

# Never in a user id that is a member or an owner: the channel name's own
# separators (so an id cannot name two members, or a member and a
# channel), the wildcards, and what cannot be told apart when read.
_SEPARATORS = frozenset("#,.*>")


@lru_cache(maxsize=10000)
def validUser(user):
    """
    Whether C{user} may be a member of a user-limited channel or the owner
    of a channel: a non-empty L{str} without C{#}, C{,}, C{.}, C{*}, C{>},
    whitespace or control characters. Ids are compared exactly afterwards
    (no case folding, no Unicode normalisation), so a look-alike is
    another user.
    """
    if not isinstance(user, str) or not user:
        return False
    for c in user:
        if c in _SEPARATORS or c.isspace() or unicodedata.category(c) == "Cc":
            return False
    return True


def membersOf(channel):
    """
    The members a user-limited channel names: the comma-separated ids
    after the last C{#} (C{dialog.#alice,bob}: alice and bob).

    @rtype: L{tuple} of L{str}, empty if the channel has no C{#}.
    """
    head, sep, tail = channel.rpartition("#")
    if not sep:
        return ()
    return tuple(tail.split(","))


@attr.s(frozen=True, slots=True)
class Rule:
    """
    One C{--channel} rule.

    @ivar pattern: its NATS-style pattern (with at most one C{{sub}} token).
    @ivar grants: action -> L{frozenset} of the C{WHO}s it allows; an
        action not listed: nobody.
    @ivar text: the rule as written.
    @ivar ownerToken: the index of the C{{sub}} token in the pattern, or
        L{None}.
    """

    pattern = attr.ib()
    grants = attr.ib()
    text = attr.ib(eq=False, default=None)
    ownerToken = attr.ib(eq=False, init=False)

    @ownerToken.default
    def _ownerToken(self):
        tokens = self.pattern.split(".")
        return tokens.index(SUB_TOKEN) if SUB_TOKEN in tokens else None


def parseRule(text, flag="--channel"):
    """
    Read one C{--channel} value, e.g.
    C{user.{sub}=sub:owner|token,pub:nobody,history:owner}.

    @rtype: L{Rule}
    @raise ValueError: a malformed value, naming the bad part.
    """
    pattern, sep, grantsText = text.partition("=")
    pattern = pattern.strip()
    if not sep or not pattern or not grantsText.strip():
        raise ValueError(f"{flag} wants {GRAMMAR}, not {text!r}")
    checkPattern(pattern, flag)
    tokens = pattern.split(".")
    if tokens.count(SUB_TOKEN) > 1:
        raise ValueError(f"{flag} {text!r}: a pattern has at most one {SUB_TOKEN} token")
    if any(SUB_TOKEN in t and t != SUB_TOKEN for t in tokens) or any(
        ("{" in t or "}" in t) and t != SUB_TOKEN for t in tokens
    ):
        raise ValueError(f"{flag} {text!r}: {SUB_TOKEN} is a whole token (user.{SUB_TOKEN}.>)")
    grants = {}
    for item in grantsText.split(","):
        action, colon, whos = item.partition(":")
        action = action.strip()
        if not colon or not action or not whos.strip():
            raise ValueError(f"{flag} {text!r}: {item.strip()!r} is not ACTION:WHO[|WHO...]")
        if action not in ACTIONS:
            raise ValueError(
                f"{flag} {text!r}: unknown action {action!r} (one of {', '.join(ACTIONS)})"
            )
        if action in grants:
            raise ValueError(f"{flag} {text!r}: action {action!r} is given twice")
        names = [w.strip() for w in whos.split("|")]
        for who in names:
            if who not in WHOS:
                raise ValueError(
                    f"{flag} {text!r}: unknown WHO {who!r} for {action!r} (one of {', '.join(WHOS)})"
                )
        if "owner" in names and SUB_TOKEN not in tokens:
            raise ValueError(
                f"{flag} {text!r}: 'owner' needs a {SUB_TOKEN} token in the pattern (user.{SUB_TOKEN})"
            )
        grants[action] = frozenset(names) - {"nobody"}
    return Rule(pattern, grants, text)


def checkRules(rules):
    """
    C{Config(channels=...)}: each a L{Rule} or its text.

    @return: a L{tuple} of L{Rule}s.
    @raise ValueError: a malformed one.
    """
    return tuple(r if isinstance(r, Rule) else parseRule(r) for r in rules)


class ChannelPermissions:
    """
    The node's rules and the decision they make.

    @ivar rules: the L{Rule}s, in order (the first matching decides).
    """

    def __init__(self, rules=()):
        self.rules = checkRules(rules)
        # {sub} matches one token, like *: which rule decides is one
        # compiled match per channel not asked recently (lhttp.patterns).
        self._table = PatternTable(
            [".".join("*" if t == SUB_TOKEN else t for t in r.pattern.split("."))
             for r in self.rules],
            self.rules,
        )

    def ruleFor(self, channel):
        """
        @return: the first L{Rule} matching C{channel}, or L{None}.
        """
        return self._table.lookup(channel)

    def allows(self, identity, channel, action, hasToken=False):
        """
        Whether C{identity} may do C{action} on C{channel}.

        @param identity: the connection's L{lhttp.auth.identity.Identity}.
        @param action: one of L{ACTIONS}.
        @param hasToken: the connection showed a valid subscription token
            for this exact channel (unexpired).
        """
        caps = identity.caps
        if caps is not None:
            allowed = None
            for patterns, actions in caps:
                if any(matches(p, channel) for p in patterns):
                    allowed = allowed or action in actions
            if allowed is not None:
                return allowed
        rule = self._table.lookup(channel)
        if rule is None:
            return False
        whos = rule.grants.get(action)
        if not whos:
            return False
        if "anyone" in whos:
            return True
        user = identity.user
        if "users" in whos and user is not None:
            return True
        if "token" in whos and hasToken:
            return True
        if not validUser(user):
            return False
        if "members" in whos and user in membersOf(channel):
            return True
        if "owner" in whos:
            tokens = channel.split(".", rule.ownerToken + 1)
            if tokens[rule.ownerToken] == user:
                return True
        return False

    def require(self, identity, channels, action, hasToken=None):
        """
        Refuse unless C{identity} may do C{action} on every one of
        C{channels}.

        @param hasToken: a callable, channel -> whether the connection
            holds a valid subscription token for it; default: none held.
        @raise ChannelForbidden: naming the first channel refused.
        """
        for channel in channels:
            if not self.allows(identity, channel, action,
                               hasToken is not None and hasToken(channel)):
                raise ChannelForbidden(channel, action)
