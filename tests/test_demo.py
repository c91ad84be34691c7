"""
C{/demo/}: paths no file can have get a quiet 404 (issue 12, item 10).
"""

import http.client

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import getChildForRequest
from twisted.web.test.requesthelper import DummyRequest

from lhttp.web.demo import DemoFiles, demoDirectory

BAD_PATHS = ("/demo/%00", "/demo/a%00b.js", "/demo/%ff.js", "/demo/x/%00")


class DemoFilesTests(SynchronousTestCase):
    def child(self, *segments):
        return getChildForRequest(DemoFiles(demoDirectory()), DummyRequest(list(segments)))

    def test_nulIsNotFound(self):
        for segment in (b"\x00", b"a\x00b.js"):
            child = self.child(segment)
            self.assertEqual(child.code, 404, segment)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_notUTF8IsNotFoundAndNotLogged(self):
        self.assertEqual(self.child(b"\xff.js").code, 404)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_filesStillServed(self):
        child = self.child(b"lhttp.js")
        self.assertIsInstance(child, DemoFiles)
        self.assertTrue(child.exists())


def get(node, path):
    connection = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_badDemoPathsAre404AndNotLogged(startNode):
    node = startNode("--demo")
    assert [get(node, path)[0] for path in BAD_PATHS] == [404] * len(BAD_PATHS)
    status, body = get(node, "/demo/lhttp.js")
    assert status == 200 and b"LHTTP" in body
    log = node.log()
    assert "Traceback" not in log and "CRITICAL" not in log and "Unhandled" not in log, log
