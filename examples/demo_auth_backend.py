"""
The chat-room demo's token backend: it signs a short-lived HS256 JWT for
a nickname, with the secret the node verifies tokens with.

    export LHTTP_AUTH_JWT_SECRET=$(python -c 'import secrets; print(secrets.token_hex(32))')
    python examples/demo_auth_backend.py --port 8090 --origin http://127.0.0.1:8081

then start the node with the same C{LHTTP_AUTH_JWT_SECRET} and open
C{http://127.0.0.1:8081/demo/?auth=http://127.0.0.1:8090/token}
(docs/javascript.rst has the whole recipe).

C{POST /token} with the JSON body C{{"nick": "alice"}} answers C{{"token":
"<JWT>", "user": "alice", "expires": <Unix seconds>}}; the token's C{sub} is
the nickname and its C{exp} is C{--ttl} seconds away (10 minutes by
default), so the page's SDK refreshes it by itself while it stays open.
Browser pages from C{--origin} may call it (CORS).

This is a demo: it gives a token to whoever asks for a nickname. A real
backend signs one only for the user its own login (a session cookie, a
password) has authenticated.
"""

import argparse
import json
import os
import re
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt

SECRET_VARIABLE = "LHTTP_AUTH_JWT_SECRET"

# What the node accepts as a user id that can own a user.<nick> channel:
# no '.', '#', ',', '*', '>', whitespace or control characters.
NICK = re.compile(r"[A-Za-z0-9_-]{1,32}")


def issueToken(secret, nick, ttl, now=None):
    """
    @return: an HS256 JWT for C{nick}, valid C{ttl} seconds from C{now}.
    """
    now = int(time.time() if now is None else now)
    return jwt.encode({"sub": nick, "iat": now, "exp": now + ttl}, secret, algorithm="HS256")


class TokenHandler(BaseHTTPRequestHandler):
    """
    C{POST /token}, and the CORS preflight for it.
    """

    server_version = "demo-auth-backend"
    # Keep-alive: every answer has a Content-Length.
    protocol_version = "HTTP/1.1"
    secret = None
    origins = ()
    ttl = 600

    def _cors(self):
        origin = self.headers.get("Origin")
        if origin is not None and origin in self.origins:
            self.send_header("Access-Control-Allow-Origin", origin)
            self.send_header("Access-Control-Allow-Methods", "POST")
            self.send_header("Access-Control-Allow-Headers", "Content-Type")
            self.send_header("Vary", "Origin")

    def _answer(self, status, document):
        body = json.dumps(document).encode()
        self.send_response(status)
        self._cors()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def do_OPTIONS(self):
        self.send_response(204)
        self._cors()
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self):
        if self.path != "/token":
            self._answer(404, {"error": "POST /token"})
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= 4096:
            self.close_connection = True
            self._answer(413, {"error": "a JSON body of at most 4096 bytes"})
            return
        try:
            nick = json.loads(self.rfile.read(length) or b"{}").get("nick")
        except (ValueError, AttributeError):
            nick = None
        if not isinstance(nick, str) or not NICK.fullmatch(nick):
            self._answer(400, {"error": "a nick of 1 to 32 letters, digits, '-' or '_'"})
            return
        # Here a real backend checks who is asking (its session, a password).
        token = issueToken(self.secret, nick, self.ttl)
        self._answer(200, {"token": token, "user": nick, "expires": jwt.decode(
            token, options={"verify_signature": False})["exp"]})

    def log_message(self, format, *args):
        # One line per request: the method, path and status; never a token.
        sys.stdout.write("%s %s\n" % (self.address_string(), format % args))
        sys.stdout.flush()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--interface", default="127.0.0.1")
    parser.add_argument(
        "--origin", action="append", default=[],
        help="a page origin allowed to ask for tokens (the node's: http://127.0.0.1:8081); repeatable",
    )
    parser.add_argument("--ttl", type=int, default=600, help="seconds a token is valid (default 600)")
    args = parser.parse_args(argv)
    secret = os.environ.get(SECRET_VARIABLE)
    if not secret:
        parser.error(f"set {SECRET_VARIABLE} to the secret the node verifies tokens with")
    handler = type("Handler", (TokenHandler,), {
        "secret": secret, "origins": tuple(o.rstrip("/") for o in args.origin or
                                           ["http://127.0.0.1:8081", "http://localhost:8081"]),
        "ttl": args.ttl,
    })
    server = ThreadingHTTPServer((args.interface, args.port), handler)
    print(f"demo auth backend on http://{args.interface}:{args.port}/token "
          f"for pages from {', '.join(handler.origins)}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
