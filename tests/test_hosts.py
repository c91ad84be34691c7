"""
The names a node answers to (the C{Host} header), against DNS rebinding
(issue 12, item 7): L{lhttp.web.hosts} in memory, then a real node.
"""

import json

import pytest
from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from lhttp import Config
from lhttp.testing import memoryServer
from lhttp.web.hosts import HostPolicy, checkHostPattern, hostName
from lhttpclients import rawHTTP

MESSAGE = b"LHTTP/1.0 notice\r\npublish:room\r\n\r\nhi"


class HostNameTests(SynchronousTestCase):
    def test_names(self):
        self.assertEqual(hostName(b"Chat.Example.COM:8081"), "chat.example.com")
        self.assertEqual(hostName("localhost."), "localhost")
        self.assertEqual(hostName("[::1]:8081"), "::1")
        self.assertEqual(hostName("10.0.0.5"), "10.0.0.5")

    def test_notHosts(self):
        for value in ("", " ", "a/b", "user@evil.example", "evil.example#x", "a b"):
            self.assertIsNone(hostName(value), value)


class HostPolicyTests(SynchronousTestCase):
    def test_defaults(self):
        policy = HostPolicy()
        for host in ("localhost:8081", "LOCALHOST", "app.localhost:1", "127.0.0.1:8081",
                     "[::1]:8081", "localhost.", None):
            self.assertTrue(policy.allows(host, "10.0.0.5"), host)
        for host in ("attacker.example:8081", "localhost.attacker.example", "10.0.0.6",
                     "127.0.0.1.nip.io", "", "[::1"):
            self.assertFalse(policy.allows(host, "10.0.0.5"), host)

    def test_addressConnectedTo(self):
        policy = HostPolicy()
        self.assertTrue(policy.allows("10.0.0.5:8081", "10.0.0.5"))
        self.assertTrue(policy.allows("10.0.0.5", "::ffff:10.0.0.5"))
        self.assertTrue(policy.allows("[2001:db8::1]:80", "2001:db8:0::1"))
        self.assertFalse(policy.allows("10.0.0.5", None))

    def test_patterns(self):
        policy = HostPolicy(["chat.example.com", "*.example.org", "[2001:db8::2]"])
        self.assertTrue(policy.allows("chat.example.com:443"))
        self.assertTrue(policy.allows("a.b.example.org"))
        self.assertTrue(policy.allows("[2001:db8::2]:8081"))
        self.assertTrue(policy.allows("localhost"))
        self.assertFalse(policy.allows("example.org"))
        self.assertFalse(policy.allows("chat.example.com.evil.example"))
        self.assertTrue(HostPolicy(["*"]).allows("anything.example"))

    def test_badPatterns(self):
        for pattern in ("http://chat.example.com", "chat.example.com:443", "", "a/b", "[x]"):
            self.assertRaises(ValueError, checkHostPattern, pattern)
        self.assertRaises(ValueError, Config, allowHosts=["a:1"])


class HostResourceTests(SynchronousTestCase):
    def setUp(self):
        self.server = memoryServer(allowHosts=["chat.example.com"])
        self.http = StubTreq(self.server.resource())

    def answer(self, method, url, **kwargs):
        response = self.successResultOf(self.http.request(method, url, **kwargs))
        return response.code, self.successResultOf(response.content())

    def test_foreignHostRefusedEverywhere(self):
        for method, path in (("POST", "publish"), ("GET", "health"), ("GET", "metrics"), ("GET", "")):
            code, body = self.answer(method, f"http://attacker.example/{path}", data=MESSAGE)
            self.assertEqual(code, 403, path)
            document = json.loads(body)
            self.assertEqual(document["reason"], "host not allowed")
            self.assertIn("--allow-host attacker.example", document["detail"])
        self.assertEqual(self.server.metrics.publishes, 0)

    def test_ownNamesServed(self):
        for host in ("127.0.0.1", "localhost", "chat.example.com"):
            self.assertEqual(self.answer("POST", f"http://{host}/publish", data=MESSAGE)[0], 200, host)

    def test_twoHostHeadersRefused(self):
        request = DummyRequest([b"health"])
        request.requestHeaders.setRawHeaders(b"host", [b"localhost", b"evil.example"])
        self.assertFalse(self.server.hostPolicy.allowsRequest(request))
        request.requestHeaders.setRawHeaders(b"host", [b"localhost"])
        self.assertTrue(self.server.hostPolicy.allowsRequest(request))


def handshake(port, host, origin=None):
    origin = f"Origin: {origin}\r\n" if origin else ""
    return rawHTTP(port, (
        f"GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{origin}\r\n"
    ).encode())


def publish(port, host):
    return rawHTTP(port, (
        f"POST /publish HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(MESSAGE)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + MESSAGE)


def test_dnsRebindingRefusedOwnNamesServed(lhttpNode):
    port = lhttpNode.port
    attacker = f"attacker.example:{port}"
    status, _, body = handshake(port, attacker, f"http://{attacker}")
    assert status == 403 and b"--allow-host" in body
    status, _, body = publish(port, attacker)
    assert (status, json.loads(body)["reason"]) == (403, "host not allowed")
    assert rawHTTP(port, f"GET /health HTTP/1.0\r\nHost: {attacker}\r\n\r\n".encode())[0] == 403
    for name in (f"127.0.0.1:{port}", f"localhost:{port}"):
        assert handshake(port, name, f"http://{name}")[0] == 101, name
        assert publish(port, name)[0] == 200, name
    # Clients that send no Host (HTTP/1.0) are not browsers: not checked.
    assert rawHTTP(port, b"GET /health HTTP/1.0\r\n\r\n")[0] == 200


def test_allowHostAddsANameOnly(startNode):
    node = startNode("--allow-host", "chat.example.com")
    name = f"chat.example.com:{node.port}"
    assert handshake(node.port, name, f"http://{name}")[0] == 101
    assert publish(node.port, name)[0] == 200
    assert publish(node.port, f"localhost:{node.port}")[0] == 200
    assert publish(node.port, f"attacker.example:{node.port}")[0] == 403


def test_badAllowHostRefusedAtStart():
    from twisted.python import usage

    from lhttp.tap import Options

    with pytest.raises(usage.UsageError, match="allow-host"):
        Options().parseOptions(["--allow-host", "https://chat.example.com"])
