"""
README.rst's commands and snippets work when pasted: each is taken from the
README itself and run against real processes (ports swapped for free ones).
"""

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

    curl = blockWith("sh", "curl").replace("8081", str(lhttpNode.port))
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
