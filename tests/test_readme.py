"""
README.rst's commands and snippets work when pasted: each is taken from the
README (or, for what moved there, from its page in docs/) and run as a user
would run it, against real processes (ports swapped for free ones). Every
code block of README.rst and docs/ is either run by a named test or listed
here as not runnable, with the reason: a new block fails
L{test_everyCodeBlockIsClassified} until it is one or the other.
"""

import json
import os
import re
import subprocess
import sys

import pytest_twisted

from docsnippets import blockWith, blocks, documents
from lhttpclients import barrier, client, eventually
from procs import ROOT, Process, freePort, portAccepts

README = (ROOT / "README.rst").read_text()

# A user's shell: "python", "twistd" and "lhttp" are this interpreter's.
USER_ENV = {"PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]])}


def keepPythonPath(command):
    """
    C{command} with the tests' own C{PYTHONPATH}, if any, kept after what a
    C{PYTHONPATH=...} in it sets: where lhttp is importable from when it is
    not installed (a checkout under test), as installed lhttp is for a user.
    """
    if not os.environ.get("PYTHONPATH"):
        return command
    return re.sub(r"(^|\s)PYTHONPATH=(\S+)", r'\1PYTHONPATH=\2:"$PYTHONPATH"', command)


def ranBy(test, why=""):
    """
    A block that C{test} (C{name} in this module, or C{tests/FILE::name})
    runs as pasted (C{why}: how, when not obvious).
    """
    return ("ran by", test, why)


def notRunnable(reason):
    """
    A block that is not a command or program: a wire sample, an output
    sample, a grammar.
    """
    return ("not runnable", None, reason)


WIRE_SAMPLE = notRunnable("LHTTP messages on the wire (\\r\\n as escapes); test_wireSamplesParse parses them")

# (document, text only its block contains) -> what covers it.
CODE_BLOCKS = {
    ("README.rst", "pip install . && twistd -n lhttp --demo\n"): ranBy(
        "test_opensWithRunAndTestCommands",
        "tests/test_install.py runs it in a clean virtualenv; this checks that is the line"),
    ("README.rst", "python -m pytest"): ranBy(
        "test_opensWithRunAndTestCommands", "the line .ci/run finds and runs: CI is this command"),
    ("README.rst", "<name>:<value>"): notRunnable("the message format, not a message"),
    ("README.rst", "publish:channel_jack"): WIRE_SAMPLE,
    ("README.rst", "subscribe:room42"): WIRE_SAMPLE,
    ("README.rst", "since:1187"): WIRE_SAMPLE,
    ("README.rst", "examples/pubsub_chat.py"): ranBy("test_firstClientSnippet"),
    ("README.rst", "lhttp listen ws://127.0.0.1:8081/ lobby news"): ranBy("test_cliSnippets"),
    ("README.rst", "> jwt.secret"): ranBy(
        "test_secureStartSnippets", "the node on a free port (--listen added to its twistd line)"),
    ("README.rst", "token() {"): ranBy("test_secureStartSnippets"),
    ("README.rst", 'lhttp send --token "$(token bob)"'): ranBy(
        "test_secureStartSnippets", "after the second block's first two lines, as it says"),
    ("README.rst", "lhttp publish"): ranBy("test_cliSnippets"),
    ("README.rst", "ReconnectingClient("): ranBy("test_pythonClientSnippet"),
    ("README.rst", "class EchoProcessor"): ranBy("test_processorAndPluginSnippets"),
    ("README.rst", "ProcessorPlugin("): ranBy("test_processorAndPluginSnippets"),
    ("README.rst", "in the folder that holds myapp/"): ranBy("test_processorAndPluginSnippets"),
    ("README.rst", "curl --data-binary"): ranBy("test_httpPublishSnippets"),
    ("README.rst", "from lhttp.publisher"): ranBy("test_httpPublishSnippets"),
    ("README.rst", "nats-server -a 127.0.0.1"): ranBy(
        "test_clusterSnippet", "all but its pip install line, which the first command covers"),
    ("README.rst", "do kill $(cat $name.pid)"): ranBy(
        "test_clusterSnippet", "after the cluster block, from the same folder: everything stops"),
    ("docs/c-sdk.rst", "cmake -S sdk/c -B build/c"): ranBy(
        "tests/test_c_sdk.py::userInstalls", "the same configure, build and install steps, into temporary folders"),
    ("docs/c-sdk.rst", "fuzz_parse -dict"): ranBy(
        "tests/test_c_sdk.py::test_fuzzParserBoundedRun", "a bounded run with the seed corpus and dictionary"),
    ("docs/c-sdk.rst", "export PKG_CONFIG_PATH"): ranBy("tests/test_c_sdk.py::test_readmeLinkLinesWorkAsPasted"),
    ("docs/c-sdk.rst", "--static lhttp-codec"): ranBy("tests/test_c_sdk.py::test_readmeLinkLinesWorkAsPasted"),
    ("docs/c-sdk.rst", "-Wl,-rpath"): ranBy("tests/test_c_sdk.py::test_readmeLinkLinesWorkAsPasted"),
    ("docs/c-sdk.rst", "find_package(lhttp REQUIRED)"): ranBy(
        "tests/test_c_sdk.py::test_readmeExampleBuildsWithCMakePackage"),
    ("docs/c-sdk.rst", "int main(int argc"): ranBy("tests/test_c_sdk.py::test_readmeExampleCompilesWithPkgConfig"),
    ("docs/c-sdk.rst", "lhttp_header headers[16]"): notRunnable("a fragment: the calls, not a program"),
    ("docs/c-sdk.rst", "lhttp-chat ws://"): notRunnable(
        "usage lines; tests/test_c_sdk.py runs lhttp-chat against real nodes"),
    ("docs/c-sdk.rst", "publish:<room>"): notRunnable("the message format lhttp-chat sends"),
    ("docs/development.rst", "sphinx-build"): ranBy("tests/test_docs.py::site"),
    ("docs/embedding.rst", 'putChild(b"lhttp"'): ranBy("test_embeddingSnippet"),
    ("docs/javascript.rst", "--demo --history 'room.*=100'"): notRunnable(
        "the run command with --demo; tests/test_browser.py starts nodes with --demo"),
    ("docs/javascript.rst", "demo_auth_backend.py --port 8090"): ranBy(
        "tests/test_browser_demoauth.py::test_demoAuthModeInboxesAndNames",
        "the block's backend and --channel rules, on free ports, with Chromium pages"),
    ("docs/javascript.rst", "getSubscriptionToken: async"): notRunnable(
        "needs a backend that signs tokens; sdk/js/test/auth.test.mjs makes the same calls "
        "against a scripted node speaking the wire forms"),
    ("docs/clients.rst", "getToken=fetchToken"): notRunnable(
        "needs a backend that signs tokens; tests/test_client.py::AuthClientTests makes the "
        "same calls against a scripted node speaking the wire forms"),
    ("docs/c-sdk.rst", "config.on_auth = on_auth"): notRunnable(
        "a fragment: the callback and the two fields, not a program; tests/test_c_sdk.py "
        "runs sdk/c/tests/auth_client.c, which does the same, against a scripted node"),
    ("docs/javascript.rst", "<!doctype html>"): ranBy("tests/test_browser.py::test_readmeExampleAndModuleImport"),
    ("docs/javascript.rst", "// plain script"): notRunnable("three loaders side by side, not one program"),
    ("docs/javascript.rst", "client.on_recovery = (ctx)"): notRunnable(
        "a fragment: the calls, not a page; sdk/js/test/history.test.mjs and "
        "tests/test_browser_history.py exercise them"),
    ("docs/clients.rst", "client.onRecovery = lambda"): notRunnable(
        "a fragment: the calls; tests/test_client.py exercises them against real nodes"),
    ("docs/operations.rst", "/health"): ranBy("test_metricsAndHealthSnippet"),
    ("docs/operations.rst", "--metrics-listen"): ranBy("test_protectedMetricsSnippet"),
    ("docs/operations.rst", "lhttp.logs.jsonObserver"): ranBy("test_jsonLogsSnippet"),
    ("docs/operations.rst", "--admin-listen tcp:9101"): ranBy("test_adminPageSnippet"),
    ("docs/operations.rst", '"topBySubscribers"'): ranBy(
        "tests/test_admin.py::test_docsSampleHasTheRealShape",
        "its keys compared with a real document's"),
    ("docs/operations.rst", "NODE                   READY"): notRunnable(
        "a sample of lhttp top's output; tests/test_admin_cluster.py::test_topOnce runs it"),
    ("docs/operations.rst", "POST /api/disconnect HTTP/1.1"): notRunnable(
        "an HTTP request with a placeholder token; tests/test_api_cluster.py sends real ones"),
    ("docs/operations.rst", '"closed": 2'): notRunnable(
        "a sample answer; tests/test_api.py and tests/test_api_cluster.py check real ones"),
    ("docs/operations.rst", "reason:unsubscribed by the server"): ranBy(
        "tests/test_api.py::test_docsSamples", "a node's message compared byte for byte"),
    ("docs/operations.rst", "lhttp unsubscribe http://"): notRunnable(
        "usage lines with optional parts; tests/test_api_cluster.py::test_cliAgainstARealNode "
        "runs the console script so against a real node"),
    ("docs/protocol.rst", "reason:unsubscribed by the server"): ranBy(
        "tests/test_api.py::test_docsSamples", "a node's message compared byte for byte"),
    ("docs/performance.rst", "python bench/run.py"): notRunnable(
        "a long benchmark; tests/test_bench.py runs run.py in a clean clone and loadgen.py as shown"),
    ("docs/performance.rst", "python bench/loadgen.py -url ws://127.0.0.1:8081/ -subs 100 "): ranBy(
        "tests/test_bench.py::test_loadgenAccountsForEveryDelivery", "the same command on a test node's URL"),
    ("docs/performance.rst", "elapsed_s="): notRunnable("a sample result line"),
    ("docs/performance.rst", "python bench/auth.py --repeat 9"): ranBy(
        "tests/test_bench.py::test_authOnAgainstOffInOneRun", "at smoke size, from a clean clone"),
    ("docs/performance.rst", "auth_throughput ... pairs="): notRunnable("bench/auth.py's output, measured"),
    ("docs/performance.rst", "pairs=0.94,0.68,0.74"): notRunnable(
        "a measured line of bench/cluster_history.py"),
    ("docs/performance.rst", "before  pairs=0.78,1.03"): notRunnable(
        "measured on/off pairs of bench/cluster_history.py, before and after"),
    ("docs/performance.rst", "python bench/history.py"): notRunnable(
        "a long benchmark; tests/test_bench.py::test_historyOnAgainstOffInOneRun runs it at smoke size"),
    ("docs/performance.rst", "history_ratio shape="): notRunnable("a sample of history.py's output"),
    ("docs/performance.rst", "python bench/cluster_history.py"): notRunnable(
        "a long benchmark; tests/test_bench_cluster.py::test_clusterHistoryFromACleanClone runs it at smoke size"),
    ("docs/performance.rst", "b_nats_out_msgs=20002"): notRunnable(
        "a sample of cluster_history.py's output (the figures before issue 20)"),
    ("docs/performance.rst", "b_nats_out_msgs=0 "): notRunnable(
        "a sample of cluster_history.py's output (the figures after issue 20)"),
    ("docs/presence.rst", "class LoginFilter"): ranBy("tests/test_presence.py::test_docsLoginFilter"),
    ("docs/presence.rst", "self:3fa9c1d2-2"): ranBy(
        "tests/test_presence.py::test_docsSamples", "a node's replies compared byte for byte"),
    ("docs/presence.rst", "clients:3"): ranBy("tests/test_presence.py::test_docsSamples"),
    ("docs/presence.rst", "reason:no presence"): ranBy("tests/test_presence.py::test_docsSamples"),
    ("docs/presence.rst", "LHTTP/1.0 leave"): ranBy("tests/test_presence.py::test_docsSamples"),
    ("docs/history.rst", "offset:3\\r\\n\\r\\nhi"): ranBy(
        "tests/test_history_bounds.py::test_docsSamples", "a node's replies compared byte for byte"),
    ("docs/history.rst", "reason:bad since header"): ranBy("tests/test_history_bounds.py::test_docsSamples"),
    ("docs/history.rst", "reason:bad limit header\\r\\n"): ranBy(
        "tests/test_history_bounds.py::test_docsSamples"),
    ("docs/history.rst", "before:4\\r\\n\\r\\n"): ranBy("tests/test_history_bounds.py::test_docsSamples"),
    ("docs/history.rst", "limit:50"): ranBy("tests/test_history_bounds.py::test_docsSamples"),
    ("docs/history.rst", "lhttp: The JetStream stream LHTTP_HISTORY differs"): ranBy(
        "tests/test_history_live.py::test_streamHasOneOwner", "a refusing node's line, compared"),
    ("docs/history.rst", "some may be missing here"): ranBy(
        "tests/test_history_bounds.py::PacingTests::test_restMissingIsTold",
        "the notice a recovery sends, compared byte for byte"),
    ("docs/history.rst", "prev:12\npublish:room.1"): notRunnable(
        "a relayed message's head, as a sample"),
    ("docs/history.rst", "status:403  reason:forbidden"): notRunnable(
        "a table of the history request's error statuses and reasons"),
    ("docs/protocol.rst", "<name>:<value>"): notRunnable("the message format, not a message"),
    ("docs/protocol.rst", "publish:channel_jack"): WIRE_SAMPLE,
    ("docs/protocol.rst", "subscribe:room42"): WIRE_SAMPLE,
    ("docs/clients.rst", "ack = await client.publish"): notRunnable(
        "a fragment: the call; tests/test_ack.py exercises publish(ack=True) and its retries"),
    ("docs/javascript.rst", "const ack = await client.publish"): notRunnable(
        "a fragment: the call; tests/test_ack_browser.py runs it in Chromium through a stall"),
    ("docs/protocol.rst", "publish-ack:<id>"): notRunnable(
        "the ack's form with placeholders; tests/test_ack.py checks real ones"),
    ("docs/protocol.rst", '"positions": [{"channel": "room.1"'): notRunnable(
        "a sample /publish answer; tests/test_ack.py checks real ones"),
    ("docs/protocol.rst", "reason:reserved header"): ranBy(
        "tests/test_nodeword.py::test_docsSample", "a node's reply compared byte for byte"),
    ("docs/protocol.rst", "since:room.1=5"): ranBy(
        "tests/test_client.py::test_gapDocsSample",
        "the stamped message injected, the client's re-subscribe compared byte for byte"),
    ("docs/c-sdk.rst", "lhttp_positions_check(positions"): notRunnable(
        "a fragment of on_message; sdk/c/tests/test_positions.c exercises the calls"),
    ("docs/protocol.rst", "reason:bad channel name"): notRunnable(
        "an error reply, with a placeholder body; tests/test_server.py checks real ones"),
    ("docs/security.rst", "TokenAuthFilter"): ranBy("test_authFilterSnippet"),
    ("docs/security.rst", "PATTERN=ACTION:WHO[|WHO...]"): notRunnable("the --channel grammar"),
    ("docs/security.rst", "--channel 'user.{sub}=sub:owner,pub:nobody,history:owner'"): ranBy(
        "tests/test_permissions_node.py::test_docsChatRules",
        "its --channel rules on a real node, attacked"),
    ("docs/security.rst", '"caps": [{"channels"'): notRunnable(
        "a JWT's claims; tests/test_permissions.py checks capabilities"),
    ("docs/security.rst", '"channel": "private.x", "exp"'): notRunnable(
        "a subscription token's claims; tests/test_permissions_node.py signs real ones"),
    ("docs/security.rst", "reason:subscription token expired"): ranBy(
        "tests/test_permissions.py::test_subscriptionTokenExpirySample",
        "compared byte for byte with what a node sends at exp"),
    ("docs/security.rst", "channel-token:<JWT>"): notRunnable(
        "the header's form with a placeholder; tests/test_permissions_node.py sends real tokens"),
    ("docs/security.rst", '"detail": "publish to'): ranBy(
        "tests/test_permissions.py::test_docsSamples", "a node's /publish answer compared"),
    ("docs/security.rst", "reason:forbidden\\r\\ncommand:chat"): ranBy(
        "tests/test_permissions.py::test_docsSamples", "a node's reply compared byte for byte"),
    ("docs/authentication.rst", "LHTTP/1.0 connect\\r\\ntoken:<JWT>"): notRunnable(
        "the connect message and reply, with a placeholder token; "
        "tests/test_auth_unit.py compares real replies byte for byte"),
    ("docs/authentication.rst", "\\r\\n\\r\\ntoken expired\n"): notRunnable(
        "a refused connect; tests/test_auth.py checks real ones"),
    ("docs/authentication.rst", "command:chat"): notRunnable(
        "the reply before connect; tests/test_auth.py compares it byte for byte"),
    ("docs/authentication.rst", "status:503"): notRunnable(
        "the unavailable reply; tests/test_auth.py checks real ones"),
    ("docs/authentication.rst", "grace:10"): notRunnable(
        "the expiry notice; tests/test_auth.py compares one (grace:2) byte for byte"),
    ("docs/authentication.rst", "LHTTP/1.0 refresh\\r\\ntoken:<JWT>"): notRunnable(
        "refresh and its reply, with a placeholder token; tests/test_auth.py checks real ones"),
    ("docs/authentication.rst", "answer has already expired"): ranBy(
        "tests/test_auth_hardening.py::test_proxyExpiredSample",
        "compared with the reply tests/test_auth_hardening.py gets from a node"),
    ("docs/authentication.rst", "not a connection token"): ranBy(
        "tests/test_auth_hardening.py::test_subscriptionTokenRefusedSample",
        "compared with the reply tests/test_auth_hardening.py gets from a node"),
    ("docs/authentication.rst", "reason:no longer allowed"): ranBy(
        "tests/test_auth_hardening.py::test_noLongerAllowedSample",
        "compared with the message tests/test_auth_hardening.py gets from a node"),
    ("docs/authentication.rst", "POST /lhttp/connect HTTP/1.1"): notRunnable(
        "an HTTP request as the connect proxy receives it; tests/test_auth_unit.py checks one"),
    ("docs/authentication.rst", "LHTTP_AUTH_JWT_SECRET=change-me"): ranBy("tests/test_auth.py::test_docsJWTExample"),
    ("docs/authentication.rst", "def tokenFor(user)"): ranBy("tests/test_auth.py::test_docsJWTExample"),
    ("docs/authentication.rst", "class ConnectProxy"): ranBy("tests/test_auth.py::test_docsProxyExample"),
    ("docs/authentication.rst", "--auth-proxy http://127.0.0.1:8000"): ranBy(
        "tests/test_auth.py::test_docsProxyExample"),
    ("docs/upstream.rst", "examples/record_backend.py"): ranBy("test_upstreamScenarioSnippets"),
    ("docs/upstream.rst", "--upstream-allow"): ranBy("test_upstreamScenarioSnippets"),
    ("docs/upstream.rst", "mike = await connect"): ranBy("test_upstreamScenarioSnippets"),
    ("docs/upstream.rst", "/records"): ranBy("test_upstreamScenarioSnippets"),
    ("docs/upstream.rst", "LHTTP-Command: chat"): notRunnable("an HTTP request as the backend receives it"),
    ("docs/upstream.rst", "LHTTP/1.0 upstream"): notRunnable("a reply, with a placeholder body"),
}


def isDefined(reference):
    """
    Whether the test function (or fixture) C{reference} names is defined.
    """
    path, _, name = reference.rpartition("::")
    # tests/FILE::Class::method: the file, and the method in it.
    path = path.split("::")[0]
    source = (ROOT / path).read_text() if path else (ROOT / "tests" / "test_readme.py").read_text()
    return re.search(rf"^ *(async )?def {re.escape(name)}\(", source, re.MULTILINE) is not None


def test_everyCodeBlockIsClassified():
    """
    Each code block of README.rst and docs/ is matched by exactly one entry
    of L{CODE_BLOCKS}, each entry matches exactly one block, and each test
    named there exists: a new, moved or changed block fails here until it
    is run by a test or said not to be runnable.
    """
    problems = []
    used = set()
    for path in documents():
        for block in blocks(path):
            keys = [key for key in CODE_BLOCKS if key[0] == path and key[1] in block.text]
            if len(keys) != 1:
                problems.append(f"{path}:{block.line}: {len(keys)} entries for {block.text[:60]!r}")
            used.update(keys)
    problems += [f"no block for {key}" for key in CODE_BLOCKS if key not in used]
    problems += [
        f"{key}: no test {test}"
        for key, (kind, test, _) in CODE_BLOCKS.items()
        if kind == "ran by" and not isDefined(test)
    ]
    assert problems == []


def test_readmeRunsEveryBlockOrSaysWhy():
    """
    The README (the path from install to cluster) has nothing but runnable
    snippets and wire samples.
    """
    readme = {key: value for key, value in CODE_BLOCKS.items() if key[0] == "README.rst"}
    assert len(readme) == len(blocks("README.rst"))
    assert {value[2] for value in readme.values() if value[0] == "not runnable"} <= {
        WIRE_SAMPLE[2], "the message format, not a message"}


def test_wireSamplesParse():
    """
    The LHTTP messages shown as wire samples are valid messages.
    """
    from lhttp.codec import parse

    samples = [
        block.text
        for path in documents()
        for block in blocks(path)
        for (document, words), value in CODE_BLOCKS.items()
        if value is WIRE_SAMPLE and document == path and words in block.text
    ]
    assert len(samples) == 5
    for sample in samples:
        for line in sample.splitlines():
            data = line.encode().decode("unicode_escape").encode("latin-1")
            assert parse(data).command


def test_opensWithRunAndTestCommands():
    """
    The README opens with the run command C{tests/test_install.py} runs in a
    clean virtualenv, and the test command C{.ci/run} takes from it.
    """
    first, second = (block.text for block in blocks("README.rst")[:2])
    assert first == "pip install . && twistd -n lhttp --demo\n"
    install = (ROOT / "tests" / "test_install.py").read_text()
    assert "pip install \\. && twistd" in install
    ci = (ROOT / ".ci" / "run").read_text()
    pattern = re.search(r"grep -m1 -E '(.*?)' README.rst", ci).group(1)
    [ciCommand] = [line.strip() for line in README.splitlines() if re.search(pattern, line)][:1]
    assert second == ciCommand + "\n"
    assert "pip install '.[test]'" in second and "python -m pytest" in second


@pytest_twisted.ensureDeferred
async def test_firstClientSnippet(lhttpNode):
    """
    The terminal chat, pasted in two terminals (the second with another
    nick): what is typed in one appears in both.
    """
    command = blockWith("sh", "examples/pubsub_chat.py", ["README.rst"])
    command = command.strip().replace("8081", str(lhttpNode.port))
    assert command.endswith(" ann")
    ann = Process(["bash", "-c", "exec " + command], cwd=str(ROOT), env=USER_ENV, name="ann", stdin=True)
    bob = Process(["bash", "-c", "exec " + command[:-3] + "bob"], cwd=str(ROOT), env=USER_ENV,
                  name="bob", stdin=True)
    try:
        for chat in (ann, bob):
            await eventually(lambda: "* joined lobby" in chat.log() or not chat.alive(),
                             what=f"{chat.name} joined")
            assert chat.alive(), chat.log()
        # "joined" means the subscribe was sent: type until bob's is in place.
        for attempt in range(20):
            ann.popen.stdin.write(f"hello {attempt}\n".encode())
            ann.popen.stdin.flush()
            try:
                await eventually(lambda: "<ann> hello" in bob.log(), timeout=1, what="ann's line at bob")
                break
            except AssertionError:
                pass
        assert "<ann> hello" in bob.log(), bob.log()
        assert "<ann> hello 0" in ann.log(), ann.log()
    finally:
        ann.stop()
        bob.stop()


@pytest_twisted.ensureDeferred
async def test_processorAndPluginSnippets(tmp_path):
    """
    The processor and its plugin saved where the README says, and the
    server run from that folder with the real C{twistd}.
    """
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "__init__.py").write_text("")
    (tmp_path / "myapp" / "echo.py").write_text(blockWith("python", "class EchoProcessor"))
    plugins = tmp_path / "twisted" / "plugins"
    plugins.mkdir(parents=True)
    (plugins / "myapp_plugins.py").write_text(blockWith("python", "ProcessorPlugin("))

    # "run the server from that folder"
    command = keepPythonPath(blockWith("sh", "in the folder that holds myapp/", ["README.rst"]))
    port = freePort()
    # As pasted, on a free port rather than 8081.
    command = command.replace("twistd -n lhttp", f"twistd -n lhttp --listen tcp:{port}:interface=127.0.0.1")
    node = Process(["bash", "-c", command],
                   cwd=str(tmp_path), env=USER_ENV, name="echo-node")
    try:
        await eventually(lambda: portAccepts(port) or not node.alive(), what="the echo node")
        assert node.alive(), node.log()
        alice = await client(f"ws://127.0.0.1:{port}/")
        for count in ("1", "2"):
            alice.sendLHTTP(b"LHTTP/1.0 echo\r\n\r\nhi")
            reply = await alice.nextMessage(10)
            assert reply.toBytes() == f"LHTTP/1.0 echoed\r\ncount:{count}\r\n\r\nhi".encode()
    finally:
        node.stop()


@pytest_twisted.ensureDeferred
async def test_embeddingSnippet(tmp_path):
    port = freePort()
    script = tmp_path / "site.py"
    script.write_text(blockWith("python", "putChild(b\"lhttp\"").replace("8080", str(port)))
    site = Process([sys.executable, str(script)], name="site")
    try:
        await eventually(lambda: portAccepts(port) or not site.alive(), what="the pasted site")
        assert site.alive(), site.log()
        alice = await client(f"ws://127.0.0.1:{port}/lhttp/")
        alice.subscribe("room")
        await barrier(alice)
        body = b"LHTTP/1.0 notice\r\npublish:room\r\n\r\nembedded"
        result = subprocess.run(
            ["curl", "-s", "--data-binary", "@-", f"http://127.0.0.1:{port}/lhttp/publish"],
            input=body, capture_output=True, timeout=20,
        )
        assert b'"status": 200' in result.stdout
        assert (await alice.nextMessage(10)).toBytes() == body
    finally:
        site.stop()


@pytest_twisted.ensureDeferred
async def test_httpPublishSnippets(tmp_path, lhttpNode):
    alice = await client(lhttpNode.url)
    alice.subscribe("lobby")
    await barrier(alice)

    curl = blockWith("sh", "curl --data-binary").replace("8081", str(lhttpNode.port))
    result = subprocess.run(["bash", "-c", curl], capture_output=True, timeout=20)
    assert b'"channels": ["lobby"]' in result.stdout, result
    notice = await alice.nextMessage(10)
    assert notice.toBytes() == b"LHTTP/1.0 notice\r\npublish:lobby\r\n\r\nserver restarts at 22:00"

    script = tmp_path / "publish.py"
    script.write_text(blockWith("python", "from lhttp.publisher").replace("8081", str(lhttpNode.port)))
    process = Process([sys.executable, str(script)], name="publisher")
    await eventually(lambda: not process.alive(), what="the publish snippet to finish")
    assert process.stop() == 0, process.log()
    done = await alice.nextMessage(10)
    assert (done.getHeader("from"), done.body) == ("ops", b"deploy done")


@pytest_twisted.ensureDeferred
async def test_upstreamScenarioSnippets(tmp_path):
    """
    "Upstream: calling your backend", pasted: the record backend, lhttp
    allowed to call it, Jack and Mike, and curl for the records.
    """
    backendPort, nodePort = freePort(), freePort()

    def pasted(text):
        return text.replace("8080", str(backendPort)).replace("8081", str(nodePort))

    backendCommand = pasted(blockWith("sh", "examples/record_backend.py"))
    backendCommand = backendCommand.replace("python ", f"{sys.executable} {ROOT}/", 1)
    backend = Process(["bash", "-c", "exec " + backendCommand], cwd=str(tmp_path), name="record-backend")
    node = Process(["bash", "-c", "exec " + pasted(blockWith("sh", "--upstream-allow"))],
                   cwd=str(tmp_path), name="node")
    try:
        for process, port in ((backend, backendPort), (node, nodePort)):
            await eventually(lambda: portAccepts(port) or not process.alive(), what=process.name)
            assert process.alive(), process.log()

        script = tmp_path / "jack_and_mike.py"
        script.write_text(pasted(blockWith("python", "channel_mike")))
        chat = Process([sys.executable, str(script)], name="jack-and-mike")
        await eventually(lambda: not chat.alive(), what="the Jack and Mike snippet to finish")
        assert chat.stop() == 0, chat.log()
        assert "mike got: hello mike, I am jack" in chat.log()

        curl = pasted(blockWith("sh", "/records"))

        def records():
            result = subprocess.run(["bash", "-c", curl], capture_output=True, timeout=20)
            found = json.loads(result.stdout or b"[]")
            return found if len(found) >= 2 else None

        found = await eventually(records, timeout=10, what="two records")
        byMethod = {r["method"]: r for r in found}
        assert len(found) == 2
        assert byMethod["POST"]["path"] == "/record"
        assert byMethod["POST"]["body"].endswith("publish:channel_mike\r\n\r\nhello mike, I am jack")
        assert (byMethod["GET"]["path"], byMethod["GET"]["body"]) == ("/record?user=a&age=26", "")
        assert (tmp_path / "records.jsonl").exists()
    finally:
        node.stop()
        backend.stop()


@pytest_twisted.ensureDeferred
async def test_clusterSnippet(tmp_path):
    """
    The three-node cluster as pasted (minus the install line), on free
    ports: a message published on node 1 reaches a subscriber on node 3.
    """
    from lhttpclients import untilHealth

    block = blockWith("sh", "nats-server -a 127.0.0.1")
    commands = [line for line in block.splitlines() if not line.startswith("pip install")]
    natsPort, *ports = (freePort() for _ in range(4))
    script = "\n".join(commands).replace("4222", str(natsPort))
    for old, new in zip(("8081", "8082", "8083"), ports):
        script = script.replace(old, str(new))
    shell = Process(["bash", "-c", script + "\nwait"], name="cluster", cwd=str(tmp_path))
    stopped = False
    try:
        nodes = []
        for port in ports:
            node = type("Node", (), {"httpURL": f"http://127.0.0.1:{port}/", "url": f"ws://127.0.0.1:{port}/"})
            await untilHealth(node, 200, timeout=30)
            nodes.append(node)
        listener = await client(nodes[2].url)
        listener.subscribe("lobby")
        await barrier(listener)
        speaker = await client(nodes[0].url)
        speaker.publish("lobby", "chat", [("nick", "ann")], "across the cluster")
        heard = await listener.nextMessage(10)
        assert heard.body == b"across the cluster"

        # The README's stop line, from the same folder: every node and
        # nats-server end (the shell's wait returns), pid files gone.
        pidFiles = ["node1.pid", "node2.pid", "node3.pid", "nats.pid"]
        assert all((tmp_path / name).exists() for name in pidFiles)
        stop = subprocess.run(["bash", "-c", blockWith("sh", "do kill $(cat $name.pid)")],
                              cwd=str(tmp_path), capture_output=True, text=True, timeout=30)
        assert stop.returncode == 0, stop.stderr
        await eventually(lambda: not shell.alive(), timeout=30, what="the cluster's processes to end")
        stopped = True
        assert not any((tmp_path / name).exists() for name in pidFiles[:3]), "twistd removes its pid file"
    finally:
        if not stopped:
            shell.stop()


def withCLI(block, port):
    """
    A README block of C{lhttp} commands, for the node on C{port}; run with
    L{USER_ENV}, C{lhttp} is the installed script.
    """
    return block.replace("8081", str(port))


@pytest_twisted.ensureDeferred
async def test_pythonClientSnippet(tmp_path, lhttpNode):
    script = tmp_path / "client.py"
    script.write_text(blockWith("python", "ReconnectingClient(").replace("8081", str(lhttpNode.port)))
    process = Process([sys.executable, str(script)], name="client-snippet")
    await eventually(lambda: not process.alive(), what="the client snippet to finish")
    assert process.stop() == 0, process.log()
    assert process.log() == "ann hello from Python\n"


@pytest_twisted.ensureDeferred
async def test_cliSnippets(lhttpNode):
    listen = Process(
        ["bash", "-c", "exec " + withCLI(blockWith("sh", "lhttp listen ws://127.0.0.1:8081/ lobby"),
                                         lhttpNode.port)],
        env=USER_ENV, name="lhttp-listen",
    )
    try:
        await eventually(lambda: "* subscribed lobby news" in listen.log() or not listen.alive(),
                         timeout=10, what="lhttp listen to subscribe")
        result = subprocess.run(
            ["bash", "-c", withCLI(blockWith("sh", "lhttp publish"), lhttpNode.port)],
            capture_output=True, text=True, timeout=30, env={**os.environ, **USER_ENV},
        )
        assert result.returncode == 0, result.stderr
        published, sent = result.stdout.splitlines()
        assert json.loads(published) == {"status": 200, "channels": ["lobby"]}
        assert sent == r"LHTTP/1.0 chat\r\nsubscribe:me\r\npublish:me\r\n\r\nround trip"

        documented = re.search(r"``listen`` prints ``(.*)``\.", README).group(1)
        await eventually(lambda: documented in listen.log(), timeout=10, what="the documented line")
    finally:
        listen.stop()


@pytest_twisted.ensureDeferred
async def test_secureStartSnippets(tmp_path):
    """
    "Secure it" as pasted, in three shells of one folder: the node with a
    JWT secret and the inbox rule, alice listening to her inbox with a
    token the shell function signed, bob writing to it and refused
    reading it; no token in the node's log.
    """
    port = freePort()
    nodeBlock = blockWith("sh", "> jwt.secret")
    aliceBlock = blockWith("sh", "token() {")
    bobBlock = blockWith("sh", 'lhttp send --token "$(token bob)"')
    node = Process(
        ["bash", "-c", nodeBlock.replace(
            "twistd -n lhttp", f"exec twistd -n lhttp --listen tcp:{port}:interface=127.0.0.1")],
        env=USER_ENV, name="secure-node", cwd=str(tmp_path),
    )
    shells = [node]
    try:
        await eventually(lambda: portAccepts(port) or not node.alive(), timeout=30, what="the node")
        assert node.alive(), node.log()
        alice = Process(["bash", "-c", withCLI(aliceBlock, port)],
                        env=USER_ENV, name="secure-alice", cwd=str(tmp_path))
        shells.append(alice)
        await eventually(lambda: "* subscribed user.alice" in alice.log() or not alice.alive(),
                         timeout=20, what="alice to listen")
        assert alice.alive(), alice.log()
        # "after the same first two lines"
        setup = "\n".join(aliceBlock.splitlines()[:2])
        bob = Process(["bash", "-c", setup + "\n" + withCLI(bobBlock, port)],
                      env=USER_ENV, name="secure-bob", cwd=str(tmp_path))
        shells.append(bob)
        await eventually(lambda: "hi alice" in alice.log(), timeout=20, what="alice to get bob's message")
        await eventually(lambda: "status:403" in bob.log() or not bob.alive(), timeout=20,
                         what="bob's refusal")
        assert r"status:403\r\nreason:forbidden\r\ncommand:subscribe\r\nchannel:user.alice" \
            in bob.log(), bob.log()
        assert r"LHTTP/1.0 chat\r\npublish:user.alice\r\n\r\nhi alice" in alice.log()
        assert "hi alice" not in bob.log()
        assert "eyJ" not in node.log()
    finally:
        for shell in shells:
            shell.stop()


def test_metricsAndHealthSnippet(lhttpNode):
    block = blockWith("sh", "/health").replace("8081", str(lhttpNode.port))
    result = subprocess.run(["bash", "-c", block], capture_output=True, text=True, timeout=30)
    lines = result.stdout.splitlines()
    assert "lhttp_connections 0.0" in lines
    assert "lhttp_broker_ready 1.0" in lines
    assert lines[-1] == "200"
    assert all(line.startswith("lhttp_") for line in lines[:-1])


@pytest_twisted.ensureDeferred
async def test_protectedMetricsSnippet(tmp_path):
    """
    The node with a metrics token and a metrics port, and the scrape,
    pasted; without the token the same URL is refused.
    """
    port, metricsPort = freePort(), freePort()
    start, scrape = (
        line.replace("8081", str(port)).replace("9100", str(metricsPort))
        for line in blockWith("sh", "--metrics-listen").splitlines()
    )
    node = Process(["bash", "-c", start], cwd=str(tmp_path), name="metrics-node")
    try:
        await eventually(lambda: portAccepts(metricsPort) or not node.alive(), what="the metrics port")
        assert node.alive(), node.log()
        result = subprocess.run(["bash", "-c", scrape], capture_output=True, text=True, timeout=30)
        assert result.stdout == "lhttp_connections 0.0\n", result
        refused = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
             f"http://127.0.0.1:{metricsPort}/metrics"],
            capture_output=True, text=True, timeout=30,
        )
        assert refused.stdout == "401"
    finally:
        node.stop()


@pytest_twisted.ensureDeferred
async def test_adminPageSnippet(tmp_path):
    """
    The node with an admin port and C{lhttp top --once}, pasted: one node,
    no NATS; the clients' port has no admin page.
    """
    port, adminPort = freePort(), freePort()
    start, top = (
        line.replace("8081", str(port)).replace("9101", str(adminPort))
        for line in blockWith("sh", "--admin-listen tcp:9101").splitlines()
    )
    node = Process(["bash", "-c", "exec " + start], cwd=str(tmp_path), name="admin-node")
    try:
        await eventually(lambda: portAccepts(adminPort) or not node.alive(), what="the admin port")
        assert node.alive(), node.log()
        result = subprocess.run(["bash", "-c", top], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result
        assert ": 1 node (no NATS), 0 connections" in result.stdout.splitlines()[0], result.stdout
        elsewhere = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
             f"http://127.0.0.1:{port}/admin/api/cluster"],
            capture_output=True, text=True, timeout=30,
        )
        assert elsewhere.stdout == "404"
    finally:
        node.stop()


@pytest_twisted.ensureDeferred
async def test_jsonLogsSnippet(tmp_path):
    port = freePort()
    command = blockWith("sh", "lhttp.logs.jsonObserver").replace("8081", str(port))
    node = Process(["bash", "-c", "exec " + command], cwd=str(tmp_path), name="json-node")
    try:
        await eventually(lambda: portAccepts(port) or not node.alive(), what="the JSON-logging node")
        assert node.alive(), node.log()
        records = [json.loads(line) for line in node.log().splitlines()]
        assert any(r["namespace"] == "lhttp.service" and r["listen"] == [f"tcp:{port}"] for r in records)
    finally:
        node.stop()


def test_readmeIsValidRestructuredText():
    """
    The README renders without a docutils warning (a broken table or
    link hides what users came to read).
    """
    import io

    from docutils.core import publish_doctree

    warnings = io.StringIO()
    publish_doctree(README, settings_overrides={"warning_stream": warnings, "report_level": 2})
    assert warnings.getvalue() == ""


@pytest_twisted.ensureDeferred
async def test_authFilterSnippet():
    """
    The example auth filter started as pasted, from the clone: a message
    without a token is refused with 401.
    """
    port = freePort()
    command = keepPythonPath(blockWith("sh", "TokenAuthFilter")).replace("8081", str(port))
    node = Process(["bash", "-c", command], cwd=str(ROOT), env=USER_ENV, name="auth-node")
    try:
        await eventually(lambda: portAccepts(port) or not node.alive(), what="the auth node")
        assert node.alive(), node.log()
        stranger = await client(f"ws://127.0.0.1:{port}/")
        stranger.send("hello")
        refused = await stranger.nextMessage(10)
        assert (refused.command, refused.getHeader("status")) == ("error", "401")
    finally:
        node.stop()
