"""
The C{lhttp} command, run as a subprocess against real nodes; its line
format and help in process.
"""

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unicodedata
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lhttp.cli import Output, escape, formatMessage, parser, terminalSafe, unescape
from lhttp.codec import parse
from authnode import receivedBy
from procs import ROOT, freePort, waitFor

CLI = [sys.executable, "-m", "lhttp.cli"]


class Command:
    """
    A running C{lhttp} subprocess, its standard output and error in files.
    """

    def __init__(self, *args, stdin=False, env=None, program=CLI):
        self.out = tempfile.NamedTemporaryFile(prefix="lhttp-cli-", suffix=".out", delete=False)
        self.err = tempfile.NamedTemporaryFile(prefix="lhttp-cli-", suffix=".err", delete=False)
        self.popen = subprocess.Popen(
            [*program, *args],
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=self.out, stderr=self.err,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )

    def stdout(self):
        return Path(self.out.name).read_text()

    def stdoutBytes(self):
        return Path(self.out.name).read_bytes()

    def stderr(self):
        return Path(self.err.name).read_text()

    def lines(self):
        return self.stdout().splitlines()

    def waitOut(self, text, timeout=10):
        waitFor(lambda: text in self.stdout() or self.popen.poll() is not None, timeout, what=text)
        assert text in self.stdout(), (self.stdout(), self.stderr())

    def waitErr(self, text, timeout=10):
        waitFor(lambda: text in self.stderr() or self.popen.poll() is not None, timeout, what=text)
        assert text in self.stderr(), (self.stdout(), self.stderr())

    def type(self, line):
        self.popen.stdin.write(line.encode() + b"\n")
        self.popen.stdin.flush()

    def wait(self, timeout=10):
        return self.popen.wait(timeout)

    def stop(self):
        if self.popen.stdin:
            self.popen.stdin.close()
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        for f in (self.out, self.err):
            f.close()
            os.unlink(f.name)


@pytest.fixture
def command():
    """
    C{command(*args, stdin=False, env=None, program=CLI)} starts C{lhttp
    ARGS}; every one is stopped after the test.
    """
    started = []

    def start(*args, **kwargs):
        started.append(Command(*args, **kwargs))
        return started[-1]

    yield start
    for c in started:
        c.stop()


def run(*args, input=None, env=None):
    return subprocess.run(
        [*CLI, *args], input=input, capture_output=True, timeout=30,
        env={**os.environ, **(env or {})},
    )


def runScript(*args, cwd, timeout=30):
    """
    Run the installed C{lhttp} console script, as a user types it, from
    C{cwd} (a fresh directory), with this tree's code first on the path.
    """
    program = shutil.which("lhttp")
    assert program, "the lhttp console script is not on PATH"
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return subprocess.run(
        [program, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd,
        env={**os.environ, "PYTHONPATH": path},
    )


class BackendHandler(BaseHTTPRequestHandler):
    """
    An upstream backend: C{POST /record} answers 201 C{stored <command>},
    C{POST /broken} a 500; C{?delay=S} first waits S seconds, so an answer
    surely comes after the node handled the message.
    """

    def do_POST(self):
        url = urlsplit(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.requests.append((url.path, self.headers.get("LHTTP-Command"), body))
        time.sleep(float(parse_qs(url.query).get("delay", ["0"])[0]))
        if url.path == "/record":
            answer = f"stored {self.headers.get('LHTTP-Command')}".encode()
            self.send_response(201)
        else:
            answer = b"broken"
            self.send_response(500)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


@pytest.fixture
def httpBackend():
    """
    A real HTTP backend on a free loopback port (in a thread); its C{url}
    and the C{requests} it got, C{(path, LHTTP-Command, body)}.
    """
    server = ThreadingHTTPServer(("127.0.0.1", 0), BackendHandler)
    server.requests = []
    server.url = f"http://127.0.0.1:{server.server_address[1]}/"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(10)


def assertNoSync(result):
    """
    The round trips C{send} makes are its own business.
    """
    assert "lhttp-sync" not in result.stdout + result.stderr, (result.stdout, result.stderr)


def test_sendWaitsForTheRelayedUpstreamAnswer(startNode, httpBackend, tmp_path):
    node = startNode("--upstream-allow", httpBackend.url, "--upstream-relay")
    target = f"{httpBackend.url}record?delay=0.5"
    result = runScript(
        "send", node.url, rf"LHTTP/1.0 chat\r\nupstream:POST {target}\r\n\r\nhello backend",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assertNoSync(result)
    [line] = result.stdout.splitlines()
    answer = parse(unescape(line))
    assert (answer.command, answer.getHeader("status"), answer.getHeader("command")) == (
        "upstream", "201", "chat",
    )
    assert answer.getHeader("upstream") == f"POST {target}"
    assert answer.body == b"stored chat"
    [(path, command, body)] = httpBackend.requests
    assert (path, command) == ("/record", "chat")
    assert body.endswith(b"\r\n\r\nhello backend")


def test_sendExitsOneOnAnUpstreamErrorReply(startNode, httpBackend, tmp_path):
    """
    A backend that fails: the node's 502 comes once the backend answered,
    long after the message was handled, relaying on or not.
    """
    node = startNode("--upstream-allow", httpBackend.url)
    result = runScript(
        "send", node.url, rf"LHTTP/1.0 chat\r\nupstream:POST {httpBackend.url}broken?delay=0.5\r\n\r\nx",
        cwd=tmp_path,
    )
    assert result.returncode == 1, (result.stdout, result.stderr)
    assertNoSync(result)
    [line] = result.stdout.splitlines()
    error = parse(unescape(line))
    assert (error.command, error.getHeader("status"), error.getHeader("reason")) == (
        "error", "502", "bad gateway",
    )
    [problem] = result.stderr.splitlines()
    assert problem.startswith("! an error reply to chat: 502 bad gateway: "), problem


def test_sendWithoutRelayingSaysNoAnswerCame(startNode, httpBackend, tmp_path):
    node = startNode("--upstream-allow", httpBackend.url)
    result = runScript(
        "send", "--upstream-wait", "0.5", node.url,
        rf"LHTTP/1.0 chat\r\nupstream:POST {httpBackend.url}record\r\n\r\nx",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert "* no answer to 1 upstream request in 0.5 s" in result.stderr
    assert "--upstream-relay" in result.stderr
    assert [path for path, _, _ in httpBackend.requests] == ["/record"]


def test_sendExitsOneWithALineOnAnErrorReply(lhttpNode, tmp_path):
    """
    Error replies the server sends while handling the message: printed,
    told in one line on standard error, exit status 1. An upstream
    request refused (no allow-list) is not waited for.
    """
    refused = runScript(
        "send", "--upstream-wait", "60", lhttpNode.url,
        r"LHTTP/1.0 chat\r\nupstream:POST http://127.0.0.1:1/x\r\n\r\nx", cwd=tmp_path,
    )
    assert refused.returncode == 1
    assertNoSync(refused)
    [line] = refused.stdout.splitlines()
    assert parse(unescape(line)).getHeader("status") == "403"
    assert refused.stderr.splitlines() == [
        "! an error reply to chat: 403 upstream not allowed: "
        "upstream requests are not enabled on this server"
    ]

    several = runScript(
        "send", lhttpNode.url, r"LHTTP/1.0 chat\r\nsubscribe:all*\r\n\r\n",
        r"LHTTP/1.0 me\r\nsubscribe:me\r\npublish:me\r\n\r\nfine", r"LHTTP/1.0 bad", cwd=tmp_path,
    )
    assert several.returncode == 1
    assertNoSync(several)
    assert [parse(unescape(line)).getHeader("status") for line in several.stdout.splitlines()] == [
        "400", None, "400",
    ]
    [problem] = several.stderr.splitlines()
    assert problem.startswith("! 2 error replies, the first to chat: 400 bad channel name: "), problem


def test_sendHidesItsRoundTripWhenTheServerRefusesIt(startNode, tmp_path):
    """
    At its subscription limit the connection cannot subscribe to the
    private channel of a round trip: the error reply still tells the
    server handled what came before, and is not shown.
    """
    node = startNode("--max-subscriptions", "1")
    result = runScript("send", node.url, r"LHTTP/1.0 me\r\nsubscribe:me\r\npublish:me\r\n\r\nhi",
                       cwd=tmp_path)
    assert result.returncode == 0, (result.stdout, result.stderr)
    assertNoSync(result)
    assert result.stdout.splitlines() == [r"LHTTP/1.0 me\r\nsubscribe:me\r\npublish:me\r\n\r\nhi"]
    assert result.stderr == ""


def test_version(tmp_path):
    result = runScript("--version", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"lhttp {metadata.version('lhttp')}\n"


def test_listenPrintsPublishesAsTheyArrive(lhttpNode, command):
    listener = command("listen", lhttpNode.url, "news", "alerts")
    listener.waitErr("* subscribed news alerts")

    published = run("publish", lhttpNode.publishURL, "news", "first\tline", "--header", "from: ops")
    assert published.returncode == 0, published.stderr
    assert json.loads(published.stdout) == {"status": 200, "channels": ["news"]}
    listener.waitOut("first")
    binary = run("publish", lhttpNode.publishURL, "alerts news", "-", "--command", "alert",
                 input=b"\xff\x00\r\n")
    assert binary.returncode == 0, binary.stderr
    waitFor(lambda: len(listener.lines()) == 3, 10, what="three lines")

    first, second, third = listener.lines()
    assert parse(unescape(first)).toBytes() == (
        b"LHTTP/1.0 publish\r\npublish:news\r\nfrom:ops\r\n\r\nfirst\tline"
    )
    assert first == r"LHTTP/1.0 publish\r\npublish:news\r\nfrom:ops\r\n\r\nfirst\tline"
    # Published to both channels it is on: one copy per channel.
    assert second == third == r"LHTTP/1.0 alert\r\npublish:alerts news\r\n\r\n\xff\x00\r\n"
    assert listener.popen.poll() is None


def test_listenJSONCountExitsByItself(lhttpNode, command):
    listener = command("listen", "--json", "--count", "1", lhttpNode.url, "room")
    listener.waitErr("* subscribed room")
    assert run("publish", lhttpNode.publishURL, "room", "héllo").returncode == 0
    assert listener.wait() == 0
    [line] = listener.lines()
    assert json.loads(line) == {
        "command": "publish", "headers": [["publish", "room"]], "body": "héllo",
    }


def test_sendPrintsRepliesUntilTheServerHandledThem(lhttpNode):
    done = run(
        "send", lhttpNode.url,
        r"LHTTP/1.0 me\r\nsubscribe:me\r\npublish:me\r\n\r\nhi\r\nthere",
        r"LHTTP/1.0 me\r\npublish:me\r\n\r\nagain",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines() == [
        r"LHTTP/1.0 me\r\nsubscribe:me\r\npublish:me\r\n\r\nhi\r\nthere",
        r"LHTTP/1.0 me\r\npublish:me\r\n\r\nagain",
    ]

    failed = run("send", lhttpNode.url, r"LHTTP/1.0 chat\r\nsubscribe:all*\r\n\r\n")
    assert failed.returncode == 1
    [error] = failed.stdout.decode().splitlines()
    assert parse(unescape(error)).getHeader("status") == "400"

    short = run("send", "--count", "2", "--wait", "0.3", lhttpNode.url,
                r"LHTTP/1.0 me\r\nsubscribe:me\r\npublish:me\r\n\r\nonly one")
    assert short.returncode == 1
    assert b"1 of 2 messages arrived" in short.stderr


def test_unreachableServerExitsWith2():
    url = f"ws://127.0.0.1:{freePort()}/"
    for args in (("send", url, "LHTTP/1.0 x\\r\\n\\r\\n"), ("listen", url, "a"), ("shell", url)):
        result = run(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert b"! cannot connect" in result.stderr
    result = run("publish", f"http://127.0.0.1:{freePort()}/publish", "a", "x")
    assert result.returncode == 2


def test_publishTokenFromOptionOrEnvironment(startNode):
    node = startNode("--publish-token", "s3cret")
    refused = run("publish", node.publishURL, "a", "x")
    assert refused.returncode == 1
    assert b"refused: 401" in refused.stderr
    wrong = run("publish", node.publishURL, "a", "x", "--token", "nope")
    assert (wrong.returncode, b"refused: 403" in wrong.stderr) == (1, True)
    assert run("publish", node.publishURL, "a", "x", "--token", "s3cret").returncode == 0
    assert run("publish", node.publishURL, "a", "x", env={"LHTTP_PUBLISH_TOKEN": "s3cret"}).returncode == 0


def test_shell(lhttpNode, command):
    shell = command("shell", lhttpNode.url, stdin=True)
    shell.waitErr("* connected")
    shell.type("subscribe lobby other")
    shell.waitErr("* subscribed lobby other")
    shell.type("publish lobby hello everyone")
    shell.waitOut("hello everyone")
    shell.type(r"send LHTTP/1.0 chat\r\npublish:other\r\nnick:ann\r\n\r\nraw")
    shell.waitOut("raw")
    shell.type("frobnicate")
    shell.waitErr("! unknown command 'frobnicate'")
    shell.type("unsubscribe lobby")
    shell.waitErr("* unsubscribed lobby")
    shell.type("publish lobby not for me")
    shell.type(r"send LHTTP/1.0 bad\r\nno end")
    shell.waitOut("reason:malformed")
    shell.popen.stdin.close()
    assert shell.wait() == 0
    assert shell.lines() == [
        r"LHTTP/1.0 publish\r\npublish:lobby\r\n\r\nhello everyone",
        r"LHTTP/1.0 chat\r\npublish:other\r\nnick:ann\r\n\r\nraw",
        r"LHTTP/1.0 error\r\nlhttp-node:reply\r\nstatus:400\r\nreason:malformed message\r\ncommand:bad"
        r"\r\n\r\nthe headers never end: no blank line (CRLF CRLF)",
    ]


def test_help():
    top = run("--help")
    assert top.returncode == 0
    for name in (b"listen", b"send", b"publish", b"shell", b"Exit status", b"--version"):
        assert name in top.stdout
    for name, words in [
        ("listen", "--count"), ("send", "--upstream-wait"), ("publish", "--token"),
        ("shell", "unsubscribe CHANNEL"),
    ]:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exited:
            parser().parse_args([name, "--help"])
        assert exited.value.code == 0
        assert words in out.getvalue()


@given(st.binary())
def test_escapeRoundTripsAnyBytesOnOneLine(data):
    line = escape(data)
    assert "\n" not in line and "\r" not in line
    assert unescape(line) == data


def test_unescapeLeavesUnknownEscapes():
    assert unescape(r"a\qb\x4") == b"a\\qb\\x4"
    assert unescape(r"\\r") == b"\\r"


def test_jsonFormatForBinaryBody():
    message = parse(b"LHTTP/1.0 up\r\nk: v\r\n\r\n\xff")
    assert json.loads(formatMessage(message, asJSON=True)) == {
        "command": "up", "headers": [["k", "v"]], "bodyBase64": "/w==",
    }


def _unsafe(char):
    """
    Whether a terminal would act on C{char} or not show it: the characters
    the line format must escape.
    """
    return unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp")


UNSAFE = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF and _unsafe(chr(c)))

# A message that, printed raw, would clear the screen (ESC and the C1 CSI),
# break the line (NEL, U+2028/2029), reverse and reorder text (bidi
# overrides and isolates), hide characters (zero-width, BOM, tags).
HOSTILE = (
    "\x1b[2J\u009b2J\u0085x\u2028y\u2029z \u202egnp.exe\u202c \u2066iso\u2069"
    " zero\u200bwidth\u200d\u200e\u200f \ufeffbom \U000e0041\U000e007f \u00e9t\u00e9 \U0001f600"
)


def test_escapeHidesNothingATerminalActsOn():
    line = escape(UNSAFE.encode("utf-8"))
    assert not any(_unsafe(char) for char in line)
    assert unescape(line) == UNSAFE.encode("utf-8")


def test_escapeForms():
    assert escape("\u202e".encode()) == r"\u202e"
    assert escape("\u0085\u009b".encode()) == r"\u0085\u009b"
    assert escape("a\u2028b\u2029c".encode()) == r"a\u2028b\u2029c"
    assert escape("\u2066\u2069\u200b\u200d\ufeff".encode()) == r"\u2066\u2069\u200b\u200d\ufeff"
    assert escape("\U000e0041".encode()) == r"\U000e0041"
    # Raw bytes 0x85 and 0x9b (not UTF-8) stay bytes: \xHH, not \u.
    assert escape(b"\x85\x9b\x1b") == r"\x85\x9b\x1b"
    # Visible text is left alone.
    assert escape("h\u00e9llo \u05e9\u05dc\u05d5\u05dd \U0001f600 \u00a0".encode()) == (
        "h\u00e9llo \u05e9\u05dc\u05d5\u05dd \U0001f600 \u00a0"
    )


def test_unescapeReadsUnicodeEscapes():
    assert unescape(r"\u202e\u00e9\U0001f600") == "\u202e\u00e9\U0001f600".encode()
    assert unescape(r"\u0085") == b"\xc2\x85"
    # Not characters: left as typed, like other unknown escapes.
    assert unescape(r"\ud800\U00110000\u12") == rb"\ud800\U00110000\u12"
    assert unescape(r"\\u202e") == rb"\u202e"


@given(st.text())
def test_escapeRoundTripsAnyTextWithNothingUnsafe(text):
    data = text.encode("utf-8", "surrogatepass")
    line = escape(data)
    assert not any(_unsafe(char) for char in line)
    assert unescape(line) == data


def test_jsonEscapesUnsafeCharacters():
    message = parse(("LHTTP/1.0 up\r\nnick:\u202eevil\r\n\r\n" + HOSTILE).encode())
    line = formatMessage(message, asJSON=True)
    assert not any(_unsafe(char) or char == "\x7f" for char in line)
    assert json.loads(line) == {"command": "up", "headers": [["nick", "\u202eevil"]], "body": HOSTILE}


def test_statusLinesAreSafeToo():
    err = io.StringIO()
    output = Output(io.StringIO(), err)
    output.problem("refused: 403 forbidden: \u202edetail\x1b[2J\nnext \\ done")
    output.status("connected to ws://h/\u2028")
    assert err.getvalue() == (
        "! refused: 403 forbidden: \\u202edetail\\x1b[2J\\nnext \\ done\n"
        "* connected to ws://h/\\u2028\n"
    )
    assert terminalSafe("plain") == "plain"


def test_listenEscapesWhatATerminalWouldActOn(lhttpNode, command):
    """
    A hostile message published to a real node, printed by the real
    C{lhttp} console script: no raw control, separator, bidi or invisible
    character reaches the terminal, and the line sends back the same bytes.
    """
    program = shutil.which("lhttp")
    assert program, "the lhttp console script is not on PATH"
    plain = command("listen", "--count", "1", lhttpNode.url, "room", program=[program])
    asJSON = command("listen", "--json", "--count", "1", lhttpNode.url, "room", program=[program])
    plain.waitErr("* subscribed room")
    asJSON.waitErr("* subscribed room")
    published = run("publish", lhttpNode.publishURL, "room", "-", "--header", "nick:\u202eevil\u2066",
                     input=HOSTILE.encode())
    assert published.returncode == 0, published.stderr
    assert (plain.wait(), asJSON.wait()) == (0, 0)

    sent = ("LHTTP/1.0 publish\r\npublish:room\r\nnick:\u202eevil\u2066\r\n\r\n" + HOSTILE).encode()
    for listener in (plain, asJSON):
        out = listener.stdoutBytes()
        assert b"\x1b" not in out and b"\x7f" not in out
        assert not any(bytes([0xC2, c]) in out for c in range(0x80, 0xA0)), out  # C1 in UTF-8
        text = out.decode("utf-8")
        assert text.endswith("\n") and text.count("\n") == 1
        assert not any(_unsafe(char) for char in text[:-1]), text
    line = plain.stdoutBytes().decode().rstrip("\n")
    assert r"\u202egnp.exe\u202c" in line and r"\u2028" in line and r"\u009b" in line
    assert unescape(line) == sent
    assert json.loads(asJSON.stdoutBytes())["body"] == HOSTILE


def test_listenAndSendWithAToken(authNode, command):
    """
    C{--token} (or C{LHTTP_TOKEN}) sends C{connect} with it first, before
    the subscriptions and messages; the token shows in no output.
    """
    url, node = authNode
    listener = command("listen", "--token", "alice-1", url, "room")
    listener.waitErr("* subscribed room")
    assert receivedBy(node)[:2] == [r"LHTTP/1.0 connect\r\ntoken:alice-1\r\n\r\n",
                                    r"LHTTP/1.0 subscribe\r\nsubscribe:room\r\n\r\n"]
    sent = run("send", url, r"LHTTP/1.0 chat\r\npublish:room\r\n\r\nhello",
               env={"LHTTP_TOKEN": "alice-2"})
    assert sent.returncode == 0, sent.stderr
    listener.waitOut("hello")
    assert r"LHTTP/1.0 connect\r\ntoken:alice-2\r\n\r\n" in receivedBy(node)
    assert "alice-" not in listener.stdout() + listener.stderr() + sent.stdout.decode() + sent.stderr.decode()


@pytest.mark.parametrize("name", ["listen", "send"])
def test_refusedTokenIsOneLineAndExitOne(authNode, name):
    """
    A token the node refuses (401 reply, close 4401): one line on standard
    error saying so with the node's reason, exit status 1; so does a node
    that cannot check tokens (503, close 4503).
    """
    url, _ = authNode
    last = ["room"] if name == "listen" else [r"LHTTP/1.0 chat\r\n\r\nx"]
    for token, line in (
        ("expired", "! the node refused the token: 401 unauthorized: token expired"),
        ("unavailable", "! the node cannot check the token now: 503 authentication unavailable: "
                        "keys unavailable"),
    ):
        result = run(name, "--token", token, url, *last)
        assert result.returncode == 1, (token, result.stderr)
        assert result.stderr.decode().splitlines() == [line], token
        assert result.stdout == b""


def test_listenStopsWhenDisconnectedForGood(authNode):
    """
    A close with 4403 (the server's disconnect) ends C{listen} with a line
    saying so and exit status 1, instead of reconnecting.
    """
    url, node = authNode
    result = run("listen", "--token", "kick", url, "room")
    assert result.returncode == 1, result.stderr
    assert result.stderr.decode().splitlines()[-1] == "! disconnected by the server (close 4403)"
    assert receivedBy(node).count(r"LHTTP/1.0 connect\r\ntoken:kick\r\n\r\n") == 1


def test_listenSaysWhenTheNodeRefusesItsSubscribe(startNode, command, tmp_path):
    """
    On a node with channel permissions, C{lhttp listen} on a channel the
    user may not read says the subscribe was refused (the node's 403) and
    exits 1, instead of reporting it subscribed and waiting forever; on
    its own channel it is subscribed.
    """
    from lhttp.testing import makeToken

    secret = "a secret of 32 bytes or more, for the test"
    node = startNode("--channel", "user.{sub}=sub:owner,pub:users",
                     env={"LHTTP_AUTH_JWT_SECRET": secret})
    token = makeToken(secret, "bob")
    result = runScript("listen", "--token", token, node.url, "user.alice", cwd=tmp_path)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "* subscribed" not in result.stderr, result.stderr
    assert ("! subscribe refused: 403 forbidden: subscribe to 'user.alice' is not allowed"
            in result.stderr.splitlines()), result.stderr
    assert token not in result.stdout + result.stderr

    own = command("listen", "--token", token, node.url, "user.bob")
    own.waitErr("* subscribed user.bob")
