"""
A backend for lhttp's C{upstream} header: it stores every request it gets
as one JSON line and serves them back at C{GET /records}.

    python examples/record_backend.py --port 8080 --file records.jsonl

then run lhttp with C{--upstream-allow http://127.0.0.1:8080/} and send
C{upstream:POST http://127.0.0.1:8080/record} in a message. Each record
holds what lhttp sends (see L{lhttp.upstream}): the method, the path with
its query, the C{LHTTP-Command}, the C{LHTTP-Headers} (decoded from JSON),
the C{LHTTP-Peer} and the body (the whole LHTTP message for a POST).
"""

import argparse
import json
import sys

from twisted.internet import defer, endpoints, task
from twisted.logger import Logger, globalLogBeginner, textFileLogObserver
from twisted.web.resource import Resource
from twisted.web.server import Site


class RecordBackend(Resource):
    """
    Records every request but C{GET /records}, which lists them.
    """

    isLeaf = True
    log = Logger()

    def __init__(self, path):
        Resource.__init__(self)
        self.path = path
        open(path, "a").close()

    def render(self, request):
        request.setHeader(b"content-type", b"application/json")
        if request.method == b"GET" and request.path == b"/records":
            with open(self.path) as records:
                return json.dumps([json.loads(line) for line in records]).encode()
        lhttpHeaders = request.getHeader(b"lhttp-headers")
        record = {
            "method": request.method.decode(),
            "path": request.uri.decode(),
            "command": (request.getHeader(b"lhttp-command") or b"").decode(),
            "headers": json.loads(lhttpHeaders) if lhttpHeaders else [],
            "peer": (request.getHeader(b"lhttp-peer") or b"").decode(),
            "body": request.content.read().decode("utf-8", "replace"),
        }
        with open(self.path, "a") as records:
            records.write(json.dumps(record) + "\n")
        self.log.info("{method} {path} from {peer}", **record)
        return json.dumps({"stored": True}).encode()


async def main(reactor, argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--interface", default="127.0.0.1")
    parser.add_argument("--file", default="records.jsonl", help="where records are appended")
    args = parser.parse_args(argv)
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stdout)])
    endpoint = endpoints.TCP4ServerEndpoint(reactor, args.port, interface=args.interface)
    await endpoint.listen(Site(RecordBackend(args.file)))
    await defer.Deferred()  # serve until stopped


if __name__ == "__main__":
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, sys.argv[1:])))
