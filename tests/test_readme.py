"""
README.rst's commands and snippets work when pasted: each is taken from the
README itself and run against real processes (ports swapped for free ones).
"""

import json
import re
import subprocess
import sys
import textwrap

import pytest_twisted

from lhttpclients import barrier, client, eventually
from procs import ROOT, Process, freePort, portAccepts

README = (ROOT / "README.rst").read_text()


def codeBlocks(language):
    """
    The bodies of the README's C{.. code-block:: language} directives.
    """
    pattern = re.compile(
        rf"^\.\. code-block:: {language}\n\n((?:(?:    .*)?\n)+)", re.MULTILINE
    )
    return [textwrap.dedent(m.group(1)).strip("\n") + "\n" for m in pattern.finditer(README)]


def blockWith(language, words):
    [block] = [b for b in codeBlocks(language) if words in b]
    return block


def test_opensWithRunAndTestCommands():
    first, second = codeBlocks("sh")[:2]
    assert "pip install ." in first and "twistd -n lhttp --port 8081" in first
    assert "pip install" in second and "python -m pytest" in second
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python -m pytest" in ci and "README.rst" in ci


@pytest_twisted.ensureDeferred
async def test_processorAndPluginSnippets(tmp_path, startNode):
    (tmp_path / "myapp").mkdir()
    (tmp_path / "myapp" / "__init__.py").write_text("")
    (tmp_path / "myapp" / "echo.py").write_text(blockWith("python", "class EchoProcessor"))
    plugins = tmp_path / "twisted" / "plugins"
    plugins.mkdir(parents=True)
    (plugins / "myapp_plugins.py").write_text(blockWith("python", "ProcessorPlugin("))

    # "run the server from that folder"
    node = startNode(cwd=str(tmp_path))
    alice = await client(node.url)
    for count in ("1", "2"):
        alice.sendLHTTP(b"LHTTP/1.0 echo\r\n\r\nhi")
        reply = await alice.nextMessage(10)
        assert reply.toBytes() == f"LHTTP/1.0 echoed\r\ncount:{count}\r\n\r\nhi".encode()


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
    finally:
        shell.stop()


def withCLI(block, port):
    """
    A README block of C{lhttp} commands, run with this checkout's CLI
    (C{test_install} checks the installed C{lhttp} script).
    """
    block = block.replace("8081", str(port))
    return re.sub(r"^lhttp ", f"{sys.executable} -m lhttp.cli ", block, flags=re.MULTILINE)


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
        ["bash", "-c", "exec " + withCLI(blockWith("sh", "lhttp listen"), lhttpNode.port)],
        name="lhttp-listen",
    )
    try:
        await eventually(lambda: "* subscribed lobby news" in listen.log() or not listen.alive(),
                         timeout=10, what="lhttp listen to subscribe")
        result = subprocess.run(
            ["bash", "-c", withCLI(blockWith("sh", "lhttp publish"), lhttpNode.port)],
            capture_output=True, text=True, timeout=30,
        )
        assert result.returncode == 0, result.stderr
        published, sent = result.stdout.splitlines()
        assert json.loads(published) == {"status": 200, "channels": ["lobby"]}
        assert sent == r"LHTTP/1.0 chat\r\nsubscribe:me\r\npublish:me\r\n\r\nround trip"

        documented = re.search(r"``listen`` prints ``(.*)``\.", README).group(1)
        await eventually(lambda: documented in listen.log(), timeout=10, what="the documented line")
    finally:
        listen.stop()


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
