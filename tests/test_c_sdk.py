"""
The C SDK in C{sdk/c}: its unit tests under AddressSanitizer and UBSan, a
bounded libFuzzer run of the parser, the README example compiled the way the
README says, and the C{lhttp-chat} example chatting with Python clients
through a real C{twistd lhttp} node.

The SDK is built once per module with clang, sanitizers and the fuzz target
on; and once more as a user builds it (static by default, and shared), each
installed with C{cmake --install --prefix}, for the install and link lines.
Missing tools fail the tests with the package to install: CI has them.
"""

import os
import re
import shutil
import random
import signal
import struct
import subprocess
import time
from pathlib import Path

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.task import deferLater

from lhttpclients import barrier, client, eventually

ROOT = Path(__file__).resolve().parent.parent
SDK = ROOT / "sdk" / "c"

SANITIZERS = "-fsanitize=address,undefined"
FUZZ_RUNS = 300000

TOOLS = {
    "cmake": "cmake",
    "clang": "clang and libclang-rt-14-dev",
    "cc": "gcc",
    "readelf": "binutils",
    "pkg-config": "pkg-config",
}


def run(args, timeout, **kwargs):
    """
    Run a command; fail the test with its output if it does not exit 0.
    """
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, **kwargs
    )
    assert result.returncode == 0, (
        f"{' '.join(map(str, args))} exited {result.returncode}\n"
        f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    )
    return result


def requireTools():
    """
    Fail the test, naming the package to install, when a tool is missing.
    """
    for tool, package in TOOLS.items():
        if shutil.which(tool) is None:
            pytest.fail(f"the C SDK tests need {tool!r}: apt-get install {package}")
    if subprocess.run(["pkg-config", "--exists", "libwebsockets"]).returncode != 0:
        pytest.fail("the C SDK tests need libwebsockets: apt-get install libwebsockets-dev")


@pytest.fixture(scope="module")
def sdkBuild(tmp_path_factory):
    """
    Configure and build the SDK (sanitizers, fuzz target, warnings as
    errors) and install it into a private prefix.

    @return: C{(buildDir, installPrefix)}.
    """
    requireTools()
    base = tmp_path_factory.mktemp("c-sdk")
    build, prefix = base / "build", base / "prefix"
    run(
        [
            "cmake", "-S", SDK, "-B", build,
            "-DCMAKE_C_COMPILER=clang",
            "-DCMAKE_BUILD_TYPE=Debug",
            "-DLHTTP_SANITIZE=ON",
            "-DLHTTP_FUZZ=ON",
            "-DLHTTP_WERROR=ON",
            f"-DCMAKE_INSTALL_PREFIX={prefix}",
        ],
        timeout=120,
    )
    run(["cmake", "--build", build, "--parallel", "2"], timeout=300)
    run(["cmake", "--install", build], timeout=60)
    return build, prefix


def test_unitTestsPassUnderSanitizers(sdkBuild):
    build, _ = sdkBuild
    result = run(["ctest", "--output-on-failure"], timeout=120, cwd=build)
    assert "100% tests passed" in result.stdout
    assert "0 tests failed out of 5" in result.stdout


def test_positionTrackerUnderSanitizers(sdkBuild):
    """
    The position tracker (lhttp/positions.h, issue 20): duplicates, live
    gaps seen from the node's C{prev}, the re-subscribe that recovers one,
    recovery replies, giving up; built with ASan/UBSan, every check passes.
    """
    build, _ = sdkBuild
    result = run([build / "test_positions"], timeout=60)
    assert result.stdout.strip().endswith("checks, 0 failed"), result.stdout + result.stderr
    assert int(result.stdout.split()[0]) >= 150


def test_fuzzParserBoundedRun(sdkBuild, tmp_path):
    """
    The parser fuzz target survives a bounded run from the SPEC-vector seed
    corpus (copied, so the run does not grow the corpus in the repository).
    """
    build, _ = sdkBuild
    corpus = tmp_path / "corpus"
    shutil.copytree(SDK / "fuzz" / "corpus", corpus)
    result = run(
        [
            build / "fuzz_parse",
            f"-runs={FUZZ_RUNS}",
            "-max_total_time=30",
            "-max_len=1024",
            f"-dict={SDK / 'fuzz' / 'lhttp.dict'}",
            corpus,
        ],
        timeout=90,
    )
    done = re.search(r"Done (\d+) runs in (\d+) second", result.stderr)
    assert done, result.stderr[-2000:]
    assert int(done.group(1)) > 0


def codecInputs():
    """
    Tricky messages, and deterministic random mutations of the seed corpus.
    """
    tricky = [
        b"", b"LHTTP/1.0", b"LHTTP/1.0 ", b"LHTTP/1.0 a", b"LHTTP/1.0 a\r\n",
        b"LHTTP/1.0 a\r\n\r\n", b"LHTTP/1.0 a\r\n\r\n\r\n", b"LHTTP/1.0  a\r\n\r\n",
        b"LHTTP/1.0 a b\r\n\r\n", b"LHTTP/1.0 a\n\r\n", b"LHTTP/1.0 \xc3\xa9\r\n\r\n",
        b"LHTTP/1.0 \xff\r\n\r\n", b"LHTTP/1.0 a\r\nk:v\r\n", b"LHTTP/1.0 a\r\nk\r\n\r\n",
        b"LHTTP/1.0 a\r\n:v\r\n\r\n", b"LHTTP/1.0 a\r\nk : v\r\n\r\n",
        b"LHTTP/1.0 a\r\nk: \t v \t\r\n\r\nbody", b"LHTTP/1.0 a\r\nk:v\rw\r\n\r\n",
        b"LHTTP/1.0 a\r\nk:v\nw\r\n\r\n", b"LHTTP/1.0 a\r\nk:v\x00\r\n\r\n",
        b"LHTTP/1.0 a\r\nk:v\x01\x7f\r\n\r\n", b"LHTTP/1.0 a\r\nk:\xc3\xa9\r\n\r\n",
        b"LHTTP/1.0 a\r\nk:\xff\r\n\r\n", b"LHTTP/1.0 a\r\n\xc3\xa9:v\r\n\r\n",
        b"LHTTP/1.0 a\r\nk:a:b\r\nK:c\r\n\r\nx\r\n\r\ny", b"LHTTP/1.0 a\r\nk:\r\n\r\n",
        b"LHTTP/1.1 a\r\n\r\n", b"lhttp/1.0 a\r\n\r\n",
    ]
    tokens = [b"\r", b"\n", b"\r\n", b":", b" ", b"\t", b"\x00", b"\x01", b"\xc3\xa9",
              b"\xff", b"a", b"LHTTP/1.0 ", b"\r\n\r\n", b"multipart:0 3"]
    seeds = [p.read_bytes() for p in sorted((SDK / "fuzz" / "corpus").iterdir())]
    rng = random.Random(8)
    mutated = []
    for _ in range(3000):
        data = bytearray(rng.choice(seeds + tricky))
        for _ in range(rng.randint(1, 3)):
            at = rng.randint(0, len(data))
            action = rng.random()
            if action < 0.5:
                data[at:at] = rng.choice(tokens)
            elif action < 0.8:
                del data[at:at + rng.randint(1, 3)]
            else:
                data[at:at + 1] = rng.choice(tokens)
        mutated.append(bytes(data))
    return tricky + seeds + mutated


def test_codecAgreesWithTheServersCodec(sdkBuild):
    """
    On thousands of inputs, what the server's codec accepts the C codec
    parses to the same command, headers and body; what the C codec rejects,
    the server's codec rejects too. (The C codec does not check UTF-8, so it
    may accept what the server refuses for that reason alone.)
    """
    from lhttp.codec import parse
    from lhttp.errors import MalformedMessage

    build, _ = sdkBuild
    inputs = codecInputs()
    stdin = b"".join(struct.pack(">I", len(data)) + data for data in inputs)
    result = subprocess.run(
        [build / "codec_dump"], input=stdin, capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert len(lines) == len(inputs)
    accepted = 0
    for data, line in zip(inputs, lines):
        try:
            message = parse(data)
        except MalformedMessage as e:
            if line.startswith("ok"):
                assert "UTF-8" in str(e), (data, str(e))
            continue
        accepted += 1
        fields = [message.command.encode(), message.body]
        for name, value in message.headers:
            fields += [name.encode(), value.encode()]
        assert line == "ok" + "".join(" =" + f.hex() for f in fields), data
    assert accepted > 100


def readmeExample():
    """
    The C example in C{docs/c-sdk.rst}: the code block after the line
    C{.. readme-example}.
    """
    text = (ROOT / "docs" / "c-sdk.rst").read_text()
    _, _, after = text.partition(".. readme-example")
    assert after, "docs/c-sdk.rst has no '.. readme-example' marker"
    block = re.search(r"\.\. code-block:: c\n\n((?:    .*\n|\n)+)", after)
    assert block, "no C code block after the marker"
    return "\n".join(line[4:] for line in block.group(1).splitlines()) + "\n"


def test_readmeExampleCompilesWithPkgConfig(sdkBuild, tmp_path, lhttpNode):
    """
    The README's example compiles and links against the installed SDK with
    the documented pkg-config line, and does what it says against a node.
    """
    _, prefix = sdkBuild
    source = tmp_path / "example.c"
    source.write_text(readmeExample())
    env = dict(os.environ)
    env["PKG_CONFIG_PATH"] = os.pathsep.join(
        str(p) for p in prefix.glob("lib*/**/pkgconfig")
    )
    flags = run(
        ["pkg-config", "--static", "--cflags", "--libs", "lhttp"], timeout=30, env=env
    ).stdout.split()
    binary = tmp_path / "example"
    run(
        ["clang", "-std=c99", "-Wall", "-Werror", SANITIZERS, source, "-o", binary, *flags],
        timeout=120,
    )
    result = run([binary, lhttpNode.url], timeout=30)
    assert result.stdout == "chat: hello\n"


def test_readmeExampleBuildsWithCMakePackage(sdkBuild, tmp_path):
    """
    C{find_package(lhttp)} and C{lhttp::client}, as the README shows, build
    the README's example against the installed SDK.
    """
    _, prefix = sdkBuild
    project = tmp_path / "project"
    project.mkdir()
    (project / "example.c").write_text(readmeExample())
    (project / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.13)\n"
        "project(example C)\n"
        "find_package(lhttp REQUIRED)\n"
        "add_executable(example example.c)\n"
        "target_link_libraries(example PRIVATE lhttp::client)\n"
    )
    build = tmp_path / "build"
    run(
        [
            "cmake", "-S", project, "-B", build,
            "-DCMAKE_C_COMPILER=clang",
            f"-DCMAKE_PREFIX_PATH={prefix}",
            f"-DCMAKE_C_FLAGS={SANITIZERS}",
            f"-DCMAKE_EXE_LINKER_FLAGS={SANITIZERS}",
        ],
        timeout=120,
    )
    run(["cmake", "--build", build], timeout=120)
    assert (build / "example").exists()


@pytest.fixture(scope="module")
def userInstalls(tmp_path_factory):
    """
    The SDK built the way the README says (Release, the default compiler, no
    options) and, the other way it documents, with C{-DBUILD_SHARED_LIBS=ON};
    each installed with C{cmake --install build --prefix $HOME/.local} into a
    home of its own, after the build, as a user would.

    @return: C{{"static": home, "shared": home}}.
    """
    requireTools()
    base = tmp_path_factory.mktemp("c-sdk-user")
    homes = {}
    for kind, options in (("static", []), ("shared", ["-DBUILD_SHARED_LIBS=ON"])):
        build, home = base / f"build-{kind}", base / f"home-{kind}"
        home.mkdir()
        run(
            ["cmake", "-S", SDK, "-B", build, "-DCMAKE_BUILD_TYPE=Release",
             "-DLHTTP_BUILD_TESTS=OFF", *options],
            timeout=120,
        )
        run(["cmake", "--build", build, "--parallel", "2"], timeout=300)
        run(["cmake", "--install", build, "--prefix", home / ".local"], timeout=60)
        homes[kind] = home
    return homes


def userEnv(home):
    """
    An environment like a fresh shell's: C{HOME} is C{home}, and nothing
    points pkg-config or the runtime linker anywhere.
    """
    env = dict(os.environ, HOME=str(home))
    for name in ("PKG_CONFIG_PATH", "LD_LIBRARY_PATH", "LIBRARY_PATH", "CPATH",
                 "C_INCLUDE_PATH", "CFLAGS", "LDFLAGS"):
        env.pop(name, None)
    return env


def cSdkSection():
    """
    The C SDK's page (once the README's section), up to its terminal chat.
    """
    text = (ROOT / "docs" / "c-sdk.rst").read_text()
    return text[:text.index("\nThe terminal chat\n")]


def readmeShellLines(prefix):
    """
    The lines of the C SDK section's literal blocks that start with
    C{prefix}, as they would be pasted.
    """
    return [
        line.strip() for line in cSdkSection().splitlines()
        if line.startswith("    " + prefix)
    ]


def readmePkgConfigPath():
    """
    The README's C{export PKG_CONFIG_PATH=...} line for an install under
    C{$HOME/.local}.
    """
    [line] = [
        line for line in readmeShellLines("export PKG_CONFIG_PATH=")
        if "$HOME/.local" in line
    ]
    return line


def test_pkgConfigFollowsInstallPrefix(userInstalls):
    """
    After C{cmake --install build --prefix DIR}, the installed pkg-config
    files point at DIR, not at the configure-time C{/usr/local}.
    """
    for kind, home in userInstalls.items():
        prefix = home / ".local"
        env = userEnv(home)
        [pcdir] = prefix.glob("lib*/**/pkgconfig")
        env["PKG_CONFIG_PATH"] = str(pcdir)
        for module in ("lhttp", "lhttp-codec"):
            found = {
                variable: run(
                    ["pkg-config", f"--variable={variable}", module], timeout=30, env=env
                ).stdout.strip()
                for variable in ("prefix", "libdir", "includedir")
            }
            assert Path(found["prefix"]).resolve() == prefix.resolve(), (kind, module, found)
            header = Path(found["includedir"]) / "lhttp" / "codec.h"
            assert header.exists(), (kind, module, found)
            library = f"lib{module}{'.a' if kind == 'static' else '.so'}"
            assert (Path(found["libdir"]) / library).exists(), (kind, module, found)


def test_installedChatStarts(userInstalls):
    """
    The installed C{lhttp-chat} finds its libraries wherever the prefix is:
    it prints its usage, not the runtime linker's complaint.
    """
    for kind, home in userInstalls.items():
        result = subprocess.run(
            [home / ".local" / "bin" / "lhttp-chat"],
            capture_output=True, text=True, timeout=30, env=userEnv(home),
        )
        assert result.returncode == 2, (kind, result.stderr)
        assert "usage" in result.stderr, (kind, result.stderr)


LINK_PROGRAMS = {
    "lhttp": (
        "#include <lhttp/lhttp.h>\n"
        "#include <stdio.h>\n"
        "int main(void)\n"
        "{\n"
        "    lhttp_client_config config = {0};\n"
        "    lhttp_client *client;\n"
        "    config.url = \"ws://127.0.0.1:9/\";\n"
        "    if (lhttp_client_new(&config, &client) != LHTTP_OK)\n"
        "        return 1;\n"
        "    lhttp_client_free(client);\n"
        "    printf(\"client: %s\\n\", lhttp_strerror(LHTTP_OK));\n"
        "    return 0;\n"
        "}\n",
        "client: ",
    ),
    "lhttp-codec": (
        "#include <lhttp/codec.h>\n"
        "#include <stdio.h>\n"
        "#include <string.h>\n"
        "int main(void)\n"
        "{\n"
        "    const char *data = \"LHTTP/1.0 chat\\r\\npublish:news\\r\\n\\r\\nhello\";\n"
        "    lhttp_header headers[4];\n"
        "    lhttp_message msg;\n"
        "    if (lhttp_parse(data, strlen(data), &msg, headers, 4) != LHTTP_OK)\n"
        "        return 1;\n"
        "    printf(\"%.*s: %.*s\\n\", (int)msg.command.len, msg.command.ptr,\n"
        "           (int)msg.body.len, msg.body.ptr);\n"
        "    return 0;\n"
        "}\n",
        "chat: hello",
    ),
}


def test_readmeLinkLinesWorkAsPasted(userInstalls, tmp_path):
    """
    Every C{cc ...} line of the README's C SDK section, pasted into a shell
    in a fresh directory after the README's C{PKG_CONFIG_PATH} line, builds a
    program that runs, with nothing else set: the C{--static} lines against
    the default (static) install; the others against the shared install and,
    since that is what a user gets by default, the static one too. A program
    linked against the static install carries the SDK; one linked against the
    shared install loads it at run time.
    """
    lines = readmeShellLines("cc ")
    kinds = {
        (("static" if "--static" in line else "shared"),
         ("lhttp-codec" if "lhttp-codec" in line else "lhttp"))
        for line in lines
    }
    assert kinds == {(k, m) for k in ("static", "shared") for m in LINK_PROGRAMS}, lines
    for number, line in enumerate(lines):
        module = "lhttp-codec" if "lhttp-codec" in line else "lhttp"
        source, expected = LINK_PROGRAMS[module]
        for kind in ("static",) if "--static" in line else ("shared", "static"):
            home = userInstalls[kind]
            directory = tmp_path / f"app{number}-{kind}"
            directory.mkdir()
            (directory / "app.c").write_text(source)
            env = userEnv(home)
            run(["sh", "-c", f"{readmePkgConfigPath()} && {line}"], timeout=120,
                cwd=directory, env=env)
            output = re.search(r"-o (\S+)", line)
            binary = directory / (output.group(1) if output else "a.out")
            result = run([binary], timeout=30, cwd=directory, env=env)
            assert result.stdout.startswith(expected), (line, kind, result.stdout)
            needed = run(["readelf", "-d", binary], timeout=30).stdout
            if kind == "static":
                assert "liblhttp" not in needed, (line, kind, needed)
            else:
                assert f"[lib{module}.so.0]" in needed, (line, kind, needed)


class Chat:
    """
    A running C{lhttp-chat}: lines go to its stdin, its stdout is read back
    from a file, line by line.
    """

    def __init__(self, binary, url, room, nick, logDir, caFile=None):
        self.out = logDir / f"chat-{nick}.out"
        self.err = logDir / f"chat-{nick}.err"
        options = ["--ca-file", caFile] if caFile else []
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.popen = subprocess.Popen(
                [binary, *options, url, room, nick],
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )

    def lines(self):
        return self.out.read_text(errors="replace").splitlines()

    def messages(self):
        """
        The C{msg} lines as C{(nick, text)}, escapes left as printed.
        """
        return [
            tuple(line.split("\t")[1:]) for line in self.lines() if line.startswith("msg\t")
        ]

    def say(self, text):
        if isinstance(text, str):
            text = text.encode("utf-8")
        self.popen.stdin.write(text + b"\n")
        self.popen.stdin.flush()

    def describe(self):
        return (
            f"lhttp-chat stdout:\n{self.out.read_text(errors='replace')}\n"
            f"stderr:\n{self.err.read_text(errors='replace')}"
        )

    def stop(self):
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)
        if self.popen.stdin and not self.popen.stdin.closed:
            self.popen.stdin.close()


async def httpPublish(node, channel, nick, body):
    message = (
        f"LHTTP/1.0 chat\r\npublish:{channel}\r\nnick:{nick}\r\n\r\n".encode()
        + body.encode("utf-8")
    )
    response = await treq.post(node.publishURL, data=message)
    await response.content()
    assert 200 <= response.code < 300, response.code


async def nextFrom(listener, nick, timeout=10):
    """
    The next message the Python client receives whose C{nick} is C{nick}.
    """
    while True:
        message = await listener.nextMessage(timeout)
        if message.getHeader("nick") == nick:
            return message


@pytest.fixture
def chats(sdkBuild, tmp_path):
    """
    A factory for C{lhttp-chat} processes, all killed after the test.
    """
    build, _ = sdkBuild
    started = []

    def start(url, room, nick, caFile=None):
        chat = Chat(build / "lhttp-chat", url, room, nick, tmp_path, caFile)
        started.append(chat)
        return chat

    yield start
    for chat in started:
        chat.stop()


@pytest_twisted.ensureDeferred
async def test_chatExchangesMessagesInItsRoomOnly(lhttpNode, chats):
    room, elsewhere = "c-room", "c-elsewhere"
    listener = await client(lhttpNode.url)
    listener.subscribe(room)
    outsider = await client(lhttpNode.url)
    outsider.subscribe(elsewhere)
    await barrier(listener)
    await barrier(outsider)

    chat = chats(lhttpNode.url, room, "ann")
    await eventually(
        lambda: f"* joined {room}" in chat.lines() or chat.popen.poll() is not None,
        20, "lhttp-chat to join",
    )
    assert chat.popen.poll() is None, chat.describe()

    # Python -> C. The server does not acknowledge subscribe, so publish
    # until the first message shows up.
    attempt = 0

    def seen():
        return any(nick == "py" for nick, _ in chat.messages())

    while not seen():
        assert attempt < 100, chat.describe()
        attempt += 1
        await httpPublish(lhttpNode, room, "py", f"hello C #{attempt}")
        try:
            await eventually(seen, 0.2, "a first message")
        except AssertionError:
            pass
    await httpPublish(lhttpNode, elsewhere, "py", "not for ann")
    await httpPublish(lhttpNode, room, "py", "tab\there, line\nbreak, back\\slash, é")
    await eventually(
        lambda: ("py", "tab\\there, line\\nbreak, back\\\\slash, é") in chat.messages(),
        10, "the escaped message on lhttp-chat's stdout:\n" + chat.describe(),
    )

    # C -> Python.
    chat.say("hello Python, from C")
    chat.say("")
    chat.say("zwei \t wörter")
    first = await nextFrom(listener, "ann")
    assert first.command == "chat"
    assert first.getHeader("publish") == room
    assert first.body == b"hello Python, from C"
    second = await nextFrom(listener, "ann")
    assert second.body == "zwei \t wörter".encode()
    # Not UTF-8: goes out in a binary frame (a text frame would be closed
    # with 1007), and arrives as it was.
    chat.say(b"latin-1 caf\xe9")
    assert (await nextFrom(listener, "ann")).body == b"latin-1 caf\xe9"
    # lhttp-chat is subscribed too: it sees its own messages, once each.
    await eventually(
        lambda: ("ann", "zwei \\t wörter") in chat.messages(), 10, "ann's own message"
    )
    await eventually(
        lambda: ("ann", "latin-1 caf\ufffd") in chat.messages(), 10, "the latin-1 echo"
    )
    ownMessages = [text for nick, text in chat.messages() if nick == "ann"]
    assert ownMessages == [
        "hello Python, from C", "zwei \\t wörter", "latin-1 caf\ufffd"
    ]

    # Nothing crossed rooms: the outsider's first message is one published
    # after all the above, and lhttp-chat never printed the other room's.
    await httpPublish(lhttpNode, elsewhere, "py", "sentinel")
    assert (await outsider.nextMessage(10)).body == b"not for ann"
    assert (await outsider.nextMessage(10)).body == b"sentinel"
    assert not any(text == "not for ann" for _, text in chat.messages())

    # End of input: lhttp-chat closes cleanly (and LeakSanitizer is happy).
    chat.popen.stdin.close()
    await eventually(lambda: chat.popen.poll() is not None, 20, "lhttp-chat to exit")
    assert chat.popen.returncode == 0, chat.describe()
    assert chat.lines()[-1].startswith("* closed 1000"), chat.describe()


@pytest_twisted.ensureDeferred
async def test_twoChatsTalk(lhttpNode, chats):
    """
    Two C clients in one room, no Python in between but the server.
    """
    ann = chats(lhttpNode.url, "c-pair", "ann")
    bob = chats(lhttpNode.url, "c-pair", "bob")
    for chat in (ann, bob):
        await eventually(lambda: "* joined c-pair" in chat.lines(), 20, chat.describe())
    attempt = 0
    while ("ann", f"ping {attempt}") not in bob.messages():
        assert attempt < 100, bob.describe()
        attempt += 1
        ann.say(f"ping {attempt}")
        try:
            await eventually(
                lambda: ("ann", f"ping {attempt}") in bob.messages(), 0.2, "ping"
            )
        except AssertionError:
            pass
    bob.say("pong")
    await eventually(lambda: ("bob", "pong") in ann.messages(), 10, ann.describe())

    # SIGTERM (and Ctrl-C) close the connection cleanly, with stdin still open.
    bob.popen.send_signal(signal.SIGTERM)
    await eventually(lambda: bob.popen.poll() is not None, 20, "bob to exit")
    assert bob.popen.returncode == 0, bob.describe()
    assert bob.lines()[-1].startswith("* closed 1000"), bob.describe()


@pytest_twisted.ensureDeferred
async def test_chatCarriesLargeMessages(lhttpNode, chats):
    """
    Messages far larger than one network read or libwebsockets buffer are
    reassembled on receipt and sent whole.
    """
    listener = await client(lhttpNode.url)
    listener.subscribe("c-large")
    await barrier(listener)
    chat = chats(lhttpNode.url, "c-large", "big")
    await eventually(lambda: "* joined c-large" in chat.lines(), 20, chat.describe())
    # The subscribe went first on the same connection, so the echo comes back.
    big = "".join(chr(0x61 + i % 26) for i in range(300_000))
    chat.say(big)
    received = await nextFrom(listener, "big")
    assert received.body == big.encode()
    await eventually(lambda: ("big", big) in chat.messages(), 10, "the echo")

    await httpPublish(lhttpNode, "c-large", "py", "é" * 200_000)
    await eventually(
        lambda: ("py", "é" * 200_000) in chat.messages(), 10, "the large publish"
    )


def selfSignedCertificate(directory):
    """
    Write a self-signed certificate for 127.0.0.1 and its key.

    @return: C{(certPath, keyPath)}.
    """
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certPath, keyPath = directory / "cert.pem", directory / "key.pem"
    certPath.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    keyPath.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return certPath, keyPath


@pytest_twisted.ensureDeferred
async def test_chatOverTLS(startNode, chats, tmp_path):
    """
    wss:// works, and the server certificate is checked: trusted with
    C{--ca-file}, refused without.
    """
    from procs import freePort, portAccepts, waitFor

    certPath, keyPath = selfSignedCertificate(tmp_path)
    tlsPort = freePort()
    node = startNode(
        "--listen",
        f"ssl:{tlsPort}:interface=127.0.0.1:privateKey={keyPath}:certKey={certPath}",
    )
    waitFor(lambda: portAccepts(tlsPort), 20, what="the TLS port")
    url = f"wss://127.0.0.1:{tlsPort}/"

    untrusted = chats(url, "c-tls", "eve")
    untrusted.popen.stdin.close()
    await eventually(lambda: untrusted.popen.poll() is not None, 20, "eve to give up")
    assert untrusted.popen.returncode == 1, untrusted.describe()
    assert untrusted.lines()[0].startswith("* closed 1006"), untrusted.describe()

    chat = chats(url, "c-tls", "ann", caFile=certPath)
    await eventually(lambda: "* joined c-tls" in chat.lines(), 20, chat.describe())
    attempt = 0
    while not any(nick == "py" for nick, _ in chat.messages()):
        assert attempt < 100, chat.describe()
        attempt += 1
        await httpPublish(node, "c-tls", "py", "over TLS")
        try:
            await eventually(lambda: chat.messages(), 0.2, "a message")
        except AssertionError:
            pass
    chat.say("secret")
    await eventually(lambda: ("ann", "secret") in chat.messages(), 10, chat.describe())


def test_chatRejectsBadArgumentsAndUnreachableServers(sdkBuild):
    build, _ = sdkBuild
    chat = build / "lhttp-chat"
    for args in ([], ["http://x/", "room", "nick"], ["ws://h/", "two words", "n"]):
        result = subprocess.run([chat, *args], capture_output=True, text=True, timeout=30)
        assert result.returncode == 2, (args, result.stderr)
        assert "usage" in result.stderr or "URL" in result.stderr
    from procs import freePort

    result = subprocess.run(
        [chat, f"ws://127.0.0.1:{freePort()}/", "room", "nick"],
        capture_output=True, text=True, timeout=30, input="",
    )
    assert result.returncode == 1, result
    assert result.stdout.startswith("* closed 1006"), result.stdout


def publishAcked(build, url, channels, body, key, retries, count=1):
    """
    Start C{publish_acked} (sdk/c/tests/publish_acked.c): publishes with
    C{lhttp_client_publish_acked} and prints what its callback is told.
    """
    return subprocess.Popen(
        [build / "publish_acked", url, channels, body, key, str(retries), str(count)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def outcomes(process, timeout=30):
    out, err = process.communicate(timeout=timeout)
    lines = [dict(f.split("=", 1) for f in line.split()) for line in out.splitlines()
             if line.startswith("status=")]
    return process.returncode, lines, out + err


@pytest_twisted.ensureDeferred
async def test_publishAckedCallbackAndSameKey(sdkBuild, startNode):
    """
    The C SDK's acknowledged publish: its callback gets the node's ack with
    the offset; the same key again is acknowledged as a duplicate with the
    same offset and delivered once; a refused one gets its status.
    """
    build, _ = sdkBuild
    node = startNode("--history", "room.*=100")
    watcher = await client(node.url)
    watcher.subscribe("room.1")
    await barrier(watcher)
    code, lines, output = outcomes(publishAcked(build, node.url, "room.1", "hi", "c-key-1", 0, 2))
    assert code == 0, output
    assert [(l["status"], l["duplicate"], l["offset"], l["key"]) for l in lines] == [
        ("200", "0", "1", "c-key-1"), ("200", "1", "1", "c-key-1")]
    assert "message" not in output, "the node's ack was also given to on_message"
    code, lines, output = outcomes(publishAcked(build, node.url, "bad*", "hi", "-", 3))
    assert code == 1 and [l["status"] for l in lines] == ["400"], output
    assert re.fullmatch(r"[0-9a-f]{32}", lines[0]["key"])
    received = await barrier(watcher)
    assert [m.body for m in received if m.command == "chat"] == [b"hi"]


@pytest_twisted.ensureDeferred
async def test_publishAckedRetriesA503WithTheSameKey(sdkBuild, startNode, natsServer):
    """
    nats-server stopped: the node answers 503; the C SDK sends the message
    again with the same key after a pause, and its callback is told 200
    once nats-server is back; a subscriber on another node gets it once.
    With no retries left the callback gets the 503.
    """
    build, _ = sdkBuild
    from lhttpclients import untilHealth

    nodes = [startNode("--nats", natsServer.url) for _ in range(2)]
    for node in nodes:
        await untilHealth(node, 200)
    watcher = await client(nodes[0].url)
    watcher.subscribe("plain")
    await barrier(watcher)
    natsServer.signal(signal.SIGSTOP)
    try:
        await untilHealth(nodes[1], 503, timeout=10)
        code, lines, output = outcomes(publishAcked(build, nodes[1].url, "plain", "gave-up", "-", 1))
        assert code == 1 and lines[0]["status"] == "503" and lines[0]["attempts"] == "2", output
        patient = publishAcked(build, nodes[1].url, "plain", "patient", "c-key-2", 20)
        await deferLater(reactor, 2.0)
    finally:
        natsServer.signal(signal.SIGCONT)
    code, lines, output = outcomes(patient, timeout=40)
    assert code == 0, output
    assert lines[0]["status"] == "200" and int(lines[0]["attempts"]) > 1, output
    await eventually(lambda: watcher.pending() >= 1, timeout=10, what="the patient publish")
    await deferLater(reactor, 1.0)
    received = []
    while watcher.pending():
        received.append(await watcher.nextMessage(1))
    assert [m.body for m in received if m.command == "chat"] == [b"patient"]


def authClient(build, url, token, channel, *refreshTokens):
    """
    Run C{auth_client} (sdk/c/tests/auth_client.c) to its end: its event
    lines.
    """
    result = subprocess.run(
        [build / "auth_client", url, token, channel, *refreshTokens],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_tokenConnectsFirstAndRefreshes(sdkBuild, authNode):
    """
    With C{config.token} the connect message is written first and the
    messages queued in on_open only after the node's reply, which goes to
    on_auth (user, expires), not on_message; lhttp_client_refresh() sends
    a refresh whose answers (accepted, 403 for another user's token, 401)
    come to on_auth too. Against the scripted fake node of tests/authnode.py.
    """
    from authnode import receivedBy

    build, _ = sdkBuild
    url, node = authNode
    lines = authClient(build, url, "alice-1", "room", "alice-2", "bob-1", "nope")
    assert [line.split(" expires=")[0] for line in lines] == [
        "auth connect status=200 user=alice",
        "message chat hello",
        "auth refresh status=200 user=alice",
        "auth refresh status=403 user=",
        "auth refresh status=401 user=",
        "close 1000",
    ]
    assert lines[0].endswith("grace=0 detail=")
    expires = int(lines[0].split("expires=")[1].split()[0])
    assert abs(expires - (time.time() + 3600)) < 60
    assert lines[3].endswith("detail=token is for another user")
    assert receivedBy(node) == [
        r"LHTTP/1.0 connect\r\ntoken:alice-1\r\n\r\n",
        r"LHTTP/1.0 subscribe\r\nsubscribe:room\r\n\r\n",
        r"LHTTP/1.0 chat\r\npublish:room\r\n\r\nhello",
        r"LHTTP/1.0 refresh\r\ntoken:alice-2\r\n\r\n",
        r"LHTTP/1.0 refresh\r\ntoken:bob-1\r\n\r\n",
        r"LHTTP/1.0 refresh\r\ntoken:nope\r\n\r\n",
    ]


def test_refusedTokenReportedAndNothingElseSent(sdkBuild, authNode):
    """
    A refused token: on_auth gets the 401 and its reason, on_close the
    4401; the messages queued before the reply are never written. The
    node's refresh notice comes to on_auth with its grace; a 4403 to
    on_close.
    """
    from authnode import receivedBy

    build, _ = sdkBuild
    url, node = authNode
    assert authClient(build, url, "expired", "room") == [
        "auth connect status=401 user= expires=-1 grace=0 detail=token expired",
        "close 4401",
    ]
    assert receivedBy(node) == [r"LHTTP/1.0 connect\r\ntoken:expired\r\n\r\n"]
    notice = authClient(build, url, "notice", "room")
    assert notice[1] == "auth refresh status=401 user= expires=-1 grace=10 detail="
    assert authClient(build, url, "kick", "room")[-1] == "close 4403"
