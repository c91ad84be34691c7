"""
The C{lhttp} command: listen, send, publish, an interactive shell,
server-side control of a user's connections, and the cluster's figures
(C{top}, from a node's C{--admin-listen} port)::

    lhttp listen ws://127.0.0.1:8081/ room lobby
    lhttp send ws://127.0.0.1:8081/ 'LHTTP/1.0 echo\\r\\n\\r\\nhi'
    lhttp publish http://127.0.0.1:8081/publish room 'hello' --header nick:ops
    lhttp shell ws://127.0.0.1:8081/
    lhttp disconnect http://127.0.0.1:8081/ alice
    lhttp unsubscribe http://127.0.0.1:8081/ alice room.1
    lhttp listen --token "$JWT" wss://chat.example/ user.alice
    lhttp top http://127.0.0.1:9101/

C{--token} (or the C{LHTTP_TOKEN} environment variable) sends C{LHTTP/1.0
connect} with the token first, for a node that authenticates; a refused
token is one line on standard error and exit status 1.

Output: one received message per line on standard output, flushed per line,
in the I{line format}: the message's bytes with C{\\\\}, C{\\r}, C{\\n} and
C{\\t} escaped, any other ASCII control or non-UTF-8 byte as C{\\xHH}, and
the characters a terminal acts on or does not show (C1 controls, line and
paragraph separators, bidi embeddings, overrides and isolates, zero-width
characters, the BOM: L{INVISIBLE}) as C{\\uHHHH} (C{\\UHHHHHHHH} above
U+FFFF). A message cannot move the cursor, fake a line or reorder what is
shown. C{send} takes the same escapes, so a line that C{listen} printed
can be sent again, byte for byte. With C{--json}, one JSON object per line
instead: C{{"command": ..., "headers": [[name, value], ...], "body":
"..."}} (C{"bodyBase64"} in place of C{"body"} when the body is not UTF-8),
the same characters written as JSON C{\\u} escapes. Status lines
(connected, subscribed, disconnected) go to standard error, starting with
C{* }; problems start with C{! }.
"""

import argparse
import base64
import json
import os
import re
import sys
from importlib import metadata

from twisted.application.internet import backoffPolicy
from twisted.internet import defer, stdio, task
from twisted.protocols.basic import LineReceiver

from lhttp.client import ErrorReply, NotConnected, ReconnectingClient, Unauthorized, connect
from lhttp.codec import Message, parse
from lhttp.errors import LHTTPError
from lhttp.word import isNodeWord

TOKEN_VARIABLE = "LHTTP_PUBLISH_TOKEN"
# The connection token (JWT) of listen, send and shell.
CONNECT_TOKEN_VARIABLE = "LHTTP_TOKEN"

EXIT_OK, EXIT_FAILED, EXIT_UNREACHABLE, EXIT_UNKNOWN = 0, 1, 2, 3

# Seconds C{send} waits for the answer to an upstream request: a node
# sends the backend's response back only with --upstream-relay, so with
# relaying off a successful request gets no answer at all.
DEFAULT_UPSTREAM_WAIT = 5.0

# What a terminal acts on or does not show, as regular expression ranges:
# C1 controls; Unicode's line and paragraph separators; and every format
# character (category Cf, Unicode 15): soft hyphen, zero-width space and
# joiners, left-to-right and right-to-left marks, bidi embeddings,
# overrides and isolates, invisible operators, the BOM, tag characters.
INVISIBLE = (
    "\x80-\x9f\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e"
    "\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb"
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f"
)

_ESCAPES = {"\\": "\\\\", "\r": "\\r", "\n": "\\n", "\t": "\\t"}
_needsEscape = re.compile(f"[\\\\\x00-\x1f\x7f{INVISIBLE}]|[\udc80-\udcff]")
_unsafeText = re.compile(f"[\x00-\x1f\x7f{INVISIBLE}]")
_unsafeJSON = re.compile(f"[\x7f{INVISIBLE}]")
_escaped = re.compile(rb"\\(x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8}|[\\rnt])")
_UNESCAPES = {b"\\": b"\\", b"r": b"\r", b"n": b"\n", b"t": b"\t"}


def _escapeOne(match):
    char = match.group()
    if char in _ESCAPES:
        return _ESCAPES[char]
    code = ord(char)
    if code < 0x80:
        return f"\\x{code:02x}"
    if 0xDC80 <= code <= 0xDCFF:
        # A byte that is not UTF-8, kept by surrogateescape.
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _escapeJSON(match):
    data = match.group().encode("utf-16-be")
    return "".join(f"\\u{data[i]:02x}{data[i + 1]:02x}" for i in range(0, len(data), 2))


def escape(data):
    """
    @param data: L{bytes}.
    @return: one line of text (L{str}) that L{unescape} turns back into
        C{data}, with nothing a terminal would act on or hide: see the
        module's line format.
    """
    return _needsEscape.sub(_escapeOne, data.decode("utf-8", "surrogateescape"))


def _unescapeOne(match):
    code = match.group(1)
    if code.startswith(b"x"):
        return bytes([int(code[1:], 16)])
    if code[:1] in b"uU":
        point = int(code[1:], 16)
        if 0xD800 <= point <= 0xDFFF or point > 0x10FFFF:
            return match.group()
        return chr(point).encode("utf-8")
    return _UNESCAPES[code]


def unescape(text):
    """
    @param text: a line typed in a shell: C{\\r}, C{\\n}, C{\\t}, C{\\\\}
        and C{\\xHH} are read as the bytes they name, C{\\uHHHH} and
        C{\\UHHHHHHHH} as the UTF-8 bytes of that character; any other
        backslash (surrogates and code points past U+10FFFF included)
        stays as it is.
    @return: L{bytes}.
    """
    return _escaped.sub(_unescapeOne, text.encode("utf-8", "surrogateescape"))


def formatMessage(message, asJSON=False):
    """
    @return: one line (no newline) for a received L{Message}.
    """
    if not asJSON:
        return escape(message.toBytes())
    document = {"command": message.command, "headers": [list(h) for h in message.headers]}
    try:
        document["body"] = message.body.decode("utf-8")
    except UnicodeDecodeError:
        document["bodyBase64"] = base64.b64encode(message.body).decode("ascii")
    # Such characters can only be inside JSON strings, where a \\u escape
    # means the same.
    return _unsafeJSON.sub(_escapeJSON, json.dumps(document, ensure_ascii=False))


def terminalSafe(text):
    """
    @return: C{text} (a status line, which may quote the server) with
        controls and invisible characters escaped as in the line format;
        backslashes stay as they are.
    """
    return _unsafeText.sub(_escapeOne, text)


def parseHeader(text):
    name, colon, value = text.partition(":")
    if not colon or not name.strip():
        raise argparse.ArgumentTypeError(f"a header is NAME:VALUE, not {text!r}")
    return (name.strip(), value.strip())


class Output:
    """
    Where the command writes: messages to C{out}, status lines to C{err},
    each line flushed at once so a pipe reader sees it.
    """

    def __init__(self, out, err, asJSON=False):
        self._out = out
        self._err = err
        self.asJSON = asJSON
        self.errors = 0
        self.firstError = None

    def message(self, message):
        if message.command == "error" and isNodeWord(message):
            self.errors += 1
            if self.firstError is None:
                self.firstError = message
        self._out.write(formatMessage(message, self.asJSON) + "\n")
        self._out.flush()

    def errorSummary(self):
        """
        @return: one line about the error replies that arrived, quoting the
            first: the command it answers, its status, reason and text.
        """
        error = self.firstError
        command = error.getHeader("command")
        text = "an error reply" if self.errors == 1 else f"{self.errors} error replies, the first"
        if command is not None:
            text += f" to {command}"
        text += f": {error.getHeader('status', '?')} {error.getHeader('reason', '')}".rstrip()
        detail = error.body.decode("utf-8", "replace")
        if detail:
            text += f": {detail}"
        return text

    def status(self, text):
        self._err.write(f"* {terminalSafe(text)}\n")
        self._err.flush()

    def problem(self, text):
        self._err.write(f"! {terminalSafe(text)}\n")
        self._err.flush()


def _connectToken(args):
    """
    @return: the connection token of C{--token} or C{LHTTP_TOKEN}, or L{None}.
    """
    return args.token or os.environ.get(CONNECT_TOKEN_VARIABLE) or None


def refusal(error):
    """
    @return: one line saying why the node refused the connection's
        token (an L{ErrorReply} to C{connect}, an L{Unauthorized} close),
        or L{None} for any other error. Never the token itself.
    """
    if isinstance(error, Unauthorized):
        if error.reply is not None:
            error = error.reply
        elif error.code == 4403:
            return "disconnected by the server (close 4403)"
        else:
            return f"the node refused the token (close {error.code})"
    if isinstance(error, ErrorReply) and error.message.command == "refresh":
        grace = error.message.getHeader("grace") or "?"
        return f"the token expired: the node closes the connection in {grace} s without a fresh one"
    if isinstance(error, ErrorReply) and error.message.getHeader("command") == "connect":
        detail = error.message.body.decode("utf-8", "replace")
        what = "cannot check the token now" if error.status == 503 else "refused the token"
        line = f"the node {what}: {error.status} {error.reason}"
        return line + (f": {detail}" if detail else "")
    return None


def _reconnecting(reactor, args, output):
    client = ReconnectingClient(
        reactor, args.url, onMessage=output.message,
        retryPolicy=backoffPolicy(initialDelay=0.5, maxDelay=args.max_delay),
        timeout=args.timeout, token=_connectToken(args),
    )

    def disconnected(how):
        wasClean, code, reason = how
        if client.running:
            output.status(f"disconnected ({code}); reconnecting")

    client.onDisconnect = disconnected
    return client


def _reportSync(d, output, text):
    d.addCallbacks(lambda ignored: output.status(text), lambda f: output.problem(f.getErrorMessage()))
    return d


async def _firstConnection(reactor, client, output):
    """
    Start a reconnecting client, but give up if the very first attempt
    fails: a wrong URL should say so, not retry forever.
    """
    client.startService()
    try:
        protocol = await client.whenConnected(failAfterFailures=1)
    except Exception as error:
        output.problem(refusal(error) or f"cannot connect to {client.url}: {error}")
        # Not from inside the ClientService's own callback: it is not
        # reentrant.
        await task.deferLater(reactor, 0, client.stopService)
        return None
    output.status(f"connected to {client.url}")
    return protocol


def _notConnected(client):
    """
    @return: the exit status when the first connection failed: 1 when the
        node refused the token, 2 when it could not be reached.
    """
    if client.authError is not None or client.stopped is not None:
        return EXIT_FAILED
    return EXIT_UNREACHABLE


async def listen(reactor, args, output):
    client = _reconnecting(reactor, args, output)
    done = defer.Deferred()
    seen = [0]
    showMessage = output.message

    # The node's refusals of this connection's subscribe (a channel it
    # may not read: 403 naming the channel), since it last connected.
    refusedNow = []

    def counted(message):
        if _refusedSubscription(message, client.subscriptions):
            refusedNow.append(message)
        showMessage(message)
        seen[0] += 1
        if args.count and seen[0] >= args.count and not done.called:
            done.callback(EXIT_OK)

    def refused(error):
        output.problem(refusal(error) or str(error))
        if isinstance(error, Unauthorized) and not done.called:
            done.callback(EXIT_FAILED)

    def synced(ignored):
        if not refusedNow:
            output.status(f"subscribed {names}")
            return
        # The node refuses a subscribe message whole: nothing was added.
        reply = refusedNow[-1]
        detail = reply.body.decode("utf-8", "replace")
        output.problem(f"subscribe refused: {reply.getHeader('status')} {reply.getHeader('reason')}"
                       + (f": {detail}" if detail else ""))
        if not done.called:
            done.callback(EXIT_FAILED)

    def connected(protocol):
        del refusedNow[:]
        d = protocol.sync(args.timeout)
        d.addCallbacks(synced, lambda f: output.problem(f.getErrorMessage()))
        return d

    client.onMessage = counted
    client.subscribe(args.channels)
    names = " ".join(client.subscriptions)
    client.onConnect = connected
    if await _firstConnection(reactor, client, output) is None:
        return _notConnected(client)
    # Once connected: a refusal later (a reconnect's) ends it.
    client.onAuthError = refused
    result = await done
    await client.stopService()
    return result


def _refusedSubscription(message, channels):
    """
    Whether C{message} is the node's refusal of a subscribe to one of
    C{channels} (an error reply to C{subscribe} naming the channel).
    """
    return (message.command == "error" and isNodeWord(message)
            and message.getHeader("command") == "subscribe"
            and message.getHeader("channel") in channels)


def _hasUpstream(data):
    """
    @return: whether the bytes typed for C{send} are a message with an
        C{upstream} header (whose answer comes once the backend answered).
    """
    try:
        return parse(data).getHeader("upstream") is not None
    except LHTTPError:
        return False


def _isUpstreamAnswer(message):
    """
    @return: whether C{message} answers an upstream request: the backend's
        response relayed (C{LHTTP/1.0 upstream}) or a 502/504 error reply,
        both carrying the C{upstream} header they answer.
    """
    return (message.command in ("upstream", "error") and message.getHeader("upstream") is not None
            and isNodeWord(message))


class Replies:
    """
    What arrives for C{send}, printed and told apart: the replies to the
    message the server is handling (the messages before it have had their
    round trip), and the answers to upstream requests, which come whenever
    the backend answers.

    @ivar arrived: how many messages arrived.
    @ivar handled: how many sent messages the server has handled.
    @ivar refused: the indexes of sent messages that got an error reply
        while handled (their upstream request, if any, was not made).
    @ivar answers: how many upstream answers arrived.
    """

    def __init__(self, reactor, output):
        self._reactor = reactor
        self._output = output
        self._waiting = []
        self.arrived = 0
        self.handled = 0
        self.refused = set()
        self.answers = 0

    def received(self, message):
        self._output.message(message)
        self.arrived += 1
        if _isUpstreamAnswer(message):
            self.answers += 1
        elif message.command == "error" and isNodeWord(message):
            self.refused.add(self.handled)
        for condition, d in list(self._waiting):
            if condition():
                self._waiting.remove((condition, d))
                d.callback(None)

    def handledOne(self, ignored):
        self.handled += 1

    def until(self, condition, timeout):
        """
        @return: a L{Deferred} that fires once C{condition()} is true after
            an arrival, failing with L{defer.TimeoutError} after C{timeout}
            seconds.
        """
        if condition():
            return defer.succeed(None)
        d = defer.Deferred(lambda d: self._waiting.remove((condition, d)))
        self._waiting.append((condition, d))
        return d.addTimeout(timeout, self._reactor)


async def _handled(protocol, syncs, args, output):
    """
    Wait for the round trip after each sent message.

    @return: L{None}, or the exit status when the server did not answer.
    """
    try:
        await defer.gatherResults(syncs, consumeErrors=True)
    except defer.FirstError as first:
        failure = first.subFailure
        if failure.check(defer.TimeoutError):
            output.problem(f"the server did not handle the messages within {args.timeout:g} s")
        else:
            output.problem(f"connection closed: {protocol.closeCode} {failure.getErrorMessage()}")
        return EXIT_FAILED
    return None


async def send(reactor, args, output):
    try:
        protocol = await connect(reactor, args.url, timeout=args.timeout, token=_connectToken(args))
    except Exception as error:
        refused = refusal(error)
        if refused is not None:
            output.problem(refused)
            return EXIT_FAILED
        output.problem(f"cannot connect to {args.url}: {error}")
        return EXIT_UNREACHABLE
    replies = Replies(reactor, output)
    protocol.onLHTTPMessage = replies.received
    sent, syncs = [], []
    for raw in args.messages:
        sent.append(unescape(raw))
        protocol.sendLHTTP(sent[-1])
        # One round trip per message tells which replies are whose.
        syncs.append(protocol.sync(args.timeout).addCallback(replies.handledOne))
    failed = await _handled(protocol, syncs, args, output)
    if failed is not None:
        if protocol.closeCode is None:
            protocol.sendClose(1000)
            await protocol.closed
        return failed
    result = EXIT_OK
    upstream = [i for i, data in enumerate(sent) if _hasUpstream(data) and i not in replies.refused]
    try:
        if upstream and args.upstream_wait:
            await replies.until(lambda: replies.answers >= len(upstream), args.upstream_wait)
    except defer.TimeoutError:
        missing = len(upstream) - replies.answers
        output.status(
            f"no answer to {missing} upstream request{'s' if missing > 1 else ''} "
            f"in {args.upstream_wait:g} s (a node sends the backend's response back "
            "only with --upstream-relay)"
        )
    try:
        if args.count:
            await replies.until(lambda: replies.arrived >= args.count, args.wait or 10.0)
        elif args.wait:
            await task.deferLater(reactor, args.wait)
    except defer.TimeoutError:
        output.problem(f"{replies.arrived} of {args.count} messages arrived in time")
        result = EXIT_FAILED
    protocol.sendClose(1000)
    await protocol.closed
    if output.errors:
        output.problem(output.errorSummary())
        return EXIT_FAILED
    return result


async def publishCommand(reactor, args, output):
    """
    Publish through C{/publish} with an idempotency key, sent again with
    the same key after a 503 or a lost answer: exit 0 once the node
    confirmed it, 3 if it is still not known to be stored.
    """
    import uuid

    from twisted.internet.error import ConnectionRefusedError

    from lhttp.publisher import PublishRefused, publish

    body = sys.stdin.buffer.read() if args.body == "-" else args.body.encode("utf-8")
    token = args.token or os.environ.get(TOKEN_VARIABLE) or None
    key = args.idempotency_key or uuid.uuid4().hex
    attempt = 0
    while True:
        attempt += 1
        try:
            answer = await publish(
                args.channels, args.command, args.header, body, url=args.url, token=token, key=key
            )
            break
        except PublishRefused as refused:
            if refused.status != 503:
                output.problem(f"refused: {refused.status} {refused.reason}: {refused.detail}")
                return EXIT_FAILED
            problem = f"{refused.status} {refused.reason}: {refused.detail}"
        except LHTTPError as error:
            output.problem(f"not published: {error.reason}: {error.detail}")
            return EXIT_FAILED
        except ConnectionRefusedError as error:
            # Nothing was sent.
            output.problem(f"cannot publish to {args.url}: {error}")
            return EXIT_UNREACHABLE
        except Exception as error:
            problem = f"no answer from {args.url}: {error}"
        if attempt > args.retries:
            output.problem(f"not known to be stored after {attempt} attempt(s) ({problem}); "
                           f"publish again with --idempotency-key {key}")
            return EXIT_UNKNOWN
        output.status(f"attempt {attempt}: {problem}; sending again with the same key")
        await task.deferLater(reactor, min(0.25 * 2 ** (attempt - 1), 4.0))
    output._out.write(json.dumps(answer) + "\n")
    output._out.flush()
    return EXIT_OK


async def controlCommand(reactor, args, output):
    """
    C{disconnect} and C{unsubscribe}: C{POST /api/...}, and one line on
    standard output saying what was done. Exit 0 done, 1 refused, 2 the
    node could not be reached, 3 not known to have reached every node
    (send it again: it does no harm twice).
    """
    from twisted.internet.error import ConnectionRefusedError

    from lhttp.publisher import ControlRefused, disconnect, unsubscribe

    token = args.token or os.environ.get(TOKEN_VARIABLE) or None
    try:
        if args.name == "disconnect":
            answer = await disconnect(args.user, args.reconnect, url=args.url, token=token)
        else:
            answer = await unsubscribe(args.user, args.channel, url=args.url, token=token)
    except ControlRefused as refused:
        output.problem(f"refused: {refused.status} {refused.reason}: {refused.detail}")
        return EXIT_UNKNOWN if refused.status == 503 else EXIT_FAILED
    except ConnectionRefusedError as error:
        output.problem(f"cannot reach {args.url}: {error}")
        return EXIT_UNREACHABLE
    except Exception as error:
        output.problem(f"no answer from {args.url} (it may or may not have been done): {error}")
        return EXIT_UNKNOWN
    output._out.write(controlLine(answer) + "\n")
    output._out.flush()
    return EXIT_OK


def controlLine(answer):
    """
    The meaning of an C{/api} answer, in one line.
    """
    where = ("on this node; every node of the cluster was told" if answer.get("cluster")
             else "(a node on its own)")
    user = escape(str(answer.get("user", "")).encode("utf-8", "surrogateescape"))
    if "closed" in answer:
        return f"closed {answer['closed']} connection(s) of {user} {where}"
    channel = escape(str(answer.get("channel", "")).encode("utf-8", "surrogateescape"))
    return (f"unsubscribed {answer.get('unsubscribed')} connection(s) of {user} "
            f"from {channel} {where}")


ADMIN_TOKEN_VARIABLE = "LHTTP_ADMIN_TOKEN"


async def _fetchCluster(url, token, timeout):
    """
    @return: C{(document, None, None)}, or C{(None, problem, exit code)}
        saying in one line why there is none.
    """
    import treq
    from twisted.internet.error import ConnectError, DNSLookupError

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = await treq.get(url, headers=headers, timeout=timeout)
        body = await response.content()
    except (ConnectError, DNSLookupError) as error:
        reason = "connection refused" if "refused" in str(error).lower() else str(error).strip()
        return None, (f"cannot reach {url}: {reason} (is the node up, with --admin-listen "
                      "on that port?)"), EXIT_UNREACHABLE
    except Exception as error:
        return None, f"no answer from {url} in {timeout:g} s ({type(error).__name__})", EXIT_UNREACHABLE
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if response.code != 200 or not isinstance(document, dict) or "nodes" not in document:
        detail = document.get("detail") if isinstance(document, dict) else None
        return None, (f"{url} answered {response.code}"
                      + (f": {detail}" if detail else " without the cluster's JSON")), EXIT_FAILED
    return document, None, None


async def top(reactor, args, output):
    """
    The admin page's figures, printed every C{--interval} seconds (the
    screen cleared in between on a terminal), or once with C{--once}:
    exit 0, 1 refused (a token is missing or wrong, not an admin port),
    2 the node could not be reached.
    """
    from lhttp.top import clusterURL, snapshot

    url = clusterURL(args.url)
    token = args.token or os.environ.get(ADMIN_TOKEN_VARIABLE) or None
    out = output._out
    clear = not args.once and out.isatty()
    while True:
        document, problem, code = await _fetchCluster(url, token, args.timeout)
        if args.once:
            if problem is not None:
                output.problem(terminalSafe(problem))
                return code
            out.write("\n".join(snapshot(document, url, terminalSafe)) + "\n")
            out.flush()
            return EXIT_OK
        if problem is not None:
            lines = [f"! {terminalSafe(problem)}; trying again every {args.interval:g} s"]
        else:
            lines = snapshot(document, url, terminalSafe)
        out.write(("\x1b[H\x1b[2J" if clear else "") + "\n".join(lines) + "\n" + ("" if clear else "\n"))
        out.flush()
        await task.deferLater(reactor, args.interval)


SHELL_HELP = """\
subscribe CHANNEL...      receive what is published to each
unsubscribe CHANNEL...    stop receiving from each
publish CHANNEL TEXT      publish TEXT to CHANNEL (command: --command)
send RAW                  send an LHTTP message typed with \\r\\n escapes
sync                      wait until the server handled everything sent
help                      this text
quit                      close and exit (so does end of input)"""


class ShellInput(LineReceiver):
    """
    The shell's typed lines, turned into LHTTP messages.
    """

    delimiter = b"\n"

    def __init__(self, client, args, output, done):
        self.client = client
        self.args = args
        self.output = output
        self.done = done

    def lineReceived(self, line):
        text = line.decode("utf-8", "surrogateescape").rstrip("\r")
        word, _, rest = text.strip().partition(" ")
        if not word:
            return
        handler = getattr(self, "do_" + word, None)
        if handler is None:
            self.output.problem(f"unknown command {word!r}; type help")
            return
        try:
            handler(rest.strip())
        except NotConnected:
            self.output.problem("not connected; try again once reconnected")
        except LHTTPError as error:
            self.output.problem(f"{error.reason}: {error.detail}")

    def _synced(self, text):
        _reportSync(self.client.sync(self.args.timeout), self.output, text)

    def do_subscribe(self, rest):
        self.client.subscribe(rest.split())
        self._synced(f"subscribed {rest}")

    def do_unsubscribe(self, rest):
        self.client.unsubscribe(rest.split())
        self._synced(f"unsubscribed {rest}")

    def do_publish(self, rest):
        channel, _, body = rest.partition(" ")
        if not channel:
            self.output.problem("usage: publish CHANNEL TEXT")
            return
        self.client.publish([channel], self.args.command, (), body.encode("utf-8", "surrogateescape"))

    def do_send(self, rest):
        self.client.sendLHTTP(unescape(rest))

    def do_sync(self, rest):
        self._synced("synced")

    def do_help(self, rest):
        for line in SHELL_HELP.splitlines():
            self.output.status(line)

    def do_quit(self, rest):
        self.transport.loseConnection()

    def connectionLost(self, reason):
        if self.done.called:
            return
        # Let the server handle what was typed before closing.
        try:
            d = self.client.sync(self.args.timeout)
        except NotConnected:
            d = defer.succeed(None)
        d.addBoth(lambda ignored: self.done.callback(EXIT_OK))


async def shell(reactor, args, output):
    client = _reconnecting(reactor, args, output)
    protocol = await _firstConnection(reactor, client, output)
    if protocol is None:
        return _notConnected(client)
    client.onAuthError = lambda error: output.problem(refusal(error) or str(error))
    client.onConnect = lambda protocol: output.status(f"connected to {client.url}")
    done = defer.Deferred()
    stdio.StandardIO(ShellInput(client, args, output, done), reactor=reactor)
    result = await done
    await client.stopService()
    return result


def _nonNegativeFloat(text):
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _positiveFloat(text):
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def version():
    """
    @return: the installed lhttp's version, or the package's own when it
        runs from a source tree that was never installed.
    """
    try:
        return metadata.version("lhttp")
    except metadata.PackageNotFoundError:
        import lhttp

        return getattr(lhttp, "__version__", "unknown")


def parser():
    top = argparse.ArgumentParser(
        prog="lhttp",
        description="Talk to an LHTTP server from a terminal or a script.",
        epilog=(
            "Received messages are printed one per line, flushed per line: the "
            "message with \\r, \\n, \\t, \\\\ and \\xHH escapes, and \\uHHHH for "
            "characters a terminal would act on or hide (C1 controls, U+2028, "
            "bidi overrides, zero-width characters; what 'send' takes), or with "
            "--json one JSON object per line "
            '({"command", "headers": [[name, value]...], "body"} or "bodyBase64"). '
            "Status lines go to standard error ('* ...'; problems '! ...'). "
            "Exit status: 0 done, 1 refused or an error reply arrived, "
            "2 the server could not be reached, 3 not known to be done (publish, "
            "disconnect, unsubscribe: send it again)."
        ),
    )
    top.add_argument("--version", action="version", version=f"lhttp {version()}")
    commands = top.add_subparsers(dest="name", required=True, metavar="COMMAND")

    def command(name, help, description):
        sub = commands.add_parser(name, help=help, description=description)
        sub.set_defaults(name=name)
        return sub

    def controlOptions(sub):
        sub.add_argument("url", metavar="URL",
                         help="the node's HTTP URL, e.g. http://127.0.0.1:8081/ (/api/... is added)")
        sub.add_argument("user", metavar="USER", help="the user id")
        sub.add_argument("--token", default=None,
                         help=f"the publish token (default: the {TOKEN_VARIABLE} environment variable)")

    def webSocketOptions(sub):
        sub.add_argument("url", metavar="URL", help="the server, e.g. ws://127.0.0.1:8081/")
        sub.add_argument("--json", action="store_true", help="print messages as JSON lines")
        sub.add_argument("--timeout", type=_positiveFloat, default=10.0,
                         help="seconds for connecting and for the server to answer (default 10)")
        sub.add_argument("--token", default=None,
                         help="a connection token (JWT) for a node that authenticates: sent "
                              "first, in 'LHTTP/1.0 connect' (default: the "
                              f"{CONNECT_TOKEN_VARIABLE} environment variable)")

    sub = command(
        "listen", "print what is published to channels",
        "Subscribe to channels and print every message that arrives, until "
        "interrupted (or --count). Once connected it reconnects after the "
        "connection drops and subscribes again; '* subscribed ...' on "
        "standard error says when the subscription is in place.",
    )
    webSocketOptions(sub)
    sub.add_argument("channels", metavar="CHANNEL", nargs="+", help="channels to subscribe to")
    sub.add_argument("--count", type=int, default=0, help="exit after this many messages")
    sub.add_argument("--max-delay", type=_positiveFloat, default=30.0,
                     help="longest wait between reconnect attempts, seconds (default 30)")

    sub = command(
        "send", "send LHTTP messages and print the replies",
        "Send each MESSAGE (typed with \\r\\n escapes, e.g. "
        "'LHTTP/1.0 echo\\r\\n\\r\\nhi') and print what arrives until the "
        "server has handled them all (a round trip on the same connection "
        "tells) and has answered each upstream request (up to --upstream-wait "
        "seconds), then --wait seconds more, or until --count messages arrived. "
        "Exits 1, with a line on standard error, if an error reply arrived.",
    )
    webSocketOptions(sub)
    sub.add_argument("messages", metavar="MESSAGE", nargs="+", help="an LHTTP message")
    sub.add_argument("--upstream-wait", type=_nonNegativeFloat, default=DEFAULT_UPSTREAM_WAIT,
                     metavar="SECONDS",
                     help="the most to wait for the answer to each message with an upstream "
                          "header: the backend's response (if the node relays it) or a 502/504 "
                          f"error reply; 0: do not wait (default {DEFAULT_UPSTREAM_WAIT:g})")
    sub.add_argument("--wait", type=float, default=0.0,
                     help="seconds to keep printing after the server handled the messages "
                          "(with --count: the most to wait for them, default 10)")
    sub.add_argument("--count", type=int, default=0,
                     help="wait until this many messages arrived (exit 1 if they do not)")

    sub = command(
        "publish", "publish over HTTP (POST /publish)",
        "Publish BODY to channels through the server's POST /publish and print "
        "its JSON answer.",
    )
    sub.add_argument("url", metavar="URL", help="the publish URL, e.g. http://127.0.0.1:8081/publish")
    sub.add_argument("channels", metavar="CHANNELS", help="a channel, or several separated by spaces")
    sub.add_argument("body", metavar="BODY", nargs="?", default="",
                     help="the message body, as typed; '-' reads it from standard input")
    sub.add_argument("--command", default="publish", help="the message's command (default publish)")
    sub.add_argument("--header", type=parseHeader, action="append", default=[], metavar="NAME:VALUE",
                     help="a header for subscribers; repeatable")
    sub.add_argument("--token", default=None,
                     help=f"the publish token (default: the {TOKEN_VARIABLE} environment variable)")
    sub.add_argument("--idempotency-key", default=None, metavar="KEY",
                     help="the publish's idempotency key (default: a new random one); "
                          "the node stores and delivers it once however often it is sent")
    sub.add_argument("--retries", type=int, default=5,
                     help="times to send it again, with the same key, after a 503 or a lost "
                          "answer (default 5); exit 3 if it is still not known to be stored")

    sub = command(
        "disconnect", "close a user's connections (POST /api/disconnect)",
        "Close every connection of USER, on every node of the cluster, with "
        "close code 4403 (4000 with --reconnect), through the node's "
        "POST /api/disconnect (it needs the publish token), and print what "
        "was done.",
    )
    controlOptions(sub)
    sub.add_argument("--reconnect", action="store_true",
                     help="close with 4000: the client may reconnect (default 4403: it must not)")

    sub = command(
        "unsubscribe", "take a channel from a user (POST /api/unsubscribe)",
        "Make every connection of USER, on every node, leave CHANNEL (each is "
        "sent 'LHTTP/1.0 unsubscribed'), through the node's "
        "POST /api/unsubscribe (it needs the publish token), and print what "
        "was done.",
    )
    controlOptions(sub)
    sub.add_argument("channel", metavar="CHANNEL", help="the channel to take from the user")

    sub = command(
        "top", "the cluster's nodes and figures, refreshed (the admin page's JSON)",
        "Print what the admin page shows: every node of the cluster with its "
        "connections, subscriptions, channels, messages in and out and "
        "deliveries per second, slow consumers closed and error replies of the "
        "last minutes, the busiest channels, history and presence state; "
        "refreshed every --interval seconds until interrupted. URL is a node's "
        "--admin-listen port, e.g. http://127.0.0.1:9101/ (/admin/api/cluster "
        "is added). A node that does not answer is one line, and top tries again.",
    )
    sub.add_argument("url", metavar="URL", help="the admin port, e.g. http://127.0.0.1:9101/")
    sub.add_argument("--once", action="store_true",
                     help="print one snapshot and exit (2 if the node cannot be reached)")
    sub.add_argument("--interval", type=_positiveFloat, default=2.0,
                     help="seconds between refreshes (default 2)")
    sub.add_argument("--timeout", type=_positiveFloat, default=5.0,
                     help="seconds the node has to answer (default 5)")
    sub.add_argument("--token", default=None,
                     help="the admin token (default: the "
                          f"{ADMIN_TOKEN_VARIABLE} environment variable)")

    sub = command(
        "shell", "type commands, see arrivals",
        "An interactive client: each line you type is a command; arrivals are "
        "printed as they come. Commands:\n" + SHELL_HELP,
    )
    sub.formatter_class = argparse.RawDescriptionHelpFormatter
    webSocketOptions(sub)
    sub.add_argument("--command", default="publish", help="the command 'publish' lines use (default publish)")
    sub.add_argument("--max-delay", type=_positiveFloat, default=30.0,
                     help="longest wait between reconnect attempts, seconds (default 30)")
    return top


COMMANDS = {"listen": listen, "send": send, "publish": publishCommand, "shell": shell, "top": top,
            "disconnect": controlCommand, "unsubscribe": controlCommand}


def main(argv=None):
    """
    The C{lhttp} console script.
    """
    args = parser().parse_args(argv)
    output = Output(sys.stdout, sys.stderr, getattr(args, "json", False))
    run = COMMANDS[args.name]

    async def exiting(reactor):
        code = await run(reactor, args, output)
        if code:
            raise SystemExit(code)

    task.react(lambda reactor: defer.ensureDeferred(exiting(reactor)))


if __name__ == "__main__":
    main()
